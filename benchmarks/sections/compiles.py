"""Traces of the step over a run crossing every curriculum stage (`compiles`): 1 means no recompile."""
from __future__ import annotations

from common import paired_batch, random_batch

from configs import default
from lct_jax.train import loop


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


SECTIONS = {'compiles': (lambda r, mesh, q: {'compiles': compiles_per_run(mesh)}, False)}
