"""Running a study's runs on this machine: each an ordinary `lct_jax.main` process.

A run is trained by `python -m lct_jax.main --mode=train` in its own work
directory (which resumes from its latest checkpoint), then each chosen
checkpoint not evaluated yet is evaluated by `--mode=evaluate --checkpoint=...`
(rows appended to <workdir>/results.json). Finished work is never redone; a
run whose directory is locked by a live job is left to that job. Output goes
to <workdir>/study_logs/, one line per event to the console.

On a CPU-only machine, K runs at a time can each be pinned to their own
slice of the CPUs (`cpus_per_run`): XLA's CPU thread pool sizes itself from
the affinity mask, and small steps use a second core poorly, so K pinned runs
finish more work per hour than K runs contending for every core
(benchmarks/study_throughput.py measures it).
"""
from __future__ import annotations

import concurrent.futures
import os
import queue
import subprocess
import sys
import time

from lct_jax import writer
from lct_jax.study import pins as pinning
from lct_jax.study import progress
from lct_jax.study.spec import ROOT, Run, Study, plan, prepare_commands

PREPARED_FILE = 'prepared.json'


def main_command(run: Run, *extra: str) -> list[str]:
    return [sys.executable, '-m', 'lct_jax.main', f'--config={run.config}', f'--workdir={run.workdir}',
            *run.flags, *extra]


def train_command(run: Run) -> list[str]:
    return main_command(run)


def evaluate_command(run: Run, step: int) -> list[str]:
    # comparison_dir = the run's own directory: seeds evaluated at once must not rewrite one shared table.
    return main_command(run, '--mode=evaluate', f'--checkpoint={os.path.join(run.workdir, "checkpoints", str(step))}',
                        f'--config.evaluation.comparison_dir={run.workdir}', *run.eval_flags)


def _say(msg: str) -> None:
    print(f'[study {time.strftime("%H:%M:%S")}] {msg}', flush=True)


def cpu_slices(parallel: int, cpus_per_run: int, cpus=None) -> list[frozenset]:
    """`parallel` disjoint sets of `cpus_per_run` CPUs each, from this process's affinity mask."""
    available = sorted(os.sched_getaffinity(0) if cpus is None else cpus)
    if parallel * cpus_per_run > len(available):
        raise ValueError(f'{parallel} runs x {cpus_per_run} CPUs each need {parallel * cpus_per_run} CPUs; '
                         f'this process may use {len(available)}: {available}')
    return [frozenset(available[i * cpus_per_run:(i + 1) * cpus_per_run]) for i in range(parallel)]


def pinned_env(cpus) -> dict:
    """The environment of a run pinned to `cpus`: BLAS / OpenMP pools sized to match."""
    env = dict(os.environ)
    if cpus:
        for var in ('OMP_NUM_THREADS', 'OPENBLAS_NUM_THREADS', 'MKL_NUM_THREADS'):
            env[var] = str(len(cpus))
    return env


def _call(cmd: list[str], log_path: str, cpus=None) -> int:
    os.makedirs(os.path.dirname(log_path), exist_ok=True)
    pin = (lambda: os.sched_setaffinity(0, cpus)) if cpus else None
    with writer.open_append(log_path) as log:
        log.write(f'$ {" ".join(cmd)}' + (f'   # on CPUs {sorted(cpus)}' if cpus else '') + '\n')
        log.flush()
        return subprocess.call(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, env=pinned_env(cpus),
                               preexec_fn=pin)


class RunFailed(RuntimeError):
    pass


