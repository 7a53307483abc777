"""Where a train step's time goes: `python benchmarks/run.py` -> benchmarks/results.json + README.md.

Measured in one run, side by side (this machine is shared and noisy: compare
ratios, not absolute times):
  overhead_ratio   full train step / the network's own work (student fwd+bwd + target fwd, jitted alone)
  ot_seconds       the OT coupling against the per-device batch (16..256, 4096-d points), per solver
  ot_fraction      the paper step's OT pairing program / the whole paper step, per-device batch 128
  optimizer_ema    RAdam update + EMA updates alone
  flops            XLA's cost analysis of the step against the analytic FLOPs of the network's work
  mfu_cpu          analytic FLOPs / step time / measured f32 matmul peak of this CPU
  compiles_per_run traces of the step over a run crossing all curriculum stages, and its compile time
  peak_memory      XLA's memory analysis of the paper step at per-device batch 32 / 64 / 128 (compiled, not run)
  remat_cpu        whether this backend's compiler keeps jax.checkpoint's recomputation (XLA CPU does not)
  input_pipeline   reader examples/s against what a train step consumes per second
"""
from __future__ import annotations

import json
import os
import platform
import sys
import tempfile
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from configs import celebahq256, default  # noqa: E402
from lct_jax import coupling, parallel  # noqa: E402
from lct_jax.builders import build_model, build_objective  # noqa: E402
from lct_jax.models.unet import unet_layout  # noqa: E402
from lct_jax.objective import slct_loss  # noqa: E402
from lct_jax.train import loop  # noqa: E402
from lct_jax.train.state import lr_schedule, make_optimizer  # noqa: E402
from lct_jax.train.step import StepConfig, make_train_step  # noqa: E402


def timeit(fn, *args, repeats=5, warmup=1):
    """Median seconds of fn(*args) (blocked until ready), after warm-up calls."""
    for _ in range(warmup):
        jax.block_until_ready(fn(*args))
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def random_batch(shape, mesh):
    """A fixed batch shaped like normalised latents (std 0.5), sharded over the mesh."""
    return jax.device_put(0.5 * jax.random.normal(jax.random.key(1), shape), parallel.batch_sharding(mesh))


class StepRunner:
    """pair_noise then update on a carried state (what CompiledStep.__call__ does); returns the loss.

    Takes the programs separately so they can be AOT-compiled ones.
    """

    def __init__(self, pair, update, state):
        self.pair, self.update, self.state = pair, update, state

    def __call__(self, batch):
        z, ratio = self.pair(self.state.step, batch)
        self.state, metrics = self.update(self.state, batch, z, ratio)
        return metrics['loss']


def timeit_side_by_side(fns, repeats=7, warmup=1):
    """Median seconds of each zero-argument fn, their calls interleaved so that both see the same load."""
    for _ in range(warmup):
        for fn in fns.values():
            jax.block_until_ready(fn())
    times = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            jax.block_until_ready(fn())
            times[name].append(time.perf_counter() - t0)
    return {name: float(np.median(t)) for name, t in times.items()}


def matmul_peak(n=2048):
    a = jnp.ones((n, n), jnp.float32)
    f = jax.jit(lambda x: x @ x)
    return 2 * n**3 / timeit(f, a, repeats=10)


def reduced_paper_config(batch):
    c = celebahq256.get_config()
    with c.unlocked():
        c.model.model_channels = 32     # the paper's UNet, fewer channels: same depth and attention
        c.batch_size = batch
    return c


def analytic_forward_flops(config, batch):
    """Multiply-adds x 2 of the UNet forward: convolutions, dense layers, attention."""
    m = config.model
    conv_ch, enc, dec = unet_layout(m.img_resolution, m.in_channels, m.model_channels, tuple(m.channel_mult),
                                    m.num_blocks, tuple(m.attn_resolutions))
    r = m.img_resolution
    emb = m.model_channels * 4
    f = 2 * r * r * m.in_channels * conv_ch * 9 + 2 * (m.model_channels * emb + emb * emb)
    for s in enc + dec:
        hw = s.resolution ** 2
        f += 2 * hw * s.in_channels * s.out_channels * 9 + 2 * hw * s.out_channels**2 * 9
        f += 2 * emb * 2 * s.out_channels
        if s.in_channels != s.out_channels:
            f += 2 * hw * s.in_channels * s.out_channels
        if s.attention:
            c = s.out_channels
            f += 2 * hw * c * 3 * c + 2 * 2 * hw * hw * c + 2 * hw * c * c
    f += 2 * r * r * m.model_channels * m.out_channels * 9
    return batch * f


