"""A writing start of a work directory (train, encode): the lock and the record around it.

    with WriterSession(workdir, config, allow_config_change) as session:
        result = train(config, workdir, on_start=session.on_start)
        session.finish(result['final_step'], 'finished')

Process 0 acts on behalf of every process of the job: it takes the lock,
compares the config with the record, and writes the record; the other
processes learn whether the start may go on from one broadcast, so a refused
start stops all of them at once instead of leaving them waiting in a
collective. Read-only modes (sample, evaluate, analyze) use no session.
"""
from __future__ import annotations

import numpy as np

from lct_jax.workdir import environment
from lct_jax.workdir.lock import STALE_AFTER_S, WorkdirLock
from lct_jax.workdir.record import (
    RunRecord,
    config_as_dict,
    format_changes,
    latest_checkpoint_step,
)


class StartRefusedError(RuntimeError):
    """On processes other than 0: process 0 refused the start (its own error says why)."""


def all_processes_agree(ok: bool) -> bool:
    """Process 0's `ok`, on every process."""
    import jax
    if jax.process_count() == 1:
        return ok
    from jax.experimental import multihost_utils
    return bool(multihost_utils.broadcast_one_to_all(np.int32(ok)))


class WriterSession:
    def __init__(self, workdir: str, config=None, allow_config_change: bool = False,
                 stale_after_s: float = STALE_AFTER_S):
        """config: the run's config, compared with and written to the record; None (encode) = lock only."""
        import jax
        self.workdir = workdir
        self.is_leader = jax.process_index() == 0
        self.current = config_as_dict(config) if config is not None else None
        self.allow_config_change = allow_config_change
        self.stale_after_s = stale_after_s
        self.record = RunRecord(workdir)
        self.lock = None
        self.changes = {}
        self.started = self.finished = False

    def __enter__(self) -> 'WriterSession':
        error = None
        if self.is_leader:
            try:
                self.lock = WorkdirLock(self.workdir, stale_after_s=self.stale_after_s,
                                        command=environment.command_line()).acquire()
                if self.current is not None:
                    self.changes = self.record.check_start(self.current, self.allow_config_change)
            except Exception as e:  # noqa: BLE001 - re-raised below, after the other processes know
                error = e
                self._release()
        if not all_processes_agree(error is None):
            raise error if error is not None else StartRefusedError(
                'process 0 refused to start this run (its log says why)')
        return self

    def on_start(self, step: int) -> None:
        """The start has succeeded at `step` (restored checkpoint, 0 if fresh): record it."""
        if not self.is_leader or self.current is None:
            return
        self.record.begin_segment(self.current, step, self.changes, environment.describe())
        self.started = True
        if self.changes:
            print(f'config changes recorded in {self.record.run_path}, effective from step {step}:\n'
                  f'{format_changes(self.changes)}', flush=True)

    def finish(self, to_step: int, end: str) -> None:
        if self.is_leader and self.started:
            self.record.end_segment(to_step, end)
        self.finished = True

    def __exit__(self, exc_type, exc, _tb):
        try:
            if exc_type is not None and self.is_leader and self.started and not self.finished:
                first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else ''
                # What survives of this segment is its latest checkpoint.
                self.record.end_segment(latest_checkpoint_step(self.workdir),
                                        f'error: {exc_type.__name__}: {first_line}')
        finally:
            self._release()
        return False

    def _release(self) -> None:
        if self.lock is not None:
            self.lock.release()
            self.lock = None
