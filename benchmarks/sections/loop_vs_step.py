"""The whole training loop (data, host logic, logging) against the compiled step alone (`loop`)."""
from __future__ import annotations

import json
import os
import tempfile

import numpy as np
from common import StepRunner, paired_batch, random_batch, timeit

from configs import default
from lct_jax.train import loop


def loop_vs_step(mesh, steps=400, log_every=100, config=None):
    """Runs `loop.train` on the default config (or `config`) with checkpoints and samples only at
    the end; the loop's seconds per step are the median over the log intervals after the first
    (which holds the compile). The same step is then timed alone, straight after, in blocks of
    `log_every` calls (the machine's load drifts over minutes). A ratio near 1 means nothing on the
    host (data, dispatch, logging) stalls the step.
    """
    config = (config or default.get_config()).copy_and_resolve_references()
    with config.unlocked():
        config.total_steps, config.log_every = steps, log_every
        config.checkpoint_every = config.sample_every = steps
    workdir = tempfile.mkdtemp()
    loop.train(config, workdir, show_progress=False)
    rows = [json.loads(line) for line in open(os.path.join(workdir, 'metrics.jsonl'))]
    loop_s = float(np.median([1.0 / row['steps_per_sec'] for row in rows[1:]]))

    _, _, state, step = loop.build_training(config, mesh)
    m = config.model
    batch = paired_batch(config, mesh, random_batch(
        (config.batch_size, m.img_resolution, m.img_resolution, m.in_channels), mesh))
    run_step = StepRunner({'update': step.update}, state, batch)

    def block_of_steps():
        for _ in range(log_every - 1):
            run_step()
        return run_step()

    step_s = timeit(block_of_steps, repeats=len(rows) - 1) / log_every
    return {'steps': steps, 'loop_seconds_per_step': loop_s, 'step_seconds': step_s,
            'loop_over_step': loop_s / step_s, 'workdir': workdir}


def _loop(r, mesh, quick):
    out = loop_vs_step(mesh)
    out.pop('workdir')
    return {'loop': out}


SECTIONS = {'loop': (_loop, False)}