def step_breakdown(config, mesh):
    """Full step vs the network's own work, optimizer+EMA, and XLA's FLOP count."""
    model, obj, state, step = loop.build_training(config, mesh)
    optimizer = make_optimizer(loop._opt_cfg(config))
    m = config.model
    shape = (config.batch_size, m.img_resolution, m.img_resolution, m.in_channels)
    batch = random_batch(shape, mesh)
    t0 = time.perf_counter()
    pair, update = (lowered.compile() for lowered in step.lower(state, batch))
    compile_s = time.perf_counter() - t0
    xla_flops = sum(float(c.cost_analysis().get('flops', float('nan'))) for c in (pair, update))
    z = jax.random.normal(jax.random.key(2), shape)

    @jax.jit
    def network_work(params, x, z, step):  # what the step cannot avoid: student fwd+bwd, target fwd
        return jax.value_and_grad(lambda p: slct_loss(p, model.apply, x, z, jax.random.key(3), step, obj)[0])(params)

    # The step donates its state: time the network on a copy of the parameters.
    params = jax.tree_util.tree_map(jnp.copy, state.params)
    run_step = StepRunner(pair, update, state)
    step_index = jnp.int32(5)
    t = timeit_side_by_side({'step': lambda: run_step(batch),
                             'network': lambda: network_work(params, batch, z, step_index)})
    step_s, net_s = t['step'], t['network']
    pair_s = timeit(lambda b: pair(run_step.state.step, b)[0], batch)
    grads = jax.tree_util.tree_map(jnp.ones_like, params)

    @jax.jit
    def opt_and_ema(opt_state, params, ema, grads):
        updates, opt_state = optimizer.update(grads, opt_state, params)
        new = optax.apply_updates(params, updates)
        ema = {k: jax.tree_util.tree_map(lambda e, p: 0.9999 * e + 1e-4 * p, v, new) for k, v in ema.items()}
        return opt_state, new, ema

    opt_s = timeit(opt_and_ema, run_step.state.opt_state, params, run_step.state.ema, grads)
    analytic = 4 * analytic_forward_flops(config, config.batch_size)  # fwd + 2x bwd + target fwd
    return {'batch': config.batch_size, 'step_seconds': step_s, 'network_seconds': net_s,
            'overhead_ratio': step_s / net_s, 'optimizer_ema_seconds': opt_s, 'pair_noise_seconds': pair_s,
            'compile_seconds': compile_s,
            'xla_flops': xla_flops, 'analytic_network_flops': analytic,
            'xla_over_analytic': xla_flops / analytic, 'achieved_flops_per_s': analytic / step_s}


def ot_times(batches=(16, 32, 64, 128, 256), dim=(32, 32, 4)):
    out = {}
    for method in ('exact', 'sinkhorn'):
        f = jax.jit(lambda x, z, m=method: coupling.couple(x, z, m)[0])
        for b in batches:
            x = 0.5 * jax.random.normal(jax.random.key(0), (b, *dim))
            z = jax.random.normal(jax.random.key(1), (b, *dim))
            out[f'{method}_{b}'] = timeit(f, x, z, repeats=3)
    return out


