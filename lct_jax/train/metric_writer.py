"""Where metrics go: TensorBoard event files and <workdir>/metrics.jsonl (process 0 only).

The history matches the checkpoints: a run that starts from step S (the
restored checkpoint, 0 for a fresh start) first moves the rows logged after S
by an earlier, interrupted run out of metrics.jsonl into
metrics.dropped.jsonl, and tells TensorBoard to purge its events after S
(tensorboardX's `purge_step`, honoured by TensorBoard's reader). The steps
after S are then logged once, by this run.

A write that fails (a full disk, say) is a MetricsWriteError naming the file;
checkpoints are written elsewhere and are not affected by it.
"""
from __future__ import annotations

import json
import os
import sys

import jax
import numpy as np

from lct_jax import writer

METRICS = 'metrics.jsonl'
DROPPED = 'metrics.dropped.jsonl'


class MetricsWriteError(RuntimeError):
    pass


def _write_failed(what: str, e: OSError) -> MetricsWriteError:
    return MetricsWriteError(f'writing {what} failed ({type(e).__name__}: {e}); the checkpoints are not affected')


def split_history(lines: list[str], last_kept_step: int) -> tuple[list[str], list[str]]:
    """(rows to keep, rows to drop): rows of steps after `last_kept_step`, and lines that are not a
    whole row (a write cut by a kill), are dropped."""
    kept, dropped = [], []
    for line in lines:
        try:
            row = json.loads(line)
            keep = int(row['step']) <= last_kept_step
        except (ValueError, KeyError, TypeError):
            keep = False
        (kept if keep else dropped).append(line.rstrip('\n'))
    return kept, dropped


def truncate_history(workdir: str, last_kept_step: int, name: str = METRICS, dropped_name: str = DROPPED) -> int:
    """Move the rows after `last_kept_step` from <workdir>/<name> (metrics.jsonl) to <dropped_name>
    (metrics.dropped.jsonl); how many."""
    path = os.path.join(workdir, name)
    if not os.path.exists(path):
        return 0
    with open(path) as f:
        kept, dropped = split_history(f.readlines(), last_kept_step)
    if not dropped:
        return 0
    # Dropped rows first (appended, each tagged with the step resumed from), then the history
    # is replaced atomically: a crash in between loses nothing.
    writer.append_line(os.path.join(workdir, dropped_name),
                       [json.dumps({'dropped_when_resuming_from_step': last_kept_step, 'line': line})
                        for line in dropped])
    writer.write_text(path, ''.join(line + '\n' for line in kept))
    return len(dropped)


def _summary_writer_class():
    """tensorboardX's SummaryWriter, imported without PyTorch. Where torch is installed,
    tensorboardX imports it only to name torch.Tensor in its type hints: 1.4 s and some hundreds
    of MB in every training process, for a writer given floats. Hiding torch while tensorboardX
    imports (its `import torch` is in a try) skips that; a process that has torch already keeps it."""
    hide = 'torch' not in sys.modules
    if hide:
        sys.modules['torch'] = None   # `import torch` raises ImportError while this is set
    try:
        from tensorboardX import SummaryWriter
    finally:
        if hide:
            del sys.modules['torch']
    return SummaryWriter


class MetricWriter:
    def __init__(self, workdir: str, enabled: bool | None = None, start_step: int | None = None):
        """start_step: the step this run starts from; history after it is dropped (see above)."""
        self.enabled = jax.process_index() == 0 if enabled is None else enabled
        self._tb = None
        self._jsonl = None
        if self.enabled:
            SummaryWriter = _summary_writer_class()
            os.makedirs(workdir, exist_ok=True)
            purge_step = None
            if start_step is not None:
                dropped = truncate_history(workdir, start_step)
                if dropped:
                    print(f'{dropped} row(s) logged after step {start_step} by an interrupted run moved from '
                          f'{METRICS} to {DROPPED}', flush=True)
                purge_step = start_step + 1
            self._tb = SummaryWriter(os.path.join(workdir, 'tensorboard'), purge_step=purge_step)
            self._jsonl = writer.open_append(os.path.join(workdir, METRICS))

    def scalars(self, step: int, metrics: dict) -> None:
        if not self.enabled:
            return
        clean = {k: float(np.asarray(v)) for k, v in metrics.items()}
        for k, v in clean.items():
            self._tb.add_scalar(k, v, step)
        try:
            self._jsonl.write(json.dumps({'step': int(step), **clean}) + '\n')
            self._jsonl.flush()
        except OSError as e:
            raise _write_failed(self._jsonl.name, e) from e
        # Otherwise tensorboardX writes to disk every 120 s: a killed run's events would lag its rows.
        self.flush()

    def image(self, step: int, tag: str, image_hwc: np.ndarray) -> None:
        if self.enabled:
            self._tb.add_image(tag, image_hwc, step, dataformats='HWC')

    def flush(self) -> None:
        if self.enabled:
            try:
                self._tb.flush()
            except OSError as e:
                raise _write_failed(f'TensorBoard events in {self._tb.logdir}', e) from e

    def close(self) -> None:
        """Close both files (both are tried); the first failure is raised after."""
        if not self.enabled:
            return
        failures = []
        for what, close in ((f'TensorBoard events in {self._tb.logdir}', self._tb.close),
                            (self._jsonl.name, self._jsonl.close)):
            try:
                close()
            except OSError as e:
                failures.append(_write_failed(what, e))
        if failures:
            raise failures[0]
