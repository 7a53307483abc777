"""The results table: ours beside the paper's, as JSON (all rows) and markdown."""
from __future__ import annotations

import json
import os

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

    A results.json there that is not evaluation rows (a study report copied in, a damaged file) is
    left as it is: the rows go to results.new.json beside it, and a line says so, so an evaluation
    that has finished never fails at its last write."""
    import sys
    from lct_jax.evaluation.table1 import ROW_FORMAT, evaluation_rows
    from lct_jax.keep import beside
    path = os.path.join(workdir, 'results.json')
    old, why = evaluation_rows(path) if os.path.exists(path) else ([], '')
    if old is None:
        print(f'note: {path} is not evaluation results ({why}); kept as it is, the new rows go to '
              f'{beside(path)}', file=sys.stderr, flush=True)
        path = beside(path)
        old = (evaluation_rows(path)[0] or []) if os.path.exists(path) else []
    allrows = old + [{'format': ROW_FORMAT, **r} for r in rows]  # the tag tells them from a study report
    with open(path + '.partial', 'w') as f:
        json.dump(allrows, f, indent=1)
    os.replace(path + '.partial', path)
    with open(os.path.join(workdir, 'results.md' if path.endswith('results.json') else 'results.new.md'), 'w') as f:
        f.write('FID: ours (features as named) beside the paper\'s Table 1 where one exists.\n\n')
        f.write(markdown(allrows))
    return path
