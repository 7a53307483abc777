"""Goldens of the training step: the logged metrics of 40 steps of three objectives, logged every step.

    python tests/golden/record.py            # compare with the committed goldens (exit 1 on any drift)
    python tests/golden/record.py --write    # record them (only before a change meant to alter training)

Why: a refactor that moves the objectives, the step or the pipeline must not change a single
number a run logs. Each golden is `python -m lct_jax.main --config <config> --workdir <tmp>
--config.total_steps=40 --config.log_every=1` (the curriculum then has 8-step stages, so N moves
five times), and its metrics.jsonl rows without the wall-clock columns. tests/test_golden.py
(slow) runs this comparison; the worst relative difference is printed.
"""
import argparse
import json
import math
import os
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
CONFIGS = {'default': 'configs/default.py', 'meanflow': 'configs/default.py:meanflow', 'ldm': 'configs/default.py:ldm'}
FLAGS = ['--config.total_steps=40', '--config.log_every=1', '--config.checkpoint_every=40',
         '--config.sample_every=40']
CLOCK = ('steps_per_sec', 'examples_per_sec', 'time', 'wall_time', 'elapsed')
# Columns a change removed on purpose, with why; every other number must stay identical.
REMOVED = {
    # The LDM logged placeholder `num_scales` (1000) and `c` (3.45) only to keep sLCT's log line; the
    # layout change (objectives declare their metrics) dropped them. They were constants, not results.
    'ldm': ('c', 'num_scales'),
}


def logged_metrics(config: str, workdir: str) -> list[dict]:
    cmd = [sys.executable, '-m', 'lct_jax.main', f'--config={config}', f'--workdir={workdir}'] + FLAGS
    subprocess.run(cmd, cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
    rows = [json.loads(line) for line in open(os.path.join(workdir, 'metrics.jsonl'))]
    return [{k: v for k, v in r.items() if k not in CLOCK} for r in rows]


def worst_difference(golden: list[dict], now: list[dict]) -> tuple[float, str]:
    """(the largest relative difference over every logged number, where), inf if the rows differ in kind."""
    if len(golden) != len(now):
        return math.inf, f'{len(golden)} rows recorded, {len(now)} now'
    worst, where = 0.0, ''
    for i, (g, n) in enumerate(zip(golden, now)):
        if set(g) != set(n):
            return math.inf, f'row {i}: keys {sorted(set(g) ^ set(n))} differ'
        for k in g:
            a, b = g[k], n[k]
            if isinstance(a, (int, float)) and isinstance(b, (int, float)):
                d = 0.0 if a == b or (a != a and b != b) else abs(a - b) / max(abs(a), abs(b), 1e-30)
            else:
                d = 0.0 if a == b else math.inf
            if d > worst:
                worst, where = d, f'row {i} (step {g.get("step")}) {k}: {a} -> {b}'
    return worst, where


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument('--write', action='store_true')
    p.add_argument('--only', nargs='*', default=list(CONFIGS))
    a = p.parse_args()
    bad = 0
    for name in a.only:
        with tempfile.TemporaryDirectory() as tmp:
            now = logged_metrics(CONFIGS[name], tmp)
        path = os.path.join(HERE, f'{name}.jsonl')
        if a.write:
            with open(path, 'w') as f:
                f.writelines(json.dumps(r, sort_keys=True) + '\n' for r in now)
            print(f'{name}: {len(now)} rows recorded in {path}')
            continue
        golden = [{k: v for k, v in json.loads(line).items() if k not in REMOVED.get(name, ())}
                  for line in open(path)]
        worst, where = worst_difference(golden, now)
        dropped = f' ({", ".join(REMOVED[name])} removed on purpose)' if name in REMOVED else ''
        print(f'{name}: {len(now)} rows, worst relative difference {worst:.3g}{dropped}'
              + (f' ({where})' if worst else ''))
        bad += worst != 0.0
    return 1 if bad else 0


if __name__ == '__main__':
    sys.exit(main())
