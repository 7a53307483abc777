"""Studies side by side: the same variants in several reports (results.json), one table.

    python -m lct_jax.study.compare docs/study/pixel/results.json docs/study/latent/results.json \
        [--step 2500] [--late] [--out docs/study/side_by_side.md]
    python -m lct_jax.study.compare docs/study/latent/results.json --baseline iLCT   # Δ against iLCT

Per variant and sampler: each study's FD (mean ± std, seeds) and its paired difference
against that study's baseline with the Student-t 95% interval and what it reads ("lower FD",
"higher FD", "no evidence": lct_jax/study/report.py). FD values of different studies live in
different feature spaces; the differences' signs and readings are what compare.
"""
from __future__ import annotations

import argparse
import os
import sys

from lct_jax import writer
from lct_jax.study import aggregate
from lct_jax.study.report import _mean_std, _signed_delta, _verdict
from lct_jax.untrusted import UnreadableFileError, read_json


def rebased(result: dict, baseline: str) -> dict:
    """`result` with its summaries made again from its per-run rows (`runs`) with another variant as
    the baseline of the paired differences (e.g. MeanFlow against iLCT as well as against sLCT)."""
    runs = result.get('runs')
    if not isinstance(runs, list) or not runs:
        raise UnreadableFileError(f"--baseline {baseline}: the report holds no per-run rows ('runs') to pair")
    if not any(r.get('variant') == baseline for r in runs):
        have = sorted({str(r.get('variant')) for r in runs})
        raise UnreadableFileError(f'--baseline {baseline}: no run of that variant in the report; it has {have}')
    variants = list(result.get('variants') or dict.fromkeys(r['variant'] for r in runs))
    late_rows, late_steps = aggregate.late_average_rows(runs)
    return dict(result, baseline=baseline, summary=aggregate.summarise(runs, variants, baseline),
                summary_late_average={'steps': late_steps,
                                      'summary': aggregate.summarise(late_rows, variants, baseline)})


def summary_of(result: dict, late: bool) -> list[dict]:
    return result['summary_late_average']['summary'] if late else result['summary']


def entry_at(summary: list[dict], variant: str, sampler: str, step: int) -> dict | None:
    return next((e for e in summary if e['variant'] == variant and e['sampler'] == sampler and e['step'] == step),
                None)


def cell(e: dict | None) -> tuple[str, str]:
    """('FD mean ± std (n)', 'Δ [t 95%] reading') of one summary entry, '–' where absent."""
    if e is None or not e.get('n'):
        return '–', '–'
    fd = f'{_mean_std(e, 2)} ({e["n"]})'
    d = e.get('vs_baseline')
    if not d:
        return fd, '–'
    mean, t = _signed_delta(d)
    return fd, f'{mean} {t} {_verdict(d)}'


def side_by_side(results: dict[str, dict], step: int | None = None, late: bool = False) -> str:
    """A markdown table of every variant (in the first study's order) x sampler across `results`
    ({label: results.json}); `step` defaults to each study's final step (the late average's last)."""
    labels = list(results)
    steps = {k: step if step is not None else
             (r['summary_late_average']['steps'][-1] if late else r['final_step']) for k, r in results.items()}
    variants = list(dict.fromkeys(v for r in results.values() for v in r['variants']))
    samplers = sorted({e['sampler'] for r in results.values() for e in summary_of(r, late)})
    head = ['variant', 'sampler'] + [f'{k} {h}' for k in labels for h in ('FD (seeds)', 'Δ vs baseline [t 95%]')]
    lines = ['| ' + ' | '.join(head) + ' |', '|' + '---|' * len(head)]
    for v in variants:
        for s in samplers:
            cells = [c for k in labels for c in cell(entry_at(summary_of(results[k], late), v, s, steps[k]))]
            lines.append(f'| {v} | {s} | ' + ' | '.join(cells) + ' |')
    what = ('each seed\'s FD averaged over steps ' + ', '.join(
        f'{k}: {results[k]["summary_late_average"]["steps"]}' for k in labels)) if late else \
        'FD at step ' + ', '.join(f'{k}: {steps[k]}' for k in labels)
    return (f'{what}; baseline ' + ', '.join(f'{k}: {results[k]["baseline"]}' for k in labels)
            + '.\n\n' + '\n'.join(lines) + '\n')


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog='python -m lct_jax.study.compare', description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('results', nargs='+', help='results.json files written by `python -m lct_jax.study report`')
    p.add_argument('--step', type=int, default=None)
    p.add_argument('--late', action='store_true', help='the late-average summaries instead of one step')
    p.add_argument('--out', default='')
    p.add_argument('--replace', action='store_true', help='replace --out even if it holds more numbers')
    p.add_argument('--labels', nargs='+', default=None,
                   help="one column label per results file (default: each study's name)")
    p.add_argument('--baseline', default='', help="pair against this variant instead of each study's baseline")
    a = p.parse_args(argv)
    if a.labels and len(a.labels) != len(a.results):
        p.error(f'--labels: {len(a.labels)} labels for {len(a.results)} results files')

    def make(results):
        if a.baseline:
            results = {k: rebased(r, a.baseline) for k, r in results.items()}
        return side_by_side(results, a.step, a.late)

    emit(table_of(a.results, a.labels, make), a.out, a.replace)
    return 0


def read_results(paths: list[str], labels: list[str] | None = None) -> dict[str, dict]:
    """{label: results.json}: the given labels, or each study's name (primed when repeated)."""
    results = {}
    for i, path in enumerate(paths):
        r = read_json(path, 'a study report (results.json)', expect=dict)
        for key in ('summary', 'summary_late_average'):
            if not isinstance(r.get(key, []), (list, dict)):
                raise UnreadableFileError(f'{path}: a study report\'s {key!r} is a {type(r[key]).__name__}')
        label = labels[i] if labels else (r.get('study') or os.path.basename(os.path.dirname(path)))
        while label in results:  # the same study twice (e.g. before and after more seeds)
            label += "'"
        results[label] = r
    return results


def table_of(paths: list[str], labels, make) -> str:
    """make(read_results(paths, labels)): a table of study reports, where a report whose content is
    not what the writer makes (a damaged or hand-edited results.json) is one error naming the files."""
    results = read_results(paths, labels)
    try:
        return make(results)
    except (KeyError, TypeError, ValueError, IndexError, AttributeError, ZeroDivisionError) as e:
        raise UnreadableFileError(f'{", ".join(paths)}: not the study reports `python -m lct_jax.study report` '
                                  f'writes (a table could not be made of them: {type(e).__name__}: {e})') from None


def emit(text: str, out: str = '', replace: bool = False) -> None:
    """Print a table, and write it to `out` if given: beside it instead when `out` holds more
    numbers than the new table (lct_jax/writer.py's keep rule), unless `replace`."""
    print(text, end='')
    if out:
        written = writer.write_keeping(out, text, writer.count_numbers, replace=replace)
        if written != out:
            print(f'note: {out} holds more numbers than this table; kept, the new one written to {written} '
                  '(--replace to replace it)', file=sys.stderr)


if __name__ == '__main__':
    sys.exit(main())
