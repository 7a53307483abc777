"""The long fuzz run: many mutated inputs per reader, the table of outcomes, and real commands.

    python -m tests.fuzz.run [--per-reader 70] [--commands 2] [--out benchmarks/fuzz]

Writes <out>.json (every case) and <out>.md (the table per reader, the failures, the time).
The default test run does the same at a small count (tests/test_fuzz.py).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

from tests.fuzz import harness, targets

FAILURES = ('error-unnamed', 'traceback', 'wrong', 'hang', 'crash', 'changed', 'harness-error')


def markdown(results, commands, seconds: float, per_reader: int) -> str:
    table = harness.outcome_table(results)
    cols = ['same', 'valid-different', 'error', *FAILURES]
    lines = [f'# Fuzz run: {len(results)} mutated inputs, {len(table)} readers', '',
             f'`python -m tests.fuzz.run --per-reader {per_reader}`: {seconds / 60:.1f} min on this machine '
             f'(2 shared CPU cores). Outcomes (tests/fuzz/harness.py): same = the unmutated result; '
             'valid-different = another result from a file an independent decoder accepts; error = one error '
             'whose first line names the file (exit code 2 under lct_jax.main). Every other column is a failure.', '',
             '| reader | inputs | ' + ' | '.join(cols) + ' |', '|---|---|' + '---|' * len(cols)]
    for reader, row in table.items():
        lines.append(f'| {reader} | {sum(row.values())} | ' + ' | '.join(str(row.get(c, 0)) for c in cols) + ' |')
    total = {c: sum(row.get(c, 0) for row in table.values()) for c in cols}
    lines.append(f'| **all** | {len(results)} | ' + ' | '.join(str(total[c]) for c in cols) + ' |')
    mutators = sorted({r['mutator'] for r in results})
    lines += ['', f'Mutators: {", ".join(mutators)} (tests/fuzz/mutate.py).', '',
              f'## Real commands ({len(commands)}): exit code 2, one `error:` line naming the file, nothing else changed', '',
              '| command | exit code | ok | seconds | error line |', '|---|---|---|---|---|']
    for c in commands:
        lines.append(f'| {c["command"]} | {c["rc"]} | {"yes" if c["ok"] else "NO"} | {c["seconds"]} | '
                     f'{c["error_line"][:160].replace("|", "/")} |')
    bad = [r for r in results if r['outcome'] in FAILURES]
    lines += ['', f'## Failures: {len(bad)}', '']
    lines += [f'- {r["reader"]}: {r["file"]} {r["mutator"]}: {r["outcome"]} {r["detail"][:200]}' for r in bad[:50]]
    return '\n'.join(lines) + '\n'


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--per-reader', type=int, default=70)
    p.add_argument('--commands', type=int, default=2, help='rounds of the real commands')
    p.add_argument('--seed', type=int, default=1)
    p.add_argument('--work', default=os.path.join(os.environ.get('TMPDIR', '/tmp'), 'lct_jax_fuzz_run'))
    p.add_argument('--out', default=os.path.join(harness.ROOT, 'benchmarks', 'fuzz'))
    a = p.parse_args(argv)
    t = time.time()
    readers = targets.readers(harness.seed_root())
    results = harness.run_cases(harness.plan(readers, a.per_reader, a.seed), os.path.join(a.work, 'cases'),
                                seed=a.seed)
    commands = harness.real_commands(os.path.join(a.work, 'commands'), a.commands, a.seed)
    seconds = time.time() - t
    with open(a.out + '.json', 'w') as f:
        json.dump({'seconds': round(seconds, 1), 'per_reader': a.per_reader, 'table': harness.outcome_table(results),
                   'commands': commands, 'cases': results}, f, indent=1)
    with open(a.out + '.md', 'w') as f:
        f.write(markdown(results, commands, seconds, a.per_reader))
    bad = sum(r['outcome'] in FAILURES for r in results) + sum(not c['ok'] for c in commands)
    print(f'{len(results)} inputs, {len(commands)} commands, {bad} failures, {seconds:.0f} s: {a.out}.md')
    return 1 if bad else 0


if __name__ == '__main__':
    sys.exit(main())