def run_one(run: Run, eval_steps=(), cpus=None, pins=None) -> str:
    """Train (or resume) and evaluate one run (on `cpus` if given); returns its final state.
    Skips what is done. `pins`: the study's verified pinned inputs, recorded into the run (a run
    started on other inputs is refused, not resumed)."""
    state = progress.run_state(run.workdir, eval_steps)
    if state['state'] == 'running':
        _say(f'{run.key}: locked by a live job, left to it')
        return 'running'
    if pins and state['state'] != 'done':
        try:
            pinning.record(run.workdir, pins)
        except pinning.PinMismatch as e:
            raise RunFailed(f'{run.key}: {e}') from None
    logs = os.path.join(run.workdir, 'study_logs')
    if state['state'] in ('missing', 'partial'):
        _say(f'{run.key}: training' + (f' (resuming from step {state["step"]})' if state['step'] else ''))
        rc = _call(train_command(run), os.path.join(logs, 'train.log'), cpus)
        if rc:
            raise RunFailed(f'{run.key}: training exited with {rc}; see {os.path.join(logs, "train.log")}')
        state = progress.run_state(run.workdir, eval_steps)
        if state['state'] == 'partial':  # stopped by a signal: a checkpoint was saved, nothing to evaluate yet
            _say(f'{run.key}: training stopped at step {state["step"]} (signal); resume later')
            return 'partial'
    kept = set(progress.checkpoint_steps(run.workdir))
    for step in state.get('to_evaluate', []):
        if step not in kept:
            raise RunFailed(f'{run.key}: checkpoint {step} was not kept (kept: {sorted(kept)}); keep it with '
                            '--config.train.keep_period (a divisor of the chosen steps) in the study overrides')
        _say(f'{run.key}: evaluating step {step}')
        rc = _call(evaluate_command(run, step), os.path.join(logs, 'evaluate.log'), cpus)
        if rc:
            raise RunFailed(f'{run.key}: evaluation at step {step} exited with {rc}; '
                            f'see {os.path.join(logs, "evaluate.log")}')
    _say(f'{run.key}: done')
    return 'done'


def prepare(study: Study, study_dir: str) -> None:
    """The study's one-off commands (e.g. train the autoencoder, encode the data), each once."""
    path = os.path.join(study_dir, PREPARED_FILE)
    done = progress.read_json(path, 'the study\'s record of prepare steps done', list) or []
    for cmd in prepare_commands(study, study_dir):
        shown = ' '.join(cmd[1:])  # without the interpreter's path, which may differ between machines
        if shown in done:
            continue
        _say(f'prepare: {shown}')
        rc = _call(cmd, os.path.join(study_dir, 'prepare.log'))
        if rc:
            raise RunFailed(f'prepare step exited with {rc}: {shown}; see {os.path.join(study_dir, "prepare.log")}')
        done.append(shown)
        writer.write_json(path, done)


def select(runs: list[Run], variants=None, seeds=None) -> list[Run]:
    return [r for r in runs if (not variants or r.variant in variants) and (seeds is None or r.seed in seeds)]


def run_study(study: Study, study_dir: str, parallel: int = 1, variants=None, seeds=None,
              cpus_per_run: int = 0) -> dict:
    """Every selected run, `parallel` at a time, each pinned to its own `cpus_per_run` CPUs if > 0;
    {run key: final state or 'failed: ...'}. Refuses to start (PinMismatch) unless every pinned input
    is the study's."""
    prepare(study, study_dir)
    pins = pinning.check(study.pins, study_dir)  # {} when the study pins nothing
    runs = select(plan(study, study_dir), variants, seeds)
    free = queue.Queue()
    for cpus in (cpu_slices(max(parallel, 1), cpus_per_run) if cpus_per_run else [None] * max(parallel, 1)):
        free.put(cpus)

    def one(r: Run) -> str:
        cpus = free.get()  # a slice no other running run holds
        try:
            return run_one(r, study.eval_steps, cpus, pins)
        finally:
            free.put(cpus)

    outcome = {}
    with concurrent.futures.ThreadPoolExecutor(max(parallel, 1)) as pool:
        futures = {pool.submit(one, r): r for r in runs}
        for fut in concurrent.futures.as_completed(futures):
            r = futures[fut]
            try:
                outcome[r.key] = fut.result()
            except RunFailed as e:
                _say(f'FAILED {e}')
                outcome[r.key] = f'failed: {e}'
    return {r.key: outcome[r.key] for r in runs}
