"""The results table: ours beside the paper's, as JSON (all rows) and markdown."""
from __future__ import annotations

import os
import sys

from lct_jax import writer
from lct_jax.evaluation.table1 import ROW_FORMAT, evaluation_rows

RESULTS_TAG = '<!-- lct_jax.results/1: rebuilt by --mode=evaluate from results.json -->'
# results.md written before the tag began with this line
RESULTS_MARKS = (RESULTS_TAG, "FID: ours (features as named) beside the paper's Table 1 where one exists.")
COLUMNS = ('run', 'checkpoint', 'sampler', 'nfe', 'num_samples', 'features', 'fid', 'paper_fid',
           'pr_features', 'precision', 'recall', 'paper_recall')


def _fmt(v):
    if v is None:
        return '–'
    if isinstance(v, float):
        return f'{v:.4g}'
    return str(v)


def markdown(rows) -> str:
    lines = ['| ' + ' | '.join(COLUMNS) + ' |', '|' + '---|' * len(COLUMNS)]
    lines += ['| ' + ' | '.join(_fmt(r.get(c)) for c in COLUMNS) + ' |' for r in rows]
    return '\n'.join(lines) + '\n'


def append_rows(workdir: str, rows) -> str:
    """Append `rows` to <workdir>/results.json (and rewrite results.md); the path written.

    A results.json there that is not evaluation rows (a study report copied in, a damaged file,
    anyone's file of that name) is left as it is: the rows go to results.new.json beside it, and a
    line says so, so an evaluation that has finished never fails at its last write."""
    path = os.path.join(workdir, 'results.json')
    old, why = evaluation_rows(path) if os.path.lexists(path) else ([], '')
    if os.path.islink(path):  # never written through, whatever it points at
        old, why = None, f'a symlink to {os.readlink(path)}'
    if old is None:
        print(f'note: {path} is not evaluation results ({why}); kept as it is, the new rows go to '
              f'{writer.beside(path)}', file=sys.stderr, flush=True)
        path = writer.beside(path)
        old = (evaluation_rows(path)[0] or []) if os.path.exists(path) else []
    allrows = old + [{'format': ROW_FORMAT, **r} for r in rows]  # the tag tells them from a study report
    writer.write_json(path, allrows, root=workdir, newline=False)
    md = os.path.join(workdir, 'results.md' if path.endswith('results.json') else 'results.new.md')
    writer.write_keeping(md, RESULTS_TAG + '\nFID: ours (features as named) beside the paper\'s Table 1 where one '
                         'exists.\n\n' + markdown(allrows), tag=RESULTS_MARKS, root=workdir)
    return path
