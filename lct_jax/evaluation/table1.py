"""Our results beside the paper's Table 1: one comparison per dataset, or the whole table.

Each run's `--mode=evaluate` appends rows to <workdir>/results.json, each
naming its dataset, method (sLCT | iLCT | LDM-8† | sLCT:<ablation>), sampler
and NFE. This module gathers those rows from a set of work directories and
lays them out against `paper_table1.TABLE1`:

  python -m lct_jax.evaluation.table1 W/celebahq_slct W/celebahq_ilct W/celebahq_ldm ... [--out table1.md]

(a directory without results.json is searched one level down, so `W` alone works).
"""
from __future__ import annotations

import argparse
import glob
import os
import sys

from lct_jax import writer
from lct_jax.evaluation.paper_table1 import COMPARED, TABLE1, lookup
from lct_jax.names import check_component
from lct_jax.untrusted import UnreadableFileError, read_json


def results_files(paths) -> list[str]:
    files = []
    for p in paths:
        if os.path.isfile(p):
            files.append(p)
        elif os.path.exists(os.path.join(p, 'results.json')):
            files.append(os.path.join(p, 'results.json'))
        else:
            files += sorted(glob.glob(os.path.join(p, '*', 'results.json')))
    return files


ROW_FORMAT = 'lct_jax.evaluate/1'   # each row --mode=evaluate writes carries it (results.append_rows)


# the types a row's fields must have (None allowed: a paper number or a recall that does not exist)
ROW_FIELDS = {'run': str, 'checkpoint': str, 'dataset': str, 'method': str, 'sampler': str, 'features': str,
              'pr_features': str, 'nfe': int, 'num_samples': int, 'step': int, 'fid': (int, float),
              'paper_fid': (int, float), 'precision': (int, float), 'recall': (int, float), 'paper_recall': (int, float)}
ROW_FIELD_NAMES = {k: 'string' if v is str else 'whole number' if v is int else 'number' for k, v in ROW_FIELDS.items()}


def evaluation_rows(path: str) -> tuple[list[dict] | None, str]:
    """(rows, '') if `path` holds evaluation results: a JSON list of row dicts, each naming its
    sampler and FID (rows written since the format tag carry `format`: ROW_FORMAT); else
    (None, why not), e.g. a study report (a JSON object) or a damaged file, which share the name."""
    try:
        value = read_json(path, "a run's evaluation rows")
    except (UnreadableFileError, OSError) as e:
        return None, str(e).replace(f'{path}: ', '').replace(f'{path} ', '')
    if isinstance(value, dict):
        return None, ('a JSON object (a study report\'s results.json, by its keys)' if 'runs' in value
                      else 'a JSON object, not a list of evaluation rows')
    if not isinstance(value, list):
        return None, f'a JSON {type(value).__name__}, not a list of evaluation rows'
    for i, row in enumerate(value):
        if not isinstance(row, dict) or 'sampler' not in row or 'fid' not in row:
            return None, f'item {i} is not an evaluation row (a JSON object with sampler and fid)'
        if row.get('format', ROW_FORMAT) != ROW_FORMAT:
            return None, f'item {i} has format {row.get("format")!r}; this code reads {ROW_FORMAT!r}'
        for key, kinds in ROW_FIELDS.items():
            if key in row and not (row[key] is None or isinstance(row[key], kinds)) or isinstance(row.get(key), bool):
                return None, f'item {i}: {key!r} = {str(row[key])[:40]!r} is not a {ROW_FIELD_NAMES[key]}'
    return value, ''


def load_rows(paths, say=None) -> list[dict]:
    """Every row of every evaluation results.json found, the latest evaluation of each (run, sampler)
    only. Any other file of that name (a study report, a damaged file) is skipped with one line
    naming it, through `say` (default: stderr)."""
    say = say or (lambda line: print(line, file=sys.stderr, flush=True))
    latest = {}
    for f in results_files(paths):
        rows, why = evaluation_rows(f)
        if rows is None:
            say(f'comparison: skipped {f}: {why}')
            continue
        for row in rows:
            latest[(row.get('run'), row.get('sampler'), f)] = row   # later rows replace earlier ones
    return list(latest.values())


def _num(v, digits=2):
    return '–' if v is None else f'{v:.{digits}f}'


def _ours(rows, dataset, method, nfe):
    return [r for r in rows if r.get('dataset') == dataset and r.get('method') == method and r.get('nfe') == nfe]


def _our_cells(r):
    if r is None:
        return ['', '', '', '']
    feats = r.get('features', '')
    if r.get('pr_features') and r.get('pr_features') != feats:
        feats += f" / {r['pr_features']}"
    return [_num(r.get('fid')), _num(r.get('recall')), feats, f"{r.get('run')} ({r.get('checkpoint')})"]


