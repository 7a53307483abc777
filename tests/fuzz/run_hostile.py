"""The long hostile-work-directory fuzz: many mutated copies of a real run and exported study, each
through one command, and the table of outcomes (tests/fuzz/hostile.py says what a case is).

    python -m tests.fuzz.run_hostile [--count 1000] [--out benchmarks/fuzz_hostile] [--resume]

--resume reads <out>.json of an interrupted run (same --count and --seed) and runs the cases it
lacks: case i draws its mutation from rng([seed, i]) whatever ran before it, so the resumed
results are the uninterrupted run's.

Writes <out>.json (every case) and <out>.md (the table per command, the failures, the time).
The default test run does the same at a small count (tests/test_trust_boundary.py).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

from tests.fuzz import hostile

COLUMNS = ('inputs', 'ran', 'error', 'traceback', 'hang', 'crash', 'outside_writes', 'user_files_changed')


def markdown(results, seconds: float, count: int, resumed_at=None) -> str:
    table = hostile.table(results)
    lines = [f'# Hostile work directories: {len(results)} inputs, {len(table)} commands', '',
             f'`python -m tests.fuzz.run_hostile --count {count}`: {seconds / 60:.1f} min on this machine (2 CPU '
             'cores shared with a study). Each input is a copy of a real run and a real exported study with one '
             'file mutated (a `..` path, an absolute path, NaN, Infinity, a huge or negative number, a wrong type '
             'in a JSON value) or one file or folder replaced by a symlink to the user\'s folder, run through one '
             'command. ran = finished; error = refused with one line (exit 2 under lct_jax.main). A failure is a '
             'traceback, a hang, a crash, a file written outside the roots the command was given, or a user\'s file '
             'changed.' + (f' Run in two parts: the first stopped after {resumed_at} cases (a machine restart), '
                           'the rest with `--resume` (case i draws its mutation from rng([seed, i]), so these are the '
                           'uninterrupted run\'s cases; the time is the two parts\' sum).' if resumed_at else ''),
             '', '| command | ' + ' | '.join(COLUMNS) + ' |', '|---|' + '---|' * len(COLUMNS)]
    for command, row in sorted(table.items()):
        lines.append(f'| {command} | ' + ' | '.join(str(row.get(c, 0)) for c in COLUMNS) + ' |')
    total = {c: sum(row.get(c, 0) for row in table.values()) for c in COLUMNS}
    lines.append('| **all** | ' + ' | '.join(str(total[c]) for c in COLUMNS) + ' |')
    kinds = {}
    for r in results:
        kinds[r['kind']] = kinds.get(r['kind'], 0) + 1
    files = sorted({r['target'] for r in results})
    lines += ['', f'Kinds: {kinds}. Files and folders mutated ({len(files)}): ' + ', '.join(f'`{f}`' for f in files)]
    bad = [r for r in results if hostile.bad(r)]
    lines += ['', f'## Failures: {len(bad)}', '']
    lines += [f'- {r["command"]}: {r["mutation"]}: {r["outcome"]} {r["detail"][:200]} {r["outside_writes"]} '
              f'{r["user_files_changed"]}' for r in bad[:50]]
    errors = {}
    for r in results:
        if r['outcome'] == 'error':
            head = r['detail'].split(':')[0]
            errors[head] = errors.get(head, 0) + 1
    lines += ['', '## The refusals, by kind', '', *(f'- {k}: {v}' for k, v in sorted(errors.items(), key=lambda kv: -kv[1]))]
    return '\n'.join(lines) + '\n'


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--count', type=int, default=1000)
    p.add_argument('--seed', type=int, default=1)
    p.add_argument('--work', default=os.path.join(os.environ.get('TMPDIR', '/tmp'), 'lct_jax_hostile_run'))
    p.add_argument('--out', default=os.path.join(hostile.ROOT, 'benchmarks', 'fuzz_hostile'))
    p.add_argument('--resume', action='store_true', help="continue <out>.json's interrupted run")
    a = p.parse_args(argv)
    a.resumed_at = None
    results, earlier = [], 0.0
    if a.resume:
        done = json.load(open(a.out + '.json'))
        if done['count'] != a.count or done.get('seed', a.seed) != a.seed:
            p.error(f"{a.out}.json ran --count {done['count']} --seed {done.get('seed')}: resume with those")
        results, earlier = done['cases'], done['seconds']
        a.resumed_at = done.get('resumed_at') or len(results)
    t = time.time() - earlier

    def log(r):
        results.append(r)
        if len(results) % 25 == 0:
            print(f'{len(results)}/{a.count} cases, {sum(hostile.bad(x) for x in results)} failures, '
                  f'{time.time() - t:.0f} s', flush=True)
            write(results, time.time() - t, a)

    hostile.run_cases(hostile.plan(a.count, a.seed)[len(results):], a.work, seed=a.seed, log=log, first=len(results))
    seconds = time.time() - t
    write(results, seconds, a)
    bad = sum(hostile.bad(r) for r in results)
    print(f'{len(results)} inputs, {bad} failures, {seconds:.0f} s: {a.out}.md')
    return 1 if bad else 0


def write(results, seconds, a):
    with open(a.out + '.json', 'w') as f:
        json.dump({'seconds': round(seconds, 1), 'count': a.count, 'seed': a.seed, 'resumed_at': a.resumed_at, 'table': hostile.table(results), 'cases': results},
                  f, indent=1)
    with open(a.out + '.md', 'w') as f:
        f.write(markdown(results, seconds, a.count, a.resumed_at))


if __name__ == '__main__':
    sys.exit(main())