def paper_step(mesh, per_device_batch, run_batch):
    """The paper's own step: its pair_noise program at `per_device_batch`, the whole step at `run_batch`.

    Both measured (one timed call after a warm-up: a paper step takes minutes on a CPU). When
    run_batch < per_device_batch (the step at 128 needs more memory than this machine has),
    the step time is scaled linearly in the batch, and labelled so.
    """
    def build(b):
        config = _paper_config(b * mesh.devices.size)
        _, _, state, step = loop.build_training(config, mesh)
        return state, step, random_batch((config.batch_size, 32, 32, 4), mesh)

    state, step, batch = build(per_device_batch)
    pair = step.pair_noise.lower(state.step, batch).compile()
    pair_s = timeit(lambda b: pair(state.step, b)[0], batch, repeats=5)
    if run_batch != per_device_batch:
        del state, step
        state, step, batch = build(run_batch)
        pair = step.pair_noise.lower(state.step, batch).compile()
    t0 = time.perf_counter()
    update = step.lower(state, batch)[1].compile()
    compile_s = time.perf_counter() - t0
    run_s = timeit(StepRunner(pair, update, state), batch, repeats=1)
    step_s = run_s * per_device_batch / run_batch
    return {'per_device_batch': per_device_batch, 'pair_noise_seconds': pair_s, 'measured_batch': run_batch,
            'measured_step_seconds': run_s, 'update_compile_seconds': compile_s,
            'step_seconds': step_s, 'step_extrapolated': run_batch != per_device_batch,
            'ot_fraction': pair_s / step_s}


def remat_on_cpu():
    """Whether this backend keeps jax.checkpoint's recomputation: dots and temp memory of a toy MLP.

    8 blocks of 4 (4096x512 @ 512x512, tanh) layers, gradient with and without jax.checkpoint per
    block: JAX's lowering adds the recomputed dots; the compiled program shows whether XLA kept them.
    """
    def block(w, x):
        for _ in range(4):
            x = jnp.tanh(x @ w)
        return x

    def loss(ws, x, remat):
        for w in ws:
            x = (jax.checkpoint(block) if remat else block)(w, x)
        return jnp.sum(x)

    ws = [jax.ShapeDtypeStruct((512, 512), jnp.float32)] * 8
    x = jax.ShapeDtypeStruct((4096, 512), jnp.float32)
    out = {}
    for remat in (False, True):
        lowered = jax.jit(jax.grad(lambda ws, x, r=remat: loss(ws, x, r))).lower(ws, x)
        compiled = lowered.compile()
        name = 'remat' if remat else 'plain'
        out[f'dots_lowered_{name}'] = lowered.as_text().count('dot_general')
        out[f'dots_compiled_{name}'] = compiled.as_text().count(' dot(')
        out[f'temp_mb_{name}'] = compiled.memory_analysis().temp_size_in_bytes / 1e6
    return out


def loop_vs_step(mesh, steps=400, log_every=100):
    """The whole training loop (data, host logic, logging) against the compiled step alone.

    Runs `loop.train` on the default config with checkpoints and samples only at the end; the
    loop's seconds per step are the median over the log intervals after the first (which holds
    the compile). The same step is then timed alone, straight after, in blocks of `log_every`
    calls (the machine's load drifts over minutes). A ratio near 1 means nothing on the host
    (data, dispatch, logging) stalls the step.
    """
    config = default.get_config()
    with config.unlocked():
        config.total_steps, config.log_every = steps, log_every
        config.checkpoint_every = config.sample_every = steps
    workdir = tempfile.mkdtemp()
    loop.train(config, workdir, show_progress=False)
    rows = [json.loads(line) for line in open(os.path.join(workdir, 'metrics.jsonl'))]
    loop_s = float(np.median([1.0 / row['steps_per_sec'] for row in rows[1:]]))

    _, _, state, step = loop.build_training(config, mesh)
    batch = random_batch((config.batch_size, 8, 8, 1), mesh)
    run_step = StepRunner(step.pair_noise, step.update, state)

    def block_of_steps():
        for _ in range(log_every - 1):
            run_step(batch)
        return run_step(batch)

    step_s = timeit(block_of_steps, repeats=len(rows) - 1) / log_every
    return {'steps': steps, 'loop_seconds_per_step': loop_s, 'step_seconds': step_s,
            'loop_over_step': loop_s / step_s}


