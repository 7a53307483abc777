"""Parts 1, 2, 3, 7, 8: the update step (float32 / bfloat16 / remat, MFU), its memory, its compile
time cold and from the persistent cache, the DiT-B/2 and FSDP paths, and numerics against the CPU."""
from __future__ import annotations

import gc
import json
import os
import time

import jax
import numpy as np
import optax
from common import (  # benchmarks/common.py
    StepRunner,
    analytic_forward_flops,
    paired_batch,
    random_batch,
)

from configs import celebahq256
from device_check.basics import (
    Budget,
    Sizes,
    build_step,
    device_memory,
    flops_of,
    median_seconds,
    memory_of,
    peak_of,
    random_params,
    shrink_unet,
)
from lct_jax.builders import build_model, build_objective
from lct_jax.objectives.base import Batch

HERE = os.path.dirname(os.path.abspath(__file__))
CPU_REFERENCE = os.path.join(HERE, 'cpu_reference.json')
FSDP_TABLE = os.path.join(os.path.dirname(HERE), 'fsdp_memory.json')



def paper_config(sizes: Sizes, per_device_batch: int, dtype='float32', remat=False, variant=''):
    """The paper's recipe (celebahq256.py), at the check's size, with the step's speed options."""
    config = celebahq256.get_config(variant)
    if sizes.smoke:
        shrink_unet(config)
    with config.unlocked():
        config.batch_size = per_device_batch * jax.device_count()
        config.model.dtype, config.model.remat = dtype, remat
    return config


def measure_update(config, mesh, sizes: Sizes, steps: int | None = None, compile_cache: dict | None = None):
    """Compile the update program (host placement) and time it on a carried state: median step,
    XLA's FLOPs and memory estimate, the device's allocator peak. compile_cache: filled with the
    same program's compile from the persistent cache (part 3)."""
    t0 = time.perf_counter()
    state, step = build_step(config, mesh)
    init_s = time.perf_counter() - t0
    m = config.model
    x = random_batch((config.batch_size, m.img_resolution, m.img_resolution, m.in_channels), mesh)
    t0 = time.perf_counter()
    lowered = step.lower(state, x)['update']
    lower_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    compiled = lowered.compile()
    compile_s = time.perf_counter() - t0
    if compile_cache is not None:   # the same program again, from the persistent compilation cache
        jax.clear_caches()
        t0 = time.perf_counter()
        again = step.lower(state, x)['update']
        relower_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        again.compile()
        compile_cache.update(cold_lower_seconds=lower_s, cold_compile_seconds=compile_s,
                             cached_lower_seconds=relower_s, cached_compile_seconds=time.perf_counter() - t0)
    flops = flops_of(compiled)
    runner = StepRunner({'update': compiled}, state, paired_batch(config, mesh, x))
    median, times = median_seconds(runner, steps or sizes.timed_steps, sizes.warmup)
    loss = float(runner())
    out = {'global_batch': config.batch_size, 'per_device_batch': config.batch_size // jax.device_count(),
           'dtype': m.dtype, 'remat': bool(m.remat), 'init_seconds': init_s, 'lower_seconds': lower_s,
           'compile_seconds': compile_s, 'step_seconds_median': median, 'step_seconds_min': min(times),
           'step_seconds_max': max(times), 'steps_timed': len(times),
           'examples_per_s': config.batch_size / median, 'xla_flops': flops,
           'achieved_flops_per_s': flops / median, 'loss_after': loss, 'loss_finite': bool(np.isfinite(loss)),
           'xla_memory': memory_of(compiled), 'device_memory_after': device_memory()}
    if m.get('kind', 'unet') == 'unet':
        analytic = 4 * analytic_forward_flops(config, config.batch_size)
        out.update(analytic_flops=analytic, xla_over_analytic=flops / analytic)
    peaks = peak_of(jax.devices()[0].device_kind)
    if peaks:
        out['mfu_vs_bf16_peak'] = flops / median / peaks['bfloat16'] / jax.device_count()
        if 'float32' in peaks:
            out['mfu_vs_fp32_peak'] = flops / median / peaks['float32'] / jax.device_count()
    del runner, state, compiled, lowered
    gc.collect()
    return out


def update_step(mesh, sizes: Sizes, budget: Budget, ctx: dict) -> dict:
    """Part 1 (and the measurements parts 2 and 3 report): each variant until the budget ends."""
    out = {}
    for i, (per_device, dtype, remat) in enumerate(sizes.step_variants):
        name = f'b{per_device}_{dtype}' + ('_remat' if remat else '')
        if budget.left() <= 0:
            out[name] = {'skipped': f'time budget ({budget.seconds:.0f} s) spent'}
            continue
        print(f'  update step {name}', flush=True)
        try:
            cache = {} if i == 0 else None
            out[name] = measure_update(paper_config(sizes, per_device, dtype, remat), mesh, sizes,
                                       compile_cache=cache)
            if cache:
                ctx['compile_cache'] = dict(cache, program=name)
        except Exception as e:  # noqa: BLE001 - one variant's failure (e.g. out of memory) keeps the others
            out[name] = {'error': f'{type(e).__name__}: {e}'[:1500]}
        print(f'    {json.dumps({k: v for k, v in out[name].items() if not isinstance(v, dict)})[:400]}', flush=True)
    ctx['update_step'] = out
    measured = [v for v in out.values() if 'step_seconds_median' in v]
    if not measured:
        raise RuntimeError(f'no variant ran: {out}')
    return {'variants': out}


