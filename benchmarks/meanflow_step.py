"""What a MeanFlow train step costs against the sLCT step: time and peak memory, same network and batch.

MeanFlow's loss runs the network once in forward mode (`jax.jvp`: u and du/dt together) and
differentiates that, where sLCT runs it twice in reverse-differentiable form (student) plus no-grad
(target). The users report MeanFlow at 2-3x a diffusion step. Measured here, in one invocation, for
each network below: the compiled `update` program of both objectives on the same network (the
sLCT config's norms; MeanFlow's network takes the second time h, which adds one embedding), the
same batch and the host-paired noise, the step run on a carried state:

  time     median seconds per step over --repeats steps, the two objectives' calls interleaved so
           that both see the same load (benchmarks/common.timeit_side_by_side)
  memory   XLA's memory analysis of the compiled update program: arguments + outputs + temporaries
           - aliased (the donated state), as benchmarks/sections/peak_memory.py

    python benchmarks/meanflow_step.py [--repeats 15]
Writes benchmarks/meanflow_step.json (and .md). On 2 CPU cores, a few minutes.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import jax  # noqa: E402

from benchmarks.common import paired_batch, timeit_side_by_side  # noqa: E402
from configs import default  # noqa: E402
from lct_jax import parallel  # noqa: E402
from lct_jax.train import loop  # noqa: E402

# name -> (config variant of configs/default.py, what it is)
NETWORKS = {
    'unet_digits': ('', 'the default run\'s UNet (8x8x1, 32 channels, 2 levels), batch 64'),
    'dit_digits': ('dit', 'the digits DiT (4 blocks, width 128, patch 2: 16 tokens), batch 64'),
}


def configs_for(variant: str):
    """(sLCT config, MeanFlow config) on the same network: MeanFlow keeps the sLCT norms."""
    slct = default.get_config(variant)
    mf = default.get_config(','.join(v for v in (variant, 'meanflow') if v))
    with mf.unlocked():
        mf.model.update(block_norm=slct.model.block_norm, out_norm=slct.model.out_norm)
    return slct, mf


def peak_bytes(compiled) -> int:
    m = compiled.memory_analysis()
    return int(m.argument_size_in_bytes + m.output_size_in_bytes + m.temp_size_in_bytes - m.alias_size_in_bytes)


class Runner:
    """One objective's compiled update on a carried state; returns the loss."""

    def __init__(self, config, mesh, x):
        _, _, self.state, step = loop.build_training(config, mesh)
        self.batch = paired_batch(config, mesh, x)
        t0 = time.perf_counter()
        self.compiled = step.lower(self.state, self.batch.x)['update'].compile()
        self.compile_seconds = time.perf_counter() - t0
        self.peak = peak_bytes(self.compiled)

    def __call__(self):
        self.state, metrics = self.compiled(self.state, *self.batch)
        return metrics['loss']


def measure(name: str, variant: str, repeats: int, mesh) -> dict:
    slct_cfg, mf_cfg = configs_for(variant)
    m = slct_cfg.model
    x = jax.random.normal(jax.random.key(1), (slct_cfg.batch_size, m.img_resolution, m.img_resolution,
                                              m.in_channels))
    runners = {'slct': Runner(slct_cfg, mesh, x), 'meanflow': Runner(mf_cfg, mesh, x)}
    times = timeit_side_by_side(runners, repeats=repeats, warmup=2)
    row = {'network': NETWORKS[name][1], 'batch': slct_cfg.batch_size, 'repeats': repeats}
    for key, r in runners.items():
        row[key] = {'step_seconds': times[key], 'peak_bytes': r.peak, 'compile_seconds': r.compile_seconds}
    row['time_ratio'] = times['meanflow'] / times['slct']
    row['memory_ratio'] = runners['meanflow'].peak / runners['slct'].peak
    print(name, json.dumps(row), flush=True)
    return row


def write_markdown(result: dict, path: str) -> None:
    lines = ['# MeanFlow step against the sLCT step, same network and batch', '',
             f'Made by `python benchmarks/meanflow_step.py --repeats {result["repeats"]}` on '
             f'{result["cpus"]} CPUs ({result["jax"]}; one invocation, the two steps interleaved). '
             'Time: median seconds per step; memory: XLA\'s analysis of the compiled update program '
             '(arguments + outputs + temporaries - donated).' + (f' {result["note"]}' if result.get('note') else ''), '',
             '| network | batch | sLCT s/step | MeanFlow s/step | time ratio | sLCT MB | MeanFlow MB | memory ratio |',
             '|---|---|---|---|---|---|---|---|']
    for row in result['rows'].values():
        s, f = row['slct'], row['meanflow']
        lines.append(f'| {row["network"]} | {row["batch"]} | {s["step_seconds"]:.4f} | {f["step_seconds"]:.4f} '
                     f'| **{row["time_ratio"]:.2f}** | {s["peak_bytes"] / 1e6:.1f} | {f["peak_bytes"] / 1e6:.1f} '
                     f'| **{row["memory_ratio"]:.2f}** |')
    lines += ['', 'Why near 1: the sLCT step runs the network forward twice (student, target) and backward once; '
              'MeanFlow runs it forward once with its tangent (u and du/dt from one `jax.jvp`) and backward once, '
              'through u only (the target, du/dt included, is under stop_gradient). The tangent costs about a '
              'forward, so the two steps do similar work; the extra memory is the tangent\'s activations. '
              'On this CPU these small steps are partly overhead; an accelerator\'s ratios differ.', '']
    with open(path, 'w') as f:
        f.write('\n'.join(lines))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--repeats', type=int, default=15)
    parser.add_argument('--networks', default=','.join(NETWORKS))
    parser.add_argument('--note', default='', help='a sentence for the .md (e.g. what else the machine ran)')
    args = parser.parse_args()
    mesh = parallel.make_mesh()
    rows = {name: measure(name, NETWORKS[name][0], args.repeats, mesh) for name in args.networks.split(',')}
    result = {'repeats': args.repeats, 'cpus': os.cpu_count(), 'devices': jax.device_count(),
              'jax': f'jax {jax.__version__}', 'machine': platform.machine(), 'note': args.note, 'rows': rows}
    out = os.path.join(ROOT, 'benchmarks', 'meanflow_step')
    with open(out + '.json', 'w') as f:
        json.dump(result, f, indent=1)
    write_markdown(result, out + '.md')
    print(f'wrote {out}.json and .md', flush=True)


if __name__ == '__main__':
    main()
