"""Per-device memory of the train step, replicated vs FSDP: `python benchmarks/fsdp_memory.py`.

Compiled, not run: for each backbone (DiT-B/2, DiT-XL/2, the paper's UNet, all on 32x32x4 latents,
float32, RAdam + two EMAs, the CelebA-HQ recipe), each state layout (replicated, or FSDP-sharded on
the 'data' axis: `config.mesh.fsdp`) and each per-device batch, the `update` program the step
dispatches is lowered from abstract shapes (jax.ShapeDtypeStruct with shardings: nothing is
allocated) on N fake CPU devices and compiled; XLA's memory analysis of the per-device program gives
arguments (the state's shards and the batch), outputs, temporaries and donated aliases.
peak estimate = arguments + outputs + temporaries - aliases.

Writes benchmarks/fsdp_memory.json (entries are kept between runs: `--only` re-measures some) and
benchmarks/fsdp_memory.md (the table, with which accelerators each configuration fits).

  python benchmarks/fsdp_memory.py [--devices 8] [--models dit_b2,dit_xl2,unet]
      [--layouts replicated,fsdp] [--batches 32,64,128] [--budget_seconds 3000] [--only]

Caveats, also in the markdown: XLA's CPU buffer assignment differs in detail from a TPU's or GPU's
(and the CPU compiler drops remat, so these are without remat); bf16 compute would shrink the
activations. The state bytes, by contrast, are exact for any backend.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

# name -> (config variant of configs/celebahq256.py, label)
MODELS = {'dit_b2': ('dit_b2', 'DiT-B/2'), 'dit_xl2': ('dit_xl2', 'DiT-XL/2'), 'unet': ('', 'paper UNet')}
# (name, HBM GB): a configuration "fits" if its peak estimate is at most 90% of it (runtime headroom).
ACCELERATORS = (('TPU v5e', 16), ('TPU v4', 32), ('A100 40GB', 40), ('H100 / A100 80GB', 80), ('TPU v5p', 95))
HEADROOM = 0.9


def measure(model_name, layout, per_device_batch, mesh):
    import jax
    import jax.numpy as jnp
    import numpy as np

    from configs import celebahq256
    from lct_jax import parallel
    from lct_jax.builders import build_model, build_objective
    from lct_jax.models.unet import count_params
    from lct_jax.train import loop
    from lct_jax.train.state import init_state, lr_schedule, make_optimizer
    from lct_jax.train.step import make_train_step

    n = mesh.devices.size
    config = celebahq256.get_config(MODELS[model_name][0])
    with config.unlocked():
        config.batch_size = per_device_batch * n
        config.mesh.fsdp = layout == 'fsdp'
    model, objective = build_model(config), build_objective(config)
    opt_cfg = loop._opt_cfg(config)
    optimizer = make_optimizer(opt_cfg)
    r = config.model.img_resolution

    def init():
        x = jnp.zeros((1, r, r, config.model.in_channels))
        params = model.init(jax.random.key(0), x, jnp.zeros((1,)))['params']
        return init_state(params, optimizer, config.ema_decays)

    shapes = jax.eval_shape(init)
    shardings = loop.state_shardings_of(config, shapes, mesh)
    abstract = jax.tree_util.tree_map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
                                      shapes, shardings)
    step = make_train_step(model, objective, optimizer, lr_schedule(opt_cfg), loop.step_config(config), mesh,
                           state_sharding=shardings)
    batch = jax.ShapeDtypeStruct((config.batch_size, r, r, config.model.in_channels), jnp.float32,
                                 sharding=parallel.batch_sharding(mesh))
    # The state's bytes on one device, exactly, from the shardings (any backend).
    state_bytes = sum(np.dtype(a.dtype).itemsize * int(np.prod(s.shard_shape(a.shape), dtype=np.int64))
                      for a, s in zip(jax.tree_util.tree_leaves(shapes), jax.tree_util.tree_leaves(shardings)))
    t0 = time.perf_counter()
    lowered = step.lower(abstract, batch)['update']
    compiled = lowered.compile()
    seconds = time.perf_counter() - t0
    mem = compiled.memory_analysis()
    peak = mem.argument_size_in_bytes + mem.output_size_in_bytes + mem.temp_size_in_bytes - mem.alias_size_in_bytes
    return {'model': MODELS[model_name][1], 'layout': layout, 'devices': n, 'per_device_batch': per_device_batch,
            'params': count_params(shapes.params), 'state_gb_per_device': state_bytes / 1e9,
            'arguments_gb': mem.argument_size_in_bytes / 1e9, 'outputs_gb': mem.output_size_in_bytes / 1e9,
            'temp_gb': mem.temp_size_in_bytes / 1e9, 'alias_gb': mem.alias_size_in_bytes / 1e9,
            'peak_estimate_gb': peak / 1e9, 'compile_seconds': seconds,
            'fits': [name for name, gb in ACCELERATORS if peak / 1e9 <= HEADROOM * gb]}


def markdown(entries: dict, devices: int, missing=()) -> str:
    lines = [
        '# Per-device memory of the train step: replicated vs FSDP',
        '',
        f'Made by `python benchmarks/fsdp_memory.py --devices {devices}` (compiled on {devices} fake CPU devices, '
        'not run). float32 params and compute, RAdam + two EMAs (state = 5 copies of the parameters), '
        '32x32x4 latents, the CelebA-HQ recipe; per-device batch = global batch / devices. '
        '"state" is exact (the shards\' bytes); "temp" and "peak" are XLA\'s CPU memory analysis of the '
        'compiled update program (peak = arguments + outputs + temporaries - donated aliases), whose buffer '
        'assignment differs in detail from a TPU\'s or GPU\'s; without remat (XLA\'s CPU compiler drops it, '
        'benchmarks/README.md) and without bf16 compute, both of which would lower the activations. '
        f'"fits": peak <= {HEADROOM:.0%} of the accelerator\'s memory '
        f'({", ".join(f"{a} {g} GB" for a, g in ACCELERATORS)}). '
        f'With FSDP over more devices than {devices} (a pod) the state shrinks further, as 1/devices; '
        'the activations do not.',
        '',
        '| model | params | layout | per-device batch | state GB | temp GB | peak GB | fits | compile s |',
        '|---|---|---|---|---|---|---|---|---|',
    ]
    order = {m[1]: i for i, m in enumerate(MODELS.values())}
    for e in sorted(entries.values(), key=lambda e: (order.get(e['model'], 9), e['layout'] != 'replicated',
                                                     e['per_device_batch'])):
        lines.append(f"| {e['model']} | {e['params'] / 1e6:.1f}M | {e['layout']} | {e['per_device_batch']} | "
                     f"{e['state_gb_per_device']:.2f} | {e['temp_gb']:.2f} | {e['peak_estimate_gb']:.2f} | "
                     f"{', '.join(e['fits']) or 'none'} | {e['compile_seconds']:.0f} |")
    if missing:
        lines += ['', 'Not measured (the run\'s compile budget ran out; `--budget_seconds` / re-run to add them): '
                  + ', '.join(f'`{k}`' for k in missing) + '.']
    return '\n'.join(lines) + '\n'


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--devices', type=int, default=8)
    p.add_argument('--models', default='dit_b2,dit_xl2,unet')
    p.add_argument('--layouts', default='replicated,fsdp')
    p.add_argument('--batches', default='32,64,128')
    p.add_argument('--budget_seconds', type=float, default=3000.0,
                   help='stop starting new compiles after this long (partial results are kept)')
    p.add_argument('--only', action='store_true', help='re-measure the listed entries even if already in the json')
    p.add_argument('--out', default=os.path.join(ROOT, 'benchmarks', 'fsdp_memory'))
    args = p.parse_args()

    import jax
    jax.config.update('jax_platforms', 'cpu')
    jax.config.update('jax_num_cpu_devices', args.devices)
    from lct_jax import parallel
    mesh = parallel.make_mesh()
    assert mesh.devices.size == args.devices, (mesh.devices.size, args.devices)

    path = args.out + '.json'
    entries = json.load(open(path))['entries'] if os.path.exists(path) else {}
    t_start = time.perf_counter()
    wanted = [f'{m}/{layout}/{b}/{args.devices}' for b in map(int, args.batches.split(','))
              for m in args.models.split(',') for layout in args.layouts.split(',')]
    # Batch outermost: a run cut short by the budget still has every model and layout at the small batches.
    for b in map(int, args.batches.split(',')):
        for model_name in args.models.split(','):
            for layout in args.layouts.split(','):
                key = f'{model_name}/{layout}/{b}/{args.devices}'
                if key in entries and not args.only:
                    continue
                if time.perf_counter() - t_start > args.budget_seconds:
                    print(f'budget reached; not measured: {key}', flush=True)
                    continue
                entries[key] = measure(model_name, layout, b, mesh)
                print(key, json.dumps(entries[key]), flush=True)
                json.dump({'entries': entries}, open(path, 'w'), indent=1)   # a partial run keeps its entries
    json.dump({'entries': entries}, open(path, 'w'), indent=1)
    with open(args.out + '.md', 'w') as f:
        f.write(markdown({k: e for k, e in entries.items() if e['devices'] == args.devices}, args.devices,
                         [k for k in wanted if k not in entries]))
    print(open(args.out + '.md').read())


if __name__ == '__main__':
    main()
