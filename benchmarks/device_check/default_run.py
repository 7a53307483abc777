"""Part 9: the embedded default (configs/default.py) trained to the end on the accelerator, then
evaluated as `--mode=evaluate` does: wall time, steps/s and FD beside the CPU's."""
from __future__ import annotations

import os
import tempfile
import time

from configs import default
from device_check.basics import Budget, Sizes
from lct_jax.modes import evaluate as evaluate_mode
from lct_jax.train import loop

# The default run on 2 CPU cores (README.md, "The default run", measured with `time`): 9 min 41 s,
# 4.46 steps/s at the end, FD 3.92 (1 step) / 3.33 (2 steps).
CPU_DEFAULT_RUN = {'wall_seconds': 581.0, 'steps_per_s': 4.46, 'fd_1step': 3.92, 'fd_2step': 3.33,
                   'source': 'README.md, the default run (2 CPU cores)'}


def default_run(mesh, sizes: Sizes, budget: Budget, ctx: dict) -> dict:
    config = default.get_config('smoke' if sizes.smoke else '')
    workdir = tempfile.mkdtemp(prefix='lct_check_default_')
    with config.unlocked():
        if sizes.smoke:
            config.total_steps = 4
            config.model.update(model_channels=64, channel_mult=(1,), attn_resolutions=(8,))
            # grids of the evaluation's batch: its samplers then come from the compilation cache
            config.sampling.update(num_samples=64, batch_size=64, num_grid=64)
        config.evaluation.comparison_dir = workdir
    os.environ.setdefault('LCT_JAX_CACHE', os.path.join(workdir, 'cache'))
    t0 = time.perf_counter()
    metrics = loop.train(config, workdir, show_progress=False)
    train_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    rows = evaluate_mode.evaluate(config, workdir)
    eval_s = time.perf_counter() - t0
    fd = {f"fd_{r['sampler'].replace('-', '')}": r['fid'] for r in rows}
    return {'steps': config.total_steps, 'batch': config.batch_size, 'train_wall_seconds': train_s,
            'steps_per_s_last_interval': float(metrics.get('steps_per_sec', float('nan'))),
            'evaluate_seconds': eval_s, 'num_samples': config.sampling.num_samples, **fd,
            'rows': rows, 'cpu': CPU_DEFAULT_RUN}
