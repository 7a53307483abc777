"""Where a train step's time goes: `python benchmarks/run.py` -> benchmarks/results.json + README.md.

Measured in one run, side by side (this machine is shared and noisy: compare
ratios, not absolute times); `--only a,b` re-measures some sections into the
existing results.json:
  overhead_ratio   the step's device program / the network's own work (student fwd+bwd + target fwd, jitted alone)
  while_loops      data-dependent `while` ops in the programs the step dispatches to the mesh, per placement
  hungarian_iterations  loop iterations of one exact matching, per-device batch 16..256, 4096-d points (counted)
  host_pairing     noise + exact OT on the host at per-device batch 128, 1 and k threads
  host_pairing_headroom  host pairing rate / what one 8xH100 or 4xTPU v4 host consumes (a projection)
  ot_seconds       the OT coupling against the per-device batch (16..256, 4096-d points), per solver
  ot_fraction      the paper step: the device placement's OT program / the whole step, per-device batch 128
  vs_pytorch       our step against a PyTorch step of the same UNet, loss and optimizer, per XLA flag set
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
sys.path.insert(0, os.path.join(ROOT, 'benchmarks'))

from configs import celebahq256, default  # noqa: E402
from lct_jax import coupling, hlo, parallel  # noqa: E402
from lct_jax.builders import build_model, build_objective  # noqa: E402
from lct_jax.models.unet import unet_layout  # noqa: E402
from lct_jax.objective import slct_loss  # noqa: E402
from lct_jax.train import loop  # noqa: E402
from lct_jax.train.state import lr_schedule, make_optimizer  # noqa: E402
import pairing  # noqa: E402  (benchmarks/pairing.py)
from report import write_markdown  # noqa: E402  (benchmarks/report.py)
from lct_jax.train.step import make_train_step  # noqa: E402


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
    """What the loop dispatches to the device for one step, on a carried state; returns the loss.

    programs: {'update': ...} (host placement: `batch` is a PairedBatch) or {'pair_noise': ...,
    'update': ...} (device placement: `batch` is x). Takes the programs apart so they can be
    AOT-compiled ones.
    """

    def __init__(self, programs, state, batch):
        self.programs, self.state, self.batch = programs, state, batch

    def __call__(self):
        if 'pair_noise' in self.programs:
            z, ratio = self.programs['pair_noise'](self.state.step, self.batch)
            args = (self.batch, z, ratio)
        else:
            args = tuple(self.batch)
        self.state, metrics = self.programs['update'](self.state, *args)
        return metrics['loss']


def paired_batch(config, mesh, x, step=0):
    """x with its noise drawn and OT-paired on the host, as the input pipeline hands it to the step."""
    pairer = loop.make_host_pairer(config, mesh)
    try:
        x = np.asarray(x)
        return loop.device_batch((x, *pairer(step, x)), mesh)
    finally:
        pairer.close()


def host_pairing_seconds(config, mesh, x, repeats=5):
    """Median seconds of the host's noise + OT pairing of one global batch (this process's rows)."""
    pairer = loop.make_host_pairer(config, mesh)
    x = np.asarray(x)
    try:
        pairer(0, x)
        times = []
        for step in range(1, repeats + 1):
            t0 = time.perf_counter()
            pairer(step, x)
            times.append(time.perf_counter() - t0)
        return float(np.median(times))
    finally:
        pairer.close()


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
    programs = {name: lowered.compile() for name, lowered in step.lower(state, batch).items()}
    compile_s = time.perf_counter() - t0
    xla_flops = sum(float(c.cost_analysis().get('flops', float('nan'))) for c in programs.values())
    z = jax.random.normal(jax.random.key(2), shape)

    @jax.jit
    def network_work(params, x, z, step):  # what the step cannot avoid: student fwd+bwd, target fwd
        return jax.value_and_grad(lambda p: slct_loss(p, model.apply, x, z, jax.random.key(3), step, obj)[0])(params)

    # The step donates its state: time the network on a copy of the parameters.
    params = jax.tree_util.tree_map(jnp.copy, state.params)
    run_step = StepRunner(programs, state, paired_batch(config, mesh, batch))
    step_index = jnp.int32(5)
    t = timeit_side_by_side({'step': run_step,
                             'network': lambda: network_work(params, batch, z, step_index)})
    step_s, net_s = t['step'], t['network']
    host_pair_s = host_pairing_seconds(config, mesh, batch)
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
            'overhead_ratio': step_s / net_s, 'optimizer_ema_seconds': opt_s, 'host_pairing_seconds': host_pair_s,
            'data_dependent_while_loops': sum(hlo.count_data_dependent_while_loops(c) for c in programs.values()),
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
    """The paper's own step at `run_batch` (its update program, host placement), against the device
    placement's pair_noise program and the host's pairing at `per_device_batch`.

    All measured (one timed step after a warm-up: a paper step takes minutes on a CPU). When
    run_batch < per_device_batch (the step at 128 needs more memory than this machine has),
    the step time is scaled linearly in the batch, and labelled so.
    """
    def build(b, placement):
        config = _paper_config(b * mesh.devices.size)
        with config.unlocked():
            config.coupling.placement = placement
        _, _, state, step = loop.build_training(config, mesh)
        return config, state, step, random_batch((config.batch_size, 32, 32, 4), mesh)

    config, state, step, batch = build(per_device_batch, 'device')
    pair = step.lower(state, batch)['pair_noise'].compile()
    pair_s = timeit(lambda b: pair(state.step, b)[0], batch, repeats=5)
    host_s = host_pairing_seconds(config, mesh, batch)
    del state, step
    config, state, step, batch = build(run_batch, 'host')
    t0 = time.perf_counter()
    update = step.lower(state, batch)['update'].compile()
    compile_s = time.perf_counter() - t0
    run_s = timeit(StepRunner({'update': update}, state, paired_batch(config, mesh, batch)), repeats=1)
    step_s = run_s * per_device_batch / run_batch
    return {'per_device_batch': per_device_batch, 'device_pair_noise_seconds': pair_s,
            'host_pairing_seconds': host_s, 'measured_batch': run_batch,
            'measured_step_seconds': run_s, 'update_compile_seconds': compile_s,
            'update_data_dependent_while_loops': hlo.count_data_dependent_while_loops(update),
            'step_seconds': step_s, 'step_extrapolated': run_batch != per_device_batch,
            'ot_fraction': pair_s / step_s, 'ot_fraction_host_placement': 0.0}


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
    batch = paired_batch(config, mesh, random_batch((config.batch_size, 8, 8, 1), mesh))
    run_step = StepRunner({'update': step.update}, state, batch)

    def block_of_steps():
        for _ in range(log_every - 1):
            run_step()
        return run_step()

    step_s = timeit(block_of_steps, repeats=len(rows) - 1) / log_every
    return {'steps': steps, 'loop_seconds_per_step': loop_s, 'step_seconds': step_s,
            'loop_over_step': loop_s / step_s}


def compiles_per_run(mesh):
    config = default.get_config('smoke')
    with config.unlocked():
        config.total_steps = 14       # stage length 2: crosses all 5 stages of s1 = 160
    _, _, state, step = loop.build_training(config, mesh)
    batch = paired_batch(config, mesh, random_batch((16, 8, 8, 1), mesh))
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
        step = make_train_step(model, obj, optimizer, lr_schedule(opt_cfg), loop.step_config(config), mesh)
        batch = jax.ShapeDtypeStruct((config.batch_size, 32, 32, 4), jnp.float32,
                                     sharding=parallel.batch_sharding(mesh))
        t0 = time.perf_counter()
        mem = step.lower(abstract, batch)['update'].compile().memory_analysis()
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


def _input_pipelines(r, mesh, quick):
    out = {}
    paper_step_s = r['ot_fraction']['step_seconds'] if 'ot_fraction' in r else float('nan')
    for name, cfg, shape in (('default', default.get_config(), (8, 8, 1)),
                             ('paper', celebahq256.get_config(), (32, 32, 4))):
        eps = input_pipeline(shape, cfg.batch_size)
        consumed = cfg.batch_size / (r['default']['step_seconds'] if name == 'default' else paper_step_s)
        out[f'input_pipeline_{name}'] = {'reader_examples_per_s': eps, 'step_consumes_examples_per_s': consumed,
                                         'headroom': eps / consumed}
    return out


def _headroom(r, mesh, quick):
    config = celebahq256.get_config()
    per_example = 4 * analytic_forward_flops(config, 1)
    measured = r['host_pairing']
    most = max(v['threads'] for k, v in measured.items() if k.endswith('_threads'))
    per_core = measured[f'{most}_threads']['examples_per_s'] / min(most, os.cpu_count() or 1)
    return {'host_pairing_headroom': pairing.headroom(per_example, per_core)}


def _vs_pytorch(r, mesh, quick):
    """One subprocess per XLA flag set (XLA reads its flags once per process)."""
    import subprocess
    flag_sets = {'default': ''} if quick else VS_PYTORCH_FLAG_SETS
    out = {}
    for name, flags in flag_sets.items():
        env = dict(os.environ, XLA_FLAGS=flags, JAX_PLATFORMS='cpu')
        threads = ['--threads', '1'] if 'intra_op_parallelism_threads=1' in flags else []
        proc = subprocess.run([sys.executable, os.path.join(ROOT, 'benchmarks', 'vs_pytorch.py'), *threads],
                              env=env, capture_output=True, text=True, timeout=1800)
        lines = [line for line in proc.stdout.splitlines() if line.startswith('{')]
        out[name] = json.loads(lines[-1]) if proc.returncode == 0 and lines else \
            {'xla_flags': flags, 'error': (proc.stderr or proc.stdout)[-600:]}
        print('vs_pytorch', name, out[name], flush=True)
    return {'vs_pytorch': out}


# XLA CPU options tried against PyTorch (see the notes of benchmarks/README.md).
VS_PYTORCH_FLAG_SETS = {
    'default': '',
    'one_thread_each': '--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1',  # torch too
    'onednn': '--xla_cpu_use_onednn=true',
    'xnnpack': '--xla_cpu_use_xnnpack=true',
}

# name -> (function of (results so far, mesh, quick) -> dict merged into the results, skipped by --quick)
SECTIONS = {
    'matmul': (lambda r, mesh, q: {'matmul_peak_flops_per_s': matmul_peak()}, False),
    'default': (lambda r, mesh, q: {'default': step_breakdown(default.get_config(), mesh)}, False),
    'reduced_paper': (lambda r, mesh, q: {'reduced_paper': step_breakdown(reduced_paper_config(8), mesh)}, False),
    'while_loops': (lambda r, mesh, q: {'device_program_while_loops':
                                        pairing.device_program_while_loops(default.get_config(), mesh)}, False),
    'hungarian_iterations': (lambda r, mesh, q: {'hungarian_iterations': pairing.hungarian_iterations()}, False),
    'host_pairing': (lambda r, mesh, q: {'host_pairing': pairing.host_pairing(threads=(1, os.cpu_count() or 1))},
                     False),
    'headroom': (_headroom, False),
    'ot_seconds': (lambda r, mesh, q: {'ot_seconds': ot_times()}, False),
    # The paper step at per-device batch 128 needs about 25 GB with its temporaries: on a CPU with less,
    # its update is run at 32 and scaled linearly (labelled so); the pairing runs at 128.
    'ot_fraction': (lambda r, mesh, q: {'ot_fraction': paper_step(
        mesh, 128, 128 if jax.default_backend() != 'cpu' else 32)}, True),
    'compiles': (lambda r, mesh, q: {'compiles': compiles_per_run(mesh)}, False),
    'loop': (lambda r, mesh, q: {'loop': loop_vs_step(mesh)}, False),
    'remat_cpu': (lambda r, mesh, q: {'remat_cpu': remat_on_cpu()}, False),
    # compiles the full paper step three times: about 5 minutes on 2 CPU cores
    'peak_memory_paper': (lambda r, mesh, q: {'peak_memory_paper': peak_memory(mesh)}, True),
    'input_pipeline': (_input_pipelines, False),
    'vs_pytorch': (_vs_pytorch, False),
}


def main():
    mesh = parallel.make_mesh()
    out = os.path.join(ROOT, 'benchmarks', 'results.json')
    quick = '--quick' in sys.argv
    only = None
    if '--only' in sys.argv:  # re-measure some sections into the existing results.json
        only = sys.argv[sys.argv.index('--only') + 1].split(',')
        unknown = set(only) - set(SECTIONS)
        if unknown:
            raise SystemExit(f'unknown sections {sorted(unknown)}; valid: {list(SECTIONS)}')
    results = json.load(open(out)) if only and os.path.exists(out) else {}
    results['machine'] = {'platform': platform.platform(), 'processor': platform.processor(),
                          'cpus': os.cpu_count(), 'jax': jax.__version__, 'devices': jax.device_count(),
                          'backend': jax.default_backend()}
    for name, (fn, slow) in SECTIONS.items():
        if (only and name not in only) or (quick and slow):
            continue
        t0 = time.perf_counter()
        results.update(fn(results, mesh, quick))
        print(f'[{name}: {time.perf_counter() - t0:.0f} s]', flush=True)
        json.dump(results, open(out, 'w'), indent=1)   # a partial run keeps what it measured
    for k in ('default', 'reduced_paper'):
        if k in results and 'matmul_peak_flops_per_s' in results:
            results[k]['mfu_cpu'] = results[k]['achieved_flops_per_s'] / results['matmul_peak_flops_per_s']
    json.dump(results, open(out, 'w'), indent=1)
    write_markdown(results, os.path.join(ROOT, 'benchmarks', 'README.md'))
    print(json.dumps(results, indent=1))


def _paper_config(batch):
    c = celebahq256.get_config()
    with c.unlocked():
        c.batch_size = batch
    return c


if __name__ == '__main__':
    main()