def compiles_per_run(mesh):
    config = default.get_config('smoke')
    with config.unlocked():
        config.total_steps = 14       # stage length 2: crosses all 5 stages of s1 = 160
    _, _, state, step = loop.build_training(config, mesh)
    batch = random_batch((16, 8, 8, 1), mesh)
    stages = set()
    for _ in range(config.total_steps):
        state, m = step(state, batch)
        stages.add(int(m['num_scales']))
    return {'steps': config.total_steps, 'stages_crossed': sorted(stages), 'compiles_per_run': step.trace_count()}


def peak_memory(mesh, batches=(32, 64, 128)):
    """XLA's memory analysis of the paper's update program (compiled, not run).

    Without remat: XLA's CPU compiler removes the recomputation (see `remat_on_cpu`), so a CPU
    memory analysis of the remat program shows no saving that an accelerator would see.
    """
    out = {}
    config = celebahq256.get_config()
    for b in batches:
        with config.unlocked():
            config.batch_size = b * mesh.devices.size
        model, obj = build_model(config), build_objective(config)
        opt_cfg = loop._opt_cfg(config)
        optimizer = make_optimizer(opt_cfg)
        abstract = jax.eval_shape(lambda: loop.make_initial_state(config, model, optimizer, mesh))
        abstract = jax.tree_util.tree_map(
            lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=parallel.replicated(mesh)), abstract)
        step = make_train_step(model, obj, optimizer, lr_schedule(opt_cfg), StepConfig(0), mesh)
        batch = jax.ShapeDtypeStruct((config.batch_size, 32, 32, 4), jnp.float32,
                                     sharding=parallel.batch_sharding(mesh))
        t0 = time.perf_counter()
        mem = step.lower(abstract, batch)[1].compile().memory_analysis()
        total = mem.argument_size_in_bytes + mem.output_size_in_bytes + mem.temp_size_in_bytes \
            - mem.alias_size_in_bytes
        key = f'per_device_batch_{b}'
        out[key] = {'batch': b, 'temp_gb': mem.temp_size_in_bytes / 1e9,
                    'arguments_gb': mem.argument_size_in_bytes / 1e9, 'peak_estimate_gb': total / 1e9,
                    'compile_seconds': time.perf_counter() - t0}
        print(key, out[key], flush=True)
    return out