HEADER = ('| Model | NFE | FID (paper) | Recall (paper) | Epochs | Total BS | FID (ours) | Recall (ours) '
          '| features (FID / recall) | our run |\n|---|---|---|---|---|---|---|---|---|---|\n')


def _line(model, nfe, paper, ours):
    p = [_num(paper.fid), _num(paper.recall), paper.epochs or '–', str(paper.batch or '–')] if paper else \
        ['–', '–', '–', '–']
    return '| ' + ' | '.join([model, str(nfe)] + p + _our_cells(ours)) + ' |\n'


def _unmatched(rows, dataset, shown):
    extra = [r for r in rows if r.get('dataset') == dataset and id(r) not in shown]
    return sorted(extra, key=lambda r: (str(r.get('method')), r.get('nfe') or 0, str(r.get('run'))))


COMPARISON_TAG = '<!-- lct_jax.comparison/1: rebuilt by --mode=evaluate from the results.json beside it -->'
# comparison tables written before the tag had this header line
COMPARISON_MARKS = (COMPARISON_TAG, '| Model | NFE | FID (paper) | Recall (paper) |')


def comparison_markdown(rows, dataset: str) -> str:
    """The reproduction's three kinds of run on one dataset (LDM-8† 250 NFE, iLCT and sLCT at 1/2 NFE)
    with the paper's FID / recall beside ours, then any other rows of ours (other samplers, ablations)."""
    title = TABLE1.get(dataset, (dataset, []))[0]
    out = [f'{COMPARISON_TAG}\n## {title}: ours beside the paper\n\n', HEADER]
    shown = set()
    for method, nfe in COMPARED:
        ours = _ours(rows, dataset, method, nfe)
        shown.update(id(r) for r in ours)
        paper = lookup(dataset, method, nfe)
        model = paper.model if paper else method
        for r in ours or [None]:
            out.append(_line(model, nfe, paper, r))
    for r in _unmatched(rows, dataset, shown):
        out.append(_line(f"{r.get('method')} ({r.get('sampler')})", r.get('nfe'), None, r))
    return ''.join(out)


def table1_markdown(rows) -> str:
    """The paper's whole Table 1 layout, every published row, with our numbers where a run matches."""
    out = ['# Table 1: the paper (Dao et al., ICLR 2025) and this reproduction\n\n',
           'FID (paper) / Recall (paper): as published (FID on 50k samples with pytorch-fid\'s Inception; '
           'recall: StyleGAN2-ADA pr50k3, VGG16 features). Ours: the features each row names.\n\n']
    datasets = list(TABLE1) + sorted({r.get('dataset') for r in rows if r.get('dataset') not in TABLE1})
    for dataset in datasets:
        title, paper_rows = TABLE1.get(dataset, (dataset, []))
        out += [f'## {title}\n\n', HEADER]
        shown, group = set(), None
        for p in paper_rows:
            if p.group != group:
                group = p.group
                out.append(f'| *{group}* | | | | | | | | | |\n')
            ours = _ours(rows, dataset, p.method, p.nfe) if p.method else []
            shown.update(id(r) for r in ours)
            for r in ours or [None]:
                out.append(_line(p.model, p.nfe, p, r))
        extra = _unmatched(rows, dataset, shown)
        if extra:
            out.append('| *Ours, not in the paper* | | | | | | | | | |\n')
            out += [_line(f"{r.get('method')} ({r.get('sampler')})", r.get('nfe'), None, r) for r in extra]
        out.append('\n')
    return ''.join(out)


def write_comparison(directory: str, dataset: str) -> str:
    """Rebuild <directory>/comparison_<dataset>.md from every results.json one level below it."""
    rows = load_rows([directory])
    path = os.path.join(directory, f'comparison_{check_component(dataset, "evaluation.dataset")}.md')
    # Kept, the new one written beside it: a file that is not our table (no tag: a user's notes), or
    # one holding more numbers (runs since moved away).
    return writer.write_keeping(path, comparison_markdown(rows, dataset), writer.count_numbers, COMPARISON_MARKS)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('workdirs', nargs='+', help='run directories (or their parent), or results.json files')
    parser.add_argument('--out', default='', help='write the markdown here (default: stdout)')
    args = parser.parse_args(argv)
    text = table1_markdown(load_rows(args.workdirs))
    if args.out:
        writer.write_text(args.out, text)
        print(f'Table 1 with {len(load_rows(args.workdirs))} rows of ours: {args.out}')
    else:
        sys.stdout.write(text)


if __name__ == '__main__':
    main()
