"""`--mode=train`: train a run, or resume it from its latest checkpoint, holding the work
directory's lock and keeping its record (lct_jax/workdir)."""
from __future__ import annotations

import jax

from lct_jax.train.loop import finished_step, train
from lct_jax.workdir.session import WriterSession


def run(config, workdir: str, flags) -> None:
    done = finished_step(config, workdir)
    if done is not None:  # nothing to do: write nothing
        if jax.process_index() == 0:
            print(f'{workdir}: already at step {done} of {config.total_steps}: nothing to train; '
                  f'to continue, raise --config.total_steps (with --allow_config_change, '
                  'which records the change in run.json)', flush=True)
        return
    with WriterSession(workdir, config, flags.allow_config_change, flags.lock_stale_seconds) as session:
        metrics = train(config, workdir, on_start=session.on_start)
        final = metrics.get('final_step')
        session.finish(final, 'finished' if final == config.total_steps else 'stopped by signal')
    if jax.process_index() == 0:
        loss = f', loss {float(metrics["loss"]):.4g}' if 'loss' in metrics else ''
        print(f'done: step {final}{loss}, compiled train step {metrics.get("trace_count")} time(s)', flush=True)
