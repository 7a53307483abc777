"""Several reports of one study pooled into one: each (report, seed) a replicate.

    python -m lct_jax.study.pool docs/study/latent_first_autoencoder/results.json \
        docs/study/latent/results.json --labels first committed [--step 2500 | --late] [--out F]

When the same study was run on two draws of something the seeds do not cover (here: two
autoencoders, trained from one config on two machines), its runs are replicates of the same
question. The paired difference (variant - baseline) is taken within each replicate, same report
and same seed, so a report's own offset (one autoencoder's FD scale) cancels; the differences of
every report then go into one Student-t interval (n - 1 degrees of freedom: t = 2.57 at 6
replicates instead of 4.30 at 3). That assumes the effect is about the same in every report;
each report's own mean difference is printed beside the pooled one so a reader can see whether
it is. FD means pooled across reports mix scales and are shown only for completeness.
"""
from __future__ import annotations

import argparse
import sys

from lct_jax.study import aggregate
from lct_jax.study.compare import emit, table_of
from lct_jax.study.report import _mean_std, _signed_delta, _verdict


def pooled_rows(results: dict[str, dict], late: bool = False, step: int | None = None) -> tuple[list[dict], int]:
    """Every report's rows with seed -> '<label>:<seed>' (one replicate each), at one step: `step`,
    or the last step every report has; with `late`, each seed averaged over its last two steps."""
    rows, finals = [], []
    for label, r in results.items():
        own = r['runs']
        if late:
            own, steps = aggregate.late_average_rows(own)
            finals.append(steps[-1] if steps else None)
        else:
            finals.append(aggregate.final_step(own))
        rows += [{**row, 'seed': f'{label}:{row["seed"]}', 'report': label} for row in own]
    if step is None or late:
        step = min(s for s in finals if s is not None)
    return [row for row in rows if row['step'] == step], step


def pooled_table(results: dict[str, dict], step: int | None = None, late: bool = False) -> str:
    labels = list(results)
    rows, final = pooled_rows(results, late, step)
    variants = list(dict.fromkeys(v for r in results.values() for v in r['variants']))
    baseline = next(iter(results.values()))['baseline']
    if any(r['baseline'] != baseline for r in results.values()):
        raise ValueError(f'the reports have different baselines: {[r["baseline"] for r in results.values()]}')
    summary = aggregate.summarise(rows, variants, baseline)
    head = ['variant', 'sampler', 'replicates', 'FD mean ± std (mixed scales)', 'pooled Δ vs ' + baseline,
            'Δ t 95%', 'Δ reads'] + [f'Δ {k} (n)' for k in labels]
    # each report's own paired differences, {(label, variant, sampler): vs_baseline}, computed once
    own = {(k, x['variant'], x['sampler']): x.get('vs_baseline') for k in labels
           for x in aggregate.summarise([r for r in rows if r['report'] == k], variants, baseline)}
    lines = ['| ' + ' | '.join(head) + ' |', '|' + '---|' * len(head)]
    for e in summary:
        d = e.get('vs_baseline')
        cells = [*_signed_delta(d), _verdict(d)] if d else ['–', '–', '–']
        for k in labels:
            pd = own.get((k, e['variant'], e['sampler']))
            cells.append(f'{pd["mean"]:+.2f} ({pd["n"]})' if pd else '–')
        lines.append(f'| {e["variant"]} | {e["sampler"]} | {e["n"]} | {_mean_std(e, 2)} | ' + ' | '.join(cells) + ' |')
    what = (f'each replicate\'s FD averaged over its last two evaluated steps (the later: {final})' if late
            else f'FD at step {final}')
    return (f'{what}; replicates = (report, seed) over {", ".join(labels)}; Δ paired within each replicate, '
            'one Student-t interval over all of them.\n\n' + '\n'.join(lines) + '\n')


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog='python -m lct_jax.study.pool', description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('results', nargs='+', help='results.json files of one study, written by `lct_jax.study report`')
    p.add_argument('--labels', nargs='+', default=None, help='one label per results file (default: a, b, ...)')
    p.add_argument('--step', type=int, default=None, help='one step instead of the last one all reports have')
    p.add_argument('--late', action='store_true', help='each seed averaged over its last two evaluated steps')
    p.add_argument('--out', default='')
    p.add_argument('--replace', action='store_true', help='replace --out even if it holds more numbers')
    a = p.parse_args(argv)
    labels = a.labels or [chr(ord('a') + i) for i in range(len(a.results))]
    if len(labels) != len(a.results):
        p.error(f'--labels: {len(labels)} labels for {len(a.results)} results files')
    emit(table_of(a.results, labels, lambda r: pooled_table(r, a.step, a.late)), a.out, a.replace)
    return 0


if __name__ == '__main__':
    sys.exit(main())
