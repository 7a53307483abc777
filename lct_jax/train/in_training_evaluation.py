"""FID during training: every `evaluation.every` steps, the EMA is evaluated with the configured
samplers on `evaluation.num_samples` samples (0: sampling.num_samples).

As ECT (`--metrics=fid50k_full` every N ticks) and MeanFlow (FID every 10 epochs) do, so a run
shows its FID over training without a hand-made loop afterwards. The rows go to:

  metrics.jsonl / TensorBoard   fid/<sampler>, precision/<sampler>, recall/<sampler> at the step
  evaluations.jsonl             one row per (step, sampler), as --mode=evaluate writes them
  best_checkpoints.json         per sampler, the step with the lowest FID so far; checkpoint
                                retention never deletes those steps (`protected_steps`)

Everything that does not change between evaluations (reference statistics, feature networks,
the samplers compiled on the mesh) is built once, at the first evaluation (builders.build_evaluator); the
train step is not touched, so it is not recompiled. An evaluation step is also a checkpoint
step, so the best record always names a checkpoint that exists.

Resuming follows the work directory's history rule (train/metric_writer.py): a run that starts
from step S moves the record's rows after S to evaluations.dropped.jsonl, as the metrics' are,
and evaluates those steps again as it reaches them (each is then in the history once). If S
itself is an evaluation step whose evaluation is not in the record (the run stopped between
the checkpoint and its evaluation), S is evaluated first: none is skipped, none repeated.
"""
from __future__ import annotations

import json
import os

import jax
import numpy as np
from jax.experimental import multihost_utils

from lct_jax import parallel, writer
from lct_jax.builders import build_evaluator
from lct_jax.evaluation.table1 import ROW_FORMAT
from lct_jax.train.metric_writer import truncate_history

RECORD = 'evaluations.jsonl'
DROPPED = 'evaluations.dropped.jsonl'
BEST = 'best_checkpoints.json'


def read_record(workdir: str) -> list[dict]:
    """The whole rows of evaluations.jsonl (a line cut by a kill is not a row)."""
    path = os.path.join(workdir, RECORD)
    rows = []
    if os.path.exists(path):
        for line in open(path):
            try:
                row = json.loads(line)
            except ValueError:
                continue
            if isinstance(row, dict) and isinstance(row.get('step'), int):
                rows.append(row)
    return rows


def truncate_record(workdir: str, last_kept_step: int) -> int:
    """Move the record's rows after `last_kept_step` to evaluations.dropped.jsonl; how many (the
    metrics' rule, train/metric_writer.py)."""
    return truncate_history(workdir, last_kept_step, RECORD, DROPPED)


def best_by_sampler(rows: list[dict]) -> dict:
    """{sampler: {'step', 'fid', 'checkpoint'}} of the lowest FID per sampler (the earliest of equals)."""
    best = {}
    for r in rows:
        label, value = r.get('sampler'), r.get('fid')
        if not isinstance(value, (int, float)) or not np.isfinite(value):
            continue
        if label not in best or value < best[label]['fid']:
            best[label] = {'step': r['step'], 'fid': value, 'checkpoint': f'checkpoints/{r["step"]}'}
    return best


def protected_steps(workdir: str) -> set[int]:
    """The steps best_checkpoints.json names: checkpoint retention keeps them."""
    try:
        with open(os.path.join(workdir, BEST)) as f:
            best = json.load(f)
        return {int(v['step']) for v in best.values()}
    except (OSError, ValueError, TypeError, KeyError, AttributeError):
        return set()


def write_best(workdir: str, rows: list[dict]) -> dict:
    best = best_by_sampler(rows)
    writer.write_json(os.path.join(workdir, BEST), best, sort_keys=True)
    return best


def metrics_of(rows: list[dict]) -> dict:
    """The scalars logged beside the loss: fid/<sampler>, precision/<sampler>, recall/<sampler>."""
    out = {}
    for r in rows:
        for key in ('fid', 'precision', 'recall'):
            if r.get(key) is not None:
                out[f'{key}/{r["sampler"]}'] = r[key]
    return out


class TrainingEvaluation:
    """The loop's side: `due(step)`, `pending_at_start()`, `run(step, state, writer)`."""

    def __init__(self, config, workdir: str, mesh, start: int):
        self.config, self.workdir, self.mesh, self.start = config, workdir, mesh, start
        ev = config.evaluation
        self.every = int(ev.get('every', 0) or 0)
        self.num = int(ev.get('num_samples', 0) or 0) or int(config.sampling.num_samples)
        self.evaluator = None
        self.main = jax.process_index() == 0
        if self.every and self.main:
            dropped = truncate_record(workdir, start)
            if dropped:
                print(f'{dropped} evaluation row(s) after step {start} by an interrupted run moved from {RECORD} '
                      f'to {DROPPED}; those steps are evaluated again', flush=True)

    def due(self, step: int) -> bool:
        return bool(self.every) and step > 0 and step % self.every == 0

    def pending_at_start(self) -> bool:
        """Is the start step an evaluation step with no evaluation recorded (every process agrees)?"""
        if not self.due(self.start):
            return False
        pending = self.start not in {r['step'] for r in read_record(self.workdir)} if self.main else False
        if jax.process_count() > 1:  # meet first: a collective gives a late peer only 30 s (parallel.barrier)
            parallel.barrier(f'lct_jax/evaluation/pending/{self.start}')
            pending = bool(multihost_utils.broadcast_one_to_all(np.int32(pending)))
        return pending

    def run(self, step: int, state, metric_writer) -> list[dict]:
        name = self.config.sampling.ema
        params = state.params if name == 'params' else state.ema.get(name, state.params)
        if self.evaluator is None:  # reference statistics and samplers: once per run
            self.evaluator = build_evaluator(self.config, self.workdir, self.mesh, show_progress=False)
        rows = [dict(r, step=step) for r in self.evaluator.rows(params, f'step {step}:{name}', num=self.num)]
        metric_writer.scalars(step, metrics_of(rows))
        if self.main:
            writer.append_line(os.path.join(self.workdir, RECORD),
                               [json.dumps({'format': ROW_FORMAT, **r}, ensure_ascii=False) for r in rows])
            best = write_best(self.workdir, read_record(self.workdir))
            print(f'evaluation at step {step}: ' + ', '.join(
                f'{r["sampler"]} FID {r["fid"]:.4g} (best {best[r["sampler"]]["fid"]:.4g} at step '
                f'{best[r["sampler"]]["step"]})' for r in rows if r['sampler'] in best), flush=True)
        return rows
