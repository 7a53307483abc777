"""How to spend a CPU-only machine's cores on a study: K runs pinned to their own cores, or one at a time.

A study is many independent training runs. On this machine XLA's CPU backend
uses a second core poorly for the small default step (benchmarks/README.md:
the step is barely faster with two threads than with one), so two runs each
pinned to one core (`python -m lct_jax.study run ... --parallel 2
--cpus-per-run 1`) should finish more runs per hour than the same two runs one
after the other on both cores. Measured here, in one invocation:

  sequential  run A on every core, then run B on every core
  pinned      runs A and B at once, each pinned to its own core(s)

Each run is `python -m lct_jax.main --config configs/default.py` for
--steps steps (startup, encode and compile included, as in a study's run),
in a fresh work directory. Reported: wall seconds of each arrangement, their
ratio (sequential / pinned: > 1 means pinning finishes the pair sooner), and
the steady-state steps/s of each run (from its metrics rows after the first).

    python benchmarks/study_throughput.py [--steps 400]
Writes benchmarks/study_throughput.json (and .md).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from lct_jax.study.runner import cpu_slices, pinned_env  # noqa: E402


def command(workdir: str, steps: int) -> list[str]:
    return [sys.executable, '-m', 'lct_jax.main', '--config=configs/default.py', f'--workdir={workdir}',
            f'--config.total_steps={steps}', '--config.log_every=50', f'--config.checkpoint_every={steps}',
            '--config.sample_every=1000000']


def start(workdir: str, steps: int, cpus=None) -> subprocess.Popen:
    pin = (lambda: os.sched_setaffinity(0, cpus)) if cpus else None
    log = open(workdir + '.log', 'w')
    return subprocess.Popen(command(workdir, steps), cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
                            env=pinned_env(cpus), preexec_fn=pin)


def steady_rate(workdir: str) -> float:
    """Mean steps/s over the logged intervals after the first (which holds the compile)."""
    rows = [json.loads(line) for line in open(os.path.join(workdir, 'metrics.jsonl'))]
    rates = [r['steps_per_sec'] for r in rows[1:]]
    return sum(rates) / len(rates)


def finish(procs, workdirs) -> None:
    for p, wd in zip(procs, workdirs):
        if p.wait() != 0:
            raise RuntimeError(f'{wd} failed; see {wd}.log:\n' + open(wd + '.log').read()[-2000:])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--steps', type=int, default=400)
    ap.add_argument('--runs', type=int, default=2, help='runs in the pair (one per CPU slice)')
    ap.add_argument('--out', default=os.path.join(ROOT, 'benchmarks', 'study_throughput'))
    a = ap.parse_args()
    cpus = sorted(os.sched_getaffinity(0))
    per_run = len(cpus) // a.runs
    slices = cpu_slices(a.runs, per_run)
    result = dict(steps=a.steps, runs=a.runs, cpus=len(cpus), cpus_per_run=per_run)
    with tempfile.TemporaryDirectory() as tmp:
        dirs = [os.path.join(tmp, f'seq{i}') for i in range(a.runs)]
        t0 = time.perf_counter()
        for wd in dirs:
            finish([start(wd, a.steps)], [wd])
        result['sequential_seconds'] = time.perf_counter() - t0
        result['sequential_steps_per_sec'] = [steady_rate(wd) for wd in dirs]
        print(f'sequential: {result["sequential_seconds"]:.1f} s', flush=True)

        dirs = [os.path.join(tmp, f'pin{i}') for i in range(a.runs)]
        t0 = time.perf_counter()
        finish([start(wd, a.steps, s) for wd, s in zip(dirs, slices)], dirs)
        result['pinned_seconds'] = time.perf_counter() - t0
        result['pinned_steps_per_sec'] = [steady_rate(wd) for wd in dirs]
        print(f'pinned: {result["pinned_seconds"]:.1f} s', flush=True)
    result['sequential_over_pinned'] = result['sequential_seconds'] / result['pinned_seconds']
    result['steady_throughput_ratio'] = (sum(result['pinned_steps_per_sec'])
                                         / (sum(result['sequential_steps_per_sec']) / a.runs))
    with open(a.out + '.json', 'w') as f:
        json.dump(result, f, indent=1)
    seq, pin = result['sequential_steps_per_sec'], result['pinned_steps_per_sec']
    md = [f'# Study throughput: {a.runs} runs pinned to {per_run} CPU(s) each vs one after the other',
          '', f'Made by `python benchmarks/study_throughput.py --steps {a.steps}` on {len(cpus)} CPUs '
          f'(one invocation; each run is `configs/default.py` for {a.steps} steps, startup and compile included).',
          '', '| arrangement | wall s for the pair | steady steps/s per run |', '|---|---|---|',
          f'| sequential, every core | {result["sequential_seconds"]:.1f} | ' + ', '.join(f'{r:.2f}' for r in seq) + ' |',
          f'| pinned, {per_run} CPU(s) each, at once | {result["pinned_seconds"]:.1f} | '
          + ', '.join(f'{r:.2f}' for r in pin) + ' |',
          '', f'Sequential / pinned wall time: **{result["sequential_over_pinned"]:.2f}**; steady-state '
          f'throughput, pinned pair over one unpinned run: **{result["steady_throughput_ratio"]:.2f}**.']
    with open(a.out + '.md', 'w') as f:
        f.write('\n'.join(md) + '\n')
    print('\n'.join(md))
    return 0


if __name__ == '__main__':
    sys.exit(main())
