"""A study's finished runs without their checkpoints: what a report needs, small enough to commit
or to carry off a cluster.

`export` copies each *done* run's work directory into <dest>/runs/<variant>/seed_<s>, leaving
out the checkpoints, the lock, the evaluation's sample arrays and the TensorBoard events
(metrics.jsonl holds the same scalars, samples/ the same grids); kept: the run record
(config.json, run.json), the evaluation rows (results.json and the tables beside it),
metrics.jsonl, the sample grids and the study logs: 0.49 MB a latent-study run.
An export is itself a study root: progress counts its runs as done (the run record says they
finished, lct_jax/study/progress.py), so

  python -m lct_jax.study report <study file> --workroot <dest>

reports on it anywhere, and copying its runs/ into a live root (`cp -r <dest>/runs <root>/`)
makes `run` train only the runs it lacks: the way a study outlives the machine that ran part
of it. Runs already in <dest> are replaced only when the source is newer (its results.json).
"""
from __future__ import annotations

import os

from lct_jax import writer
from lct_jax.study import progress
from lct_jax.study.spec import Run

# Left out of an export: large, or a copy of what is kept, and never read by a report.
SKIPPED_DIRS = ('checkpoints', 'tensorboard')
SKIPPED_FILES = ('lock.json',)
SKIPPED_SUFFIXES = ('.npz', '.npy', '.tmp')


def _ignore(folder: str, names: list[str]) -> set[str]:
    return {n for n in names
            if (n in SKIPPED_DIRS and os.path.isdir(os.path.join(folder, n)))
            or n in SKIPPED_FILES or n.endswith(SKIPPED_SUFFIXES)}


def _mtime(path: str) -> float:
    return os.path.getmtime(path) if os.path.exists(path) else -1.0


def export_runs(runs: list[Run], study_dir: str, dest: str, eval_steps=()) -> dict[str, str]:
    """Copy every done run under `study_dir` to `dest` (same layout); {run key: 'exported' |
    'up to date' | its state when not done}."""
    outcome = {}
    for r in runs:
        state = progress.run_state(r.workdir, eval_steps)['state']
        if state != 'done':
            outcome[r.key] = state
            continue
        target = os.path.join(dest, os.path.relpath(r.workdir, study_dir))
        if os.path.abspath(target) == os.path.abspath(r.workdir):
            outcome[r.key] = 'up to date'
            continue
        if _mtime(os.path.join(target, 'results.json')) >= _mtime(os.path.join(r.workdir, 'results.json')):
            outcome[r.key] = 'up to date'
            continue
        writer.copy_tree_replacing(r.workdir, target, ignore=_ignore, root=dest)
        outcome[r.key] = 'exported'
    return outcome
