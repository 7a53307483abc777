"""What evaluation's caches save: one `--mode=evaluate` of a checkpoint, cold and warm.

A study evaluates ~100 checkpoints with the same programs against the same
reference set; three things used to be redone by every evaluation process:
compiling the samplers (and the decoder), training the digits feature MLP, and
decoding + featurising the reference set. Now JAX's persistent compilation
cache (main.py `--compilation_cache_dir`) and lct_jax's own caches
(lct_jax/cache_dirs.py) keep them. Measured here, in one invocation, each as a
fresh process (as the study runner starts them):

  cold          empty caches: everything computed (and stored)
  warm_no_xla   the lct_jax caches warm, JAX's compilation cache off
  warm          every cache warm

Reported: wall seconds and user + system CPU seconds of each (CPU time is the
steadier number on a shared machine), the ratios to cold, and whether every
evaluation row (FD, precision, recall) is identical across the three.

    python benchmarks/evaluation_caches.py --workdir W --checkpoint W/checkpoints/S \
        [--config configs/default.py] [--flag=--config.x=y ...] [--name NAME]
Writes benchmarks/evaluation_caches.json (one entry per --name) and .md. Each evaluation appends
its rows to W/results.json, as --mode=evaluate does: point it at a scratch copy of a run.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, 'benchmarks', 'evaluation_caches')


def evaluate(args, cache: str, xla: str) -> dict:
    cmd = [sys.executable, '-m', 'lct_jax.main', f'--config={args.config}', f'--workdir={args.workdir}',
           '--mode=evaluate', f'--checkpoint={args.checkpoint}', f'--compilation_cache_dir={xla}',
           f'--config.evaluation.comparison_dir={args.workdir}', *args.flag]
    env = {k: v for k, v in os.environ.items() if k != 'JAX_COMPILATION_CACHE_DIR'}
    env['LCT_JAX_CACHE'] = cache
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t = time.perf_counter()
    out = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if out.returncode:
        raise SystemExit(f'evaluate failed ({out.returncode}):\n{out.stderr[-3000:]}')
    rows = [json.loads(line) for line in out.stdout.splitlines() if line.startswith('{"run"')]
    return {'wall_s': round(wall, 2),
            'cpu_s': round((after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime), 2),
            'reference': next((line.split(':', 1)[1].split('(')[0].strip() for line in out.stdout.splitlines()
                               if line.startswith('reference features:')), None),
            'rows': [{k: r.get(k) for k in ('sampler', 'fid', 'precision', 'recall')} for r in rows]}


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--workdir', required=True)
    p.add_argument('--checkpoint', required=True)
    p.add_argument('--config', default='configs/default.py')
    p.add_argument('--flag', action='append', default=[], help='extra main.py flag (repeatable)')
    p.add_argument('--name', default='default')
    args = p.parse_args()
    with tempfile.TemporaryDirectory(prefix='lct_eval_caches_') as tmp:
        cache, xla = os.path.join(tmp, 'lct'), os.path.join(tmp, 'xla')
        runs = {'cold': evaluate(args, cache, xla),
                'warm_no_xla': evaluate(args, cache, ''),
                'warm': evaluate(args, cache, xla)}
        xla_files = sum(len(f) for _, _, f in os.walk(xla))
    cold = runs['cold']
    entry = {'config': args.config, 'flags': args.flag, 'checkpoint': args.checkpoint,
             'when': time.strftime('%Y-%m-%d %H:%M:%S'), 'load_average_1m': round(os.getloadavg()[0], 2),
             'xla_cache_files': xla_files,
             'rows_identical': all(r['rows'] == cold['rows'] for r in runs.values()),
             **{k: {x: v for x, v in r.items() if x != 'rows'} for k, r in runs.items()},
             'rows': cold['rows'],
             'cpu_ratio_warm_over_cold': round(runs['warm']['cpu_s'] / cold['cpu_s'], 3),
             'cpu_ratio_warm_no_xla_over_cold': round(runs['warm_no_xla']['cpu_s'] / cold['cpu_s'], 3),
             'wall_ratio_warm_over_cold': round(runs['warm']['wall_s'] / cold['wall_s'], 3)}
    results = json.load(open(OUT + '.json')) if os.path.exists(OUT + '.json') else {}
    results[args.name] = entry
    with open(OUT + '.json', 'w') as f:
        json.dump(results, f, indent=1)
    lines = ['# Evaluation caches: one `--mode=evaluate`, cold and warm', '',
             'Made by `python benchmarks/evaluation_caches.py` (see its docstring). CPU = user + system seconds of '
             'the evaluation process; wall on a shared machine (load beside each entry).', '',
             '| setting | load (1 min) | cold: wall / CPU s | lct_jax caches warm, no XLA cache | all warm | '
             'CPU warm / cold | rows identical |', '|---|---|---|---|---|---|---|']
    for name, e in results.items():
        lines.append(f'| {name} | {e["load_average_1m"]} | {e["cold"]["wall_s"]} / {e["cold"]["cpu_s"]} | '
                     f'{e["warm_no_xla"]["wall_s"]} / {e["warm_no_xla"]["cpu_s"]} | '
                     f'{e["warm"]["wall_s"]} / {e["warm"]["cpu_s"]} | {e["cpu_ratio_warm_over_cold"]} | '
                     f'{e["rows_identical"]} |')
    with open(OUT + '.md', 'w') as f:
        f.write('\n'.join(lines) + '\n')
    print(json.dumps(entry, indent=1))


if __name__ == '__main__':
    main()
