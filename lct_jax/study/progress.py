"""Where each run of a study stands: missing, partial, running, trained, done.

Read from the run's work directory only, so it works on whatever a cluster has
finished so far:
  running  its work directory is locked by a live job (`<workdir>/lock.json`,
           lct_jax/workdir/lock.py: a live pid on this host, or a fresh heartbeat);
  missing  never started (no recorded config);
  partial  started, stopped before total_steps, not running (a resume continues it);
  trained  trained to total_steps, some chosen checkpoints not evaluated yet;
  done     trained, and every chosen checkpoint evaluated.
Trained to total_steps = the latest checkpoint is total_steps, or the run record
(run.json) says a segment finished there: a run whose checkpoints were pruned
after its evaluation, or an export of it (`python -m lct_jax.study export`:
the record and results without checkpoints), still counts as done.
"""
from __future__ import annotations

import os
import re
import socket

from lct_jax.untrusted import UnreadableFileError, field
from lct_jax.untrusted import read_json as read_untrusted
from lct_jax.workdir import lock
from lct_jax.workdir.record import read_run

STATES = ('done', 'running', 'trained', 'partial', 'missing')
# Without lct_jax.workdir.lock (an older checkout): a run counts as running if its files changed
# this recently. A heuristic, said so in the progress view.
RECENT_WRITE_S = 300.0


def read_json(path: str, what: str = 'a run file', expect=None):
    """A run's JSON file; None if absent. A damaged one is an error naming it (UnreadableFileError),
    not a run silently taken for missing: the runner would retrain it and the report drop it."""
    try:
        return read_untrusted(path, what, expect)
    except FileNotFoundError:
        return None


def checkpoint_steps(workdir: str) -> list[int]:
    d = os.path.join(workdir, 'checkpoints')
    return sorted(int(s) for s in os.listdir(d) if s.isdigit()) if os.path.isdir(d) else []


def total_steps_of(workdir: str) -> int | None:
    path = os.path.join(workdir, 'config.json')
    config = read_json(path, "the run's recorded config", dict)
    if config is None:
        return None
    return field(path, config, 'total_steps', int, "the run's recorded config", lambda n: n >= 0)


def finished_step(workdir: str) -> int | None:
    """The last step a training segment of the run record finished at (None: no finished segment)."""
    run = read_run(os.path.join(workdir, 'run.json')) or {}
    done = [s.get('to_step') for s in run.get('segments', []) if s.get('end') == 'finished']
    return max((s for s in done if isinstance(s, int) and not isinstance(s, bool)), default=None)


def wanted_steps(eval_steps, total_steps: int) -> list[int]:
    """The checkpoints to evaluate: the study's choice, or the last one."""
    return sorted(set(eval_steps)) if eval_steps else [total_steps]


_STEP = re.compile(r'step (\d+)')


def step_of_row(row: dict) -> int | None:
    """The training step an evaluation row was made at ('checkpoint': 'step 2500:ema_0.99')."""
    m = _STEP.match(str(row.get('checkpoint', '')))
    return int(m.group(1)) if m else None


def evaluation_rows(workdir: str) -> list[dict]:
    """The run's evaluation rows (<workdir>/results.json, appended by --mode=evaluate), the latest
    row for each (step, sampler) only, in step order."""
    path = os.path.join(workdir, 'results.json')
    rows = read_json(path, "a run's evaluation rows", list) or []
    if not all(isinstance(r, dict) for r in rows):
        raise UnreadableFileError(f'{path}: expected a JSON array of evaluation rows (objects)')
    for row in rows:
        fid = row.get('fid')
        if not isinstance(row.get('sampler'), str) or not isinstance(row.get('checkpoint', ''), str) \
                or not isinstance(fid, (int, float)) or isinstance(fid, bool):
            raise UnreadableFileError(f'{path}: an evaluation row needs a sampler and a checkpoint (strings) and '
                                      f'a fid (a number): {str(row)[:160]}')
    latest = {}
    for row in rows:
        step = step_of_row(row)
        if step is not None:
            latest[(step, row.get('sampler'))] = dict(row, step=step)
    return [latest[k] for k in sorted(latest, key=lambda k: (k[0], str(k[1])))]


def evaluated_steps(workdir: str) -> set[int]:
    return {r['step'] for r in evaluation_rows(workdir)}


def lock_state(workdir: str) -> tuple[bool, str]:
    """(is a live job holding the work directory, how we know)."""
    holder = lock.read_holder(os.path.join(workdir, lock.LOCK_FILE))
    if holder is None:
        return False, 'lock file'
    if holder == {}:  # being written right now: someone is there
        return True, 'lock file'
    stale_after = float(holder.get('stale_after_s', lock.STALE_AFTER_S))
    return lock.staleness(holder, socket.gethostname(), stale_after) is None, 'lock file'


def run_state(workdir: str, eval_steps=()) -> dict:
    """{'state': one of STATES, 'step': latest checkpoint, 'total_steps', 'to_evaluate': [steps]}."""
    running, how = lock_state(workdir) if os.path.isdir(workdir) else (False, 'lock file')
    total = total_steps_of(workdir)
    steps = checkpoint_steps(workdir)
    latest = steps[-1] if steps else None
    info = {'step': latest, 'total_steps': total, 'running_by': how}
    if total is None:
        return dict(info, state='running' if running else 'missing', to_evaluate=[])
    todo = [s for s in wanted_steps(eval_steps, total) if s not in evaluated_steps(workdir)]
    info['to_evaluate'] = todo
    if running:
        return dict(info, state='running')
    if latest != total and finished_step(workdir) != total:
        return dict(info, state='partial')
    return dict(info, state='trained' if todo else 'done')


def progress_table(runs, eval_steps) -> tuple[list[dict], str]:
    """(one entry per run, a printable view with counts per state)."""
    entries = [dict(variant=r.variant, seed=r.seed, workdir=r.workdir, **run_state(r.workdir, eval_steps))
               for r in runs]
    counts = {s: sum(e['state'] == s for e in entries) for s in STATES}
    lines = [f'{len(entries)} runs: ' + ', '.join(f'{counts[s]} {s}' for s in STATES if counts[s])]
    for e in entries:
        step = '-' if e['step'] is None else e['step']
        total = '?' if e['total_steps'] is None else e['total_steps']
        extra = f'; to evaluate: {e["to_evaluate"]}' if e.get('to_evaluate') and e['state'] != 'running' else ''
        lines.append(f'  {e["variant"]:>14} seed {e["seed"]:<3} {e["state"]:<8} step {step}/{total}{extra}')
    hows = {e['running_by'] for e in entries}
    lines.append('running = ' + ('the work directory is locked by a live job (lock.json)' if hows == {'lock file'}
                                 else '; '.join(sorted(hows))))
    return entries, '\n'.join(lines)