def memory(mesh, sizes: Sizes, budget: Budget, ctx: dict) -> dict:
    """Part 2: the device's measured peak beside XLA's estimate (part 1's programs) and the CPU table."""
    variants = ctx.get('update_step') or {}
    cpu_table = {}
    if os.path.exists(FSDP_TABLE):
        entries = json.load(open(FSDP_TABLE))['entries']
        cpu_table = {k: v['peak_estimate_gb'] for k, v in entries.items() if k.startswith('unet/replicated/')}
    rows = {}
    for name, v in variants.items():
        if 'xla_memory' not in v:
            continue
        rows[name] = {'xla_estimate_gb': v['xla_memory'].get('estimate_gb'),
                      'device_peak_gb_so_far': v['device_memory_after'].get('peak_gb_in_use'),
                      'device_in_use_gb_after': v['device_memory_after'].get('gb_in_use'),
                      'cpu_table_estimate_gb': cpu_table.get(f"unet/replicated/{v['per_device_batch']}/8")}
    if not rows:
        raise RuntimeError('part 1 measured no variant')
    return {'rows': rows, 'note': 'device_peak_gb_so_far is the allocator\'s peak since the process started '
                                  '(it cannot be reset): a variant run after a larger one shows the larger; '
                                  'cpu_table_estimate_gb: benchmarks/fsdp_memory.json (XLA CPU, 8 fake devices, '
                                  'replicated, float32, no remat)'}


def compile_cache(mesh, sizes: Sizes, budget: Budget, ctx: dict) -> dict:
    """Part 3: the first variant's compile, cold and from the persistent compilation cache."""
    if 'compile_cache' not in ctx:  # part 1 did not get to measure it: do it here, on the small batch
        cache = {}
        measure_update(paper_config(sizes, sizes.step_batches[-1]), mesh, sizes, steps=1, compile_cache=cache)
        ctx['compile_cache'] = dict(cache, program=f'b{sizes.step_batches[-1]}_float32')
    c = ctx['compile_cache']
    return dict(c, cache_speedup=c['cold_compile_seconds'] / max(c['cached_compile_seconds'], 1e-9),
                cache_dir=getattr(jax.config, 'jax_compilation_cache_dir', None))


