"""What the JVP-based train steps (MeanFlow, sCT, improved MeanFlow) cost against the sLCT step:
time and peak memory, same network and batch.

sLCT runs the network twice forward (student with gradient, target without) and once backward.
MeanFlow runs it once in forward mode (`jax.jvp`: u and du/dt together) and differentiates that;
sCT runs it once with gradient (F and the logvar head) and once under `jax.jvp` (F^- and its
total derivative), without gradient; improved MeanFlow adds a forward for the JVP's tangent (the
network's own velocity) to MeanFlow's JVP, and a second output head. Measured here, in one
invocation, for each network below: the compiled `update` program of each objective on the same
network (the sLCT config's norms; the two-time networks add one embedding, sCT's a logvar head,
iMF's a second output layer), the same batch and the host-paired noise, on a carried state:

  time     median seconds per step over --repeats steps, the two objectives' calls interleaved so
           that both see the same load (benchmarks/common.timeit_side_by_side)
  memory   XLA's memory analysis of the compiled update program: arguments + outputs + temporaries
           - aliased (the donated state), as benchmarks/sections/peak_memory.py

    python benchmarks/objective_step.py [--repeats 15]
Writes benchmarks/objective_step.json (and .md). On 2 CPU cores, a few minutes.
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


OBJECTIVES = ('meanflow', 'sct', 'imf')   # each against 'slct'
NAMES = {'slct': 'sLCT', 'meanflow': 'MeanFlow', 'sct': 'sCT', 'imf': 'iMF'}


def configs_for(variant: str) -> dict:
    """{objective: config} on the same network: every objective keeps the sLCT norms."""
    slct = default.get_config(variant)
    out = {'slct': slct}
    for name in OBJECTIVES:
        c = default.get_config(','.join(v for v in (variant, name) if v))
        with c.unlocked():
            c.model.update(block_norm=slct.model.block_norm, out_norm=slct.model.out_norm)
        out[name] = c
    return out


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
        self.state, metrics = self.compiled(self.state, self.batch)
        return metrics['loss']


def measure(name: str, variant: str, repeats: int, mesh) -> dict:
    configs = configs_for(variant)
    slct_cfg = configs['slct']
    m = slct_cfg.model
    x = jax.random.normal(jax.random.key(1), (slct_cfg.batch_size, m.img_resolution, m.img_resolution,
                                              m.in_channels))
    runners = {key: Runner(c, mesh, x) for key, c in configs.items()}
    times = timeit_side_by_side(runners, repeats=repeats, warmup=2)
    row = {'network': NETWORKS[name][1], 'batch': slct_cfg.batch_size, 'repeats': repeats}
    for key, r in runners.items():
        row[key] = {'step_seconds': times[key], 'peak_bytes': r.peak, 'compile_seconds': r.compile_seconds}
        if key != 'slct':
            row[key].update(time_ratio=times[key] / times['slct'], memory_ratio=r.peak / runners['slct'].peak)
    print(name, json.dumps(row), flush=True)
    return row


def write_markdown(result: dict, path: str) -> None:
    lines = ['# The JVP-based steps against the sLCT step, same network and batch', '',
             f'Made by `python benchmarks/objective_step.py --repeats {result["repeats"]}` on '
             f'{result["cpus"]} CPUs ({result["jax"]}; one invocation, the steps interleaved). '
             'Time: median seconds per step; memory: XLA\'s analysis of the compiled update program '
             '(arguments + outputs + temporaries - donated).' + (f' {result["note"]}' if result.get('note') else ''), '',
             '| network | objective | s/step | time / sLCT | MB | memory / sLCT |', '|---|---|---|---|---|---|']
    for row in result['rows'].values():
        s = row['slct']
        lines.append(f'| {row["network"]} | sLCT | {s["step_seconds"]:.4f} | 1 | {s["peak_bytes"] / 1e6:.1f} | 1 |')
        for key in OBJECTIVES:
            if key in row:
                o = row[key]
                lines.append(f'| | {NAMES[key]} | {o["step_seconds"]:.4f} | **{o["time_ratio"]:.2f}** | '
                             f'{o["peak_bytes"] / 1e6:.1f} | **{o["memory_ratio"]:.2f}** |')
    lines += ['', 'Where the work goes: sLCT, two forwards (one without gradient) and one backward; MeanFlow, one '
              'forward with its tangent (`jax.jvp`) and one backward through u; sCT, one forward with gradient, one '
              'forward with its tangent without gradient, one backward; iMF, MeanFlow\'s plus one forward for the '
              'tangent (the network\'s own velocity) and the v-head. A tangent costs about a forward. On this CPU '
              'these small steps are partly overhead; an accelerator\'s ratios differ (the accelerator check '
              'measures them there: benchmarks/device_check/steps.py, part 10).', '']
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
    out = os.path.join(ROOT, 'benchmarks', 'objective_step')
    with open(out + '.json', 'w') as f:
        json.dump(result, f, indent=1)
    write_markdown(result, out + '.md')
    print(f'wrote {out}.json and .md', flush=True)


if __name__ == '__main__':
    main()