def input_pipeline(shape, batch, n=4096, steps=20):
    from lct_jax.data import encode as encode_lib, latents, tfrecord
    from lct_jax.data.pipeline import InputPipeline, Normalizer
    d = tempfile.mkdtemp()
    names = [latents.shard_name(i, 2) for i in range(2)]
    rng = np.random.default_rng(0)
    for i, name in enumerate(names):
        with tfrecord.TFRecordWriter(os.path.join(d, name)) as w:
            for j in range(i * n // 2, (i + 1) * n // 2):
                w.write(tfrecord.encode_latent(rng.standard_normal(shape).astype(np.float32), j))
    encode_lib.write_stats(d, names, 1.0, shape)
    json.dump({'count': n, 'shape': list(shape), 'dtype': 'float32', 'scale_factor': 1.0, 'shards': names},
              open(os.path.join(d, latents.MANIFEST), 'w'))
    ds = latents.LatentDataset(d)
    p = InputPipeline(ds, Normalizer.from_dir(d), batch, 0, slice(0, batch))
    next(p)
    t0 = time.perf_counter()
    for _ in range(steps):
        next(p)
    p.close()
    return batch * steps / (time.perf_counter() - t0)


def main():
    mesh = parallel.make_mesh()
    out = os.path.join(ROOT, 'benchmarks', 'results.json')
    if '--only-loop' in sys.argv:  # re-measure the loop section of an existing results.json
        results = json.load(open(out))
        results['loop'] = loop_vs_step(mesh)
        json.dump(results, open(out, 'w'), indent=1)
        write_markdown(results, os.path.join(ROOT, 'benchmarks', 'README.md'))
        print(results['loop'])
        return
    results = {'machine': {'platform': platform.platform(), 'processor': platform.processor(),
                           'cpus': os.cpu_count(), 'jax': jax.__version__, 'devices': jax.device_count(),
                           'backend': jax.default_backend()}}
    results['matmul_peak_flops_per_s'] = matmul_peak()
    print('matmul peak', results['matmul_peak_flops_per_s'] / 1e9, 'GFLOP/s', flush=True)
    results['default'] = step_breakdown(default.get_config(), mesh)
    print('default', results['default'], flush=True)
    results['reduced_paper'] = step_breakdown(reduced_paper_config(8), mesh)
    print('reduced paper', results['reduced_paper'], flush=True)
    for k in ('default', 'reduced_paper'):
        results[k]['mfu_cpu'] = results[k]['achieved_flops_per_s'] / results['matmul_peak_flops_per_s']
    results['ot_seconds'] = ot_times()
    print('ot', results['ot_seconds'], flush=True)
    # The paper step at per-device batch 128 needs about 25 GB with its temporaries: on a CPU with
    # less, its update is run at 32 and scaled linearly (labelled so); its OT program runs at 128.
    quick = '--quick' in sys.argv
    if not quick:
        run_batch = 128 if jax.default_backend() != 'cpu' else 32
        results['ot_fraction'] = paper_step(mesh, 128, run_batch)
        print('paper step', results['ot_fraction'], flush=True)
    results['compiles'] = compiles_per_run(mesh)
    results['loop'] = loop_vs_step(mesh)
    print('loop', results['loop'], flush=True)
    results['remat_cpu'] = remat_on_cpu()
    if not quick:  # compiles the full paper step three times: about 5 minutes on 2 CPU cores
        results['peak_memory_paper'] = peak_memory(mesh)
    paper_step_s = results['ot_fraction']['step_seconds'] if not quick else float('nan')
    for name, cfg, shape in (('default', default.get_config(), (8, 8, 1)),
                             ('paper', celebahq256.get_config(), (32, 32, 4))):
        eps = input_pipeline(shape, cfg.batch_size)
        consumed = cfg.batch_size / (results['default']['step_seconds'] if name == 'default' else paper_step_s)
        results[f'input_pipeline_{name}'] = {'reader_examples_per_s': eps, 'step_consumes_examples_per_s': consumed,
                                             'headroom': eps / consumed}
    json.dump(results, open(out, 'w'), indent=1)
    write_markdown(results, os.path.join(ROOT, 'benchmarks', 'README.md'))
    print(json.dumps(results, indent=1))


def _paper_config(batch):
    c = celebahq256.get_config()
    with c.unlocked():
        c.batch_size = batch
    return c


def write_markdown(r, path):
    d, p = r['default'], r['reduced_paper']
    machine = r['machine']
    lines = ['# Benchmarks', '',
             'Made by `python benchmarks/run.py` (about 25 minutes on 2 idle CPU cores; `--quick` skips the',
             'full paper step and its memory analysis, about 8 minutes), which rewrites the tables of this file',
             'and `results.json`. Times are medians of repeated calls in one run; compare ratios, not absolute',
             'times (this machine is shared and noisy). No accelerator here: the CPU numbers show where time',
             'goes, not what a TPU or GPU achieves.', '',
             f"Machine: {machine['processor'] or machine['platform']}, {machine['cpus']} cores, "
             f"jax {machine['jax']} ({machine['backend']}, {machine['devices']} device); "
             f"f32 matmul peak {r['matmul_peak_flops_per_s'] / 1e9:.0f} GFLOP/s.", '',
             '## Step breakdown', '',
             '`network_seconds` is the network\'s own work jitted alone (student forward + backward, target',
             'forward); `step_seconds` the whole train step (noise + OT pairing program, then the update program:',
             'loss, gradient, RAdam, two EMAs, skip logic, metrics).', '',
             '| | default (digits, batch 64) | reduced paper UNet (32 ch, batch 8) |', '|---|---|---|']
    for key, fmt in (('step_seconds', '{:.4f}'), ('network_seconds', '{:.4f}'), ('overhead_ratio', '{:.3f}'),
                     ('pair_noise_seconds', '{:.4f}'), ('optimizer_ema_seconds', '{:.4f}'),
                     ('compile_seconds', '{:.1f}'), ('xla_over_analytic', '{:.3f}'), ('mfu_cpu', '{:.3f}')):
        lines.append(f'| {key} | {fmt.format(d[key])} | {fmt.format(p[key])} |')
    c, lp = r['compiles'], r['loop']
    lines += ['', f"compiles_per_run: {c['compiles_per_run']} over {c['steps']} steps crossing N = {c['stages_crossed']}",
              '', f"The whole training loop on the default config (`loop.train`: input pipeline, dispatch, logging) "
              f"takes {lp['loop_seconds_per_step']:.4f} s per step against {lp['step_seconds']:.4f} s for the compiled "
              f"step alone, timed straight after: loop_over_step **{lp['loop_over_step']:.3f}** (medians over "
              f"blocks of 100 steps, after the compile).",
              '', '## OT coupling', '', '| OT per-device batch | ' + ' | '.join(str(b) for b in (16, 32, 64, 128, 256)) + ' |',
              '|---|' + '---|' * 5]
    for m in ('exact', 'sinkhorn'):
        lines.append(f'| {m} (s) | ' + ' | '.join(f"{r['ot_seconds'][f'{m}_{b}']:.4f}" for b in (16, 32, 64, 128, 256)) + ' |')
    if 'ot_fraction' in r:
        o = r['ot_fraction']
        how = (f"measured at per-device batch {o['measured_batch']} ({o['measured_step_seconds']:.1f} s) and scaled "
               f"linearly to {o['per_device_batch']}" if o['step_extrapolated'] else 'measured')
        lines += ['', f"ot_fraction of the paper step (151M-parameter UNet) at per-device batch {o['per_device_batch']}: "
                  f"**{o['ot_fraction']:.5f}** = the step's pair_noise program ({o['pair_noise_seconds']:.4f} s, measured "
                  f"at {o['per_device_batch']}) / the whole step ({o['step_seconds']:.1f} s, {how})."]
    if 'peak_memory_paper' in r:
        lines += ['', '## Peak memory of the paper step', '',
                  '151M-parameter UNet, float32, RAdam + 2 EMAs: XLA\'s memory analysis of the compiled update program',
                  '(not run): arguments + outputs + temporaries - donated aliases.', '',
                  '| per-device batch | temp GB | arguments GB | peak estimate GB | fits 16 / 32 / 80 GB |',
                  '|---|---|---|---|---|']
        for v in r['peak_memory_paper'].values():
            fits = ' / '.join('yes' if v['peak_estimate_gb'] <= cap else 'no' for cap in (16, 32, 80))
            lines.append(f"| {v['batch']} | {v['temp_gb']:.2f} | {v['arguments_gb']:.2f} | "
                         f"{v['peak_estimate_gb']:.2f} | {fits} |")
    rc = r['remat_cpu']
    lines += ['', f"Remat on this backend (toy MLP, `remat_on_cpu`): JAX lowers {rc['dots_lowered_plain']} dots without "
              f"and {rc['dots_lowered_remat']} with jax.checkpoint; the compiled programs have {rc['dots_compiled_plain']} "
              f"and {rc['dots_compiled_remat']}, temp {rc['temp_mb_plain']:.0f} MB and {rc['temp_mb_remat']:.0f} MB."]
    lines += ['', '## Input pipeline', '', '| input pipeline | reader examples/s | step consumes examples/s | headroom |',
              '|---|---|---|---|']
    for k in ('default', 'paper'):
        v = r[f'input_pipeline_{k}']
        lines.append(f"| {k} | {v['reader_examples_per_s']:.0f} | {v['step_consumes_examples_per_s']:.2f} | "
                     f"{v['headroom']:.0f}x |")
    notes = ''
    if os.path.exists(path):  # keep the hand-written notes below the generated tables
        old = open(path).read()
        if '\n## Notes' in old:
            notes = old[old.index('\n## Notes'):]
    open(path, 'w').write('\n'.join(lines) + '\n' + notes)


if __name__ == '__main__':
    main()