def dit_and_fsdp(mesh, sizes: Sizes, budget: Budget, ctx: dict) -> dict:
    """Part 7: a DiT-B/2 step at its recipe's batch, then (time allowing) the FSDP path on this mesh."""
    config = celebahq256.get_config('dit_b2')
    if sizes.smoke:
        shrink_unet(config)
        with config.unlocked():
            config.batch_size = sizes.step_batches[-1] * jax.device_count()
    out = {'dit_b2': measure_update(config, mesh, sizes, steps=max(3, sizes.timed_steps // 2))}
    if budget.left() > 0:
        with config.unlocked():
            config.mesh.fsdp = True
        out['dit_b2_fsdp'] = measure_update(config, mesh, sizes, steps=3)
    else:
        out['dit_b2_fsdp'] = {'skipped': 'time budget spent'}
    return out


JVP_OBJECTIVES = ('meanflow', 'sct', 'imf')


def meanflow_step(mesh, sizes: Sizes, budget: Budget, ctx: dict) -> dict:
    """Part 10: the JVP-based updates (MeanFlow, sCT, improved MeanFlow; float32 inside) on the paper's
    UNet and per-device batch 32, against part 1's sLCT update of the same network and batch
    (benchmarks/objective_step.py on the device). Each keeps the sLCT config's norms here, so only the
    objective (and its heads) differs. MeanFlow's fields keep their names; sCT's and iMF's are
    <objective>, <objective>_time_ratio, <objective>_xla_memory_ratio."""
    slct_runs = ctx.get('update_step') or {}
    out = {}
    per_device = sizes.step_batches[-1]
    # The smoke run (the CPU's check that every part runs) times float32 only: bf16 has no fast path
    # on XLA's CPU backend, so its timing there says nothing (and cost the suite's slowest test the
    # most); the device run times both.
    for dtype in ('float32',) if sizes.smoke else ('float32', 'bfloat16'):
        name = f'b{per_device}_{dtype}'
        if budget.left() <= 0:
            out[name] = {'skipped': f'time budget ({budget.seconds:.0f} s) spent'}
            continue
        print(f'  meanflow update step {name}', flush=True)
        slct_config = paper_config(sizes, per_device, dtype)
        try:
            slct = slct_runs.get(name)
            if not slct or 'step_seconds_median' not in slct:   # part 1 did not get to it
                slct = measure_update(slct_config, mesh, sizes, steps=max(3, sizes.timed_steps // 2))
            out[name] = {'slct_step_seconds_median': slct['step_seconds_median']}
            for objective in JVP_OBJECTIVES:
                if budget.left() <= 0:
                    out[name][objective] = {'skipped': 'time budget spent'}
                    continue
                config = paper_config(sizes, per_device, dtype, variant=objective)
                with config.unlocked():
                    config.model.update(block_norm=slct_config.model.block_norm, out_norm=slct_config.model.out_norm)
                run = measure_update(config, mesh, sizes, steps=max(3, sizes.timed_steps // 2))
                prefix = '' if objective == 'meanflow' else f'{objective}_'
                out[name].update({objective: run,
                                  f'{prefix}time_ratio': run['step_seconds_median'] / slct['step_seconds_median'],
                                  f'{prefix}xla_memory_ratio': (run['xla_memory'].get('estimate_gb') or 0)
                                  / max(slct['xla_memory'].get('estimate_gb') or 0, 1e-12)})
        except Exception as e:  # noqa: BLE001 - one dtype's failure keeps the other
            out[name] = {'error': f'{type(e).__name__}: {e}'[:1500]}
        print(f'    {json.dumps({k: v for k, v in out[name].items() if not isinstance(v, dict)})[:400]}', flush=True)
    if not any('time_ratio' in v for v in out.values()):
        raise RuntimeError(f'no MeanFlow step ran: {out}')
    return {'variants': out}


# ----- part 8: numerics against this CPU's values --------------------------------------------------

def numerics_config():
    """A small, fixed problem, the same in the smoke and the full run (and in the committed values):
    the paper's recipe and blocks, a toy UNet (one 64-channel level with attention, 4x4x4), batch 8."""
    config = celebahq256.get_config()
    with config.unlocked():
        config.model.update(img_resolution=4, model_channels=64, channel_mult=(1,), num_blocks=1,
                            attn_resolutions=(4,))
    return config


def loss_and_grad_norm(precision: str | None) -> dict:
    """Loss and gradient norm of one fixed batch and fixed params (both drawn by numpy), float32."""
    config = numerics_config()
    model, obj = build_model(config), build_objective(config)
    m = config.model
    rng = np.random.default_rng(0)
    shape = (8, m.img_resolution, m.img_resolution, m.in_channels)
    x = (0.5 * rng.standard_normal(shape)).astype(np.float32)
    z = rng.standard_normal(shape).astype(np.float32)

    def run():
        params = random_params(model.init, jax.random.key(0), x[:1], np.zeros((1,), np.float32))['params']
        batch = Batch(x, z, np.ones((shape[0],), np.float32))
        grad_fn = jax.jit(jax.value_and_grad(lambda p: obj.loss(p, model, batch, jax.random.key(3), 100)[0]))
        loss, grads = grad_fn(params)
        return {'loss': float(loss), 'grad_norm': float(optax.global_norm(grads)),
                'param_norm': float(optax.global_norm(params))}

    if precision is None:
        return run()
    with jax.default_matmul_precision(precision):
        return run()


def write_cpu_reference(path: str = CPU_REFERENCE) -> dict:
    """The reference values, computed on this (CPU) backend; committed beside the check."""
    ref = {'backend': jax.default_backend(), 'jax': jax.__version__, 'values': loss_and_grad_norm('highest'),
           'problem': 'benchmarks/device_check/steps.py:loss_and_grad_norm (toy paper UNet 4x4x4, batch 8, step 100)'}
    with open(path, 'w') as f:
        json.dump(ref, f, indent=1)
    return ref


def numerics(mesh, sizes: Sizes, budget: Budget, ctx: dict) -> dict:
    """Part 8: relative difference of loss and gradient norm to the committed CPU values."""
    ref = json.load(open(CPU_REFERENCE))
    out = {'cpu_reference': ref}
    # On a CPU float32 is float32 whatever the precision asked; elsewhere the default may be tf32 / bf16 passes.
    precisions = (('highest', 'highest'),) + ((('default', None),) if jax.default_backend() != 'cpu' else ())
    for label, precision in precisions:
        got = loss_and_grad_norm(precision)
        out[label] = {'values': got, 'relative_difference': {
            k: abs(got[k] - ref['values'][k]) / max(abs(ref['values'][k]), 1e-30) for k in got}}
    worst = max(out['highest']['relative_difference'].values())
    out['float32_highest_worst_relative_difference'] = worst
    out['float32_agrees'] = bool(worst < 1e-4)
    return out
