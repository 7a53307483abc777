"""Running a study's runs on this machine: each an ordinary `lct_jax.main` process.

A run is trained by `python -m lct_jax.main --mode=train` in its own work
directory (which resumes from its latest checkpoint), then each chosen
checkpoint not evaluated yet is evaluated by `--mode=evaluate --checkpoint=...`
(rows appended to <workdir>/results.json). Finished work is never redone; a
run whose directory is locked by a live job is left to that job. Output goes
to <workdir>/study_logs/, one line per event to the console.
"""
from __future__ import annotations

import concurrent.futures
import json
import os
import subprocess
import sys
import time

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


def _call(cmd: list[str], log_path: str) -> int:
    os.makedirs(os.path.dirname(log_path), exist_ok=True)
    with open(log_path, 'a') as log:
        log.write(f'$ {" ".join(cmd)}\n')
        log.flush()
        return subprocess.call(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)


class RunFailed(RuntimeError):
    pass


def run_one(run: Run, eval_steps=()) -> str:
    """Train (or resume) and evaluate one run; returns its final state. Skips what is done."""
    state = progress.run_state(run.workdir, eval_steps)
    if state['state'] == 'running':
        _say(f'{run.key}: locked by a live job, left to it')
        return 'running'
    logs = os.path.join(run.workdir, 'study_logs')
    if state['state'] in ('missing', 'partial'):
        _say(f'{run.key}: training' + (f' (resuming from step {state["step"]})' if state['step'] else ''))
        rc = _call(train_command(run), os.path.join(logs, 'train.log'))
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
        rc = _call(evaluate_command(run, step), os.path.join(logs, 'evaluate.log'))
        if rc:
            raise RunFailed(f'{run.key}: evaluation at step {step} exited with {rc}; '
                            f'see {os.path.join(logs, "evaluate.log")}')
    _say(f'{run.key}: done')
    return 'done'


def prepare(study: Study, study_dir: str) -> None:
    """The study's one-off commands (e.g. train the autoencoder, encode the data), each once."""
    path = os.path.join(study_dir, PREPARED_FILE)
    done = progress.read_json(path) or []
    for cmd in prepare_commands(study, study_dir):
        shown = ' '.join(cmd[1:])  # without the interpreter's path, which may differ between machines
        if shown in done:
            continue
        _say(f'prepare: {shown}')
        rc = _call(cmd, os.path.join(study_dir, 'prepare.log'))
        if rc:
            raise RunFailed(f'prepare step exited with {rc}: {shown}; see {os.path.join(study_dir, "prepare.log")}')
        done.append(shown)
        os.makedirs(study_dir, exist_ok=True)
        with open(path + '.tmp', 'w') as f:
            json.dump(done, f, indent=1)
        os.replace(path + '.tmp', path)


def select(runs: list[Run], variants=None, seeds=None) -> list[Run]:
    return [r for r in runs if (not variants or r.variant in variants) and (seeds is None or r.seed in seeds)]


def run_study(study: Study, study_dir: str, parallel: int = 1, variants=None, seeds=None) -> dict:
    """Every selected run, `parallel` at a time; {run key: final state or 'failed: ...'}."""
    prepare(study, study_dir)
    runs = select(plan(study, study_dir), variants, seeds)
    outcome = {}
    if parallel <= 1:
        for r in runs:
            try:
                outcome[r.key] = run_one(r, study.eval_steps)
            except RunFailed as e:
                _say(f'FAILED {e}')
                outcome[r.key] = f'failed: {e}'
        return outcome
    with concurrent.futures.ThreadPoolExecutor(parallel) as pool:
        futures = {pool.submit(run_one, r, study.eval_steps): r for r in runs}
        for fut in concurrent.futures.as_completed(futures):
            r = futures[fut]
            try:
                outcome[r.key] = fut.result()
            except RunFailed as e:
                _say(f'FAILED {e}')
                outcome[r.key] = f'failed: {e}'
    return outcome
