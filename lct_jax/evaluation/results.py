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


def append_rows(workdir: str, rows) -> None:
    path = os.path.join(workdir, 'results.json')
    from lct_jax.untrusted import read_json  # a damaged file is an error naming it; nothing is rewritten
    old = read_json(path, "the run's evaluation rows", expect=list) if os.path.exists(path) else []
    allrows = old + list(rows)
    with open(path + '.partial', 'w') as f:
        json.dump(allrows, f, indent=1)
    os.replace(path + '.partial', path)
    with open(os.path.join(workdir, 'results.md'), 'w') as f:
        f.write('FID: ours (features as named) beside the paper\'s Table 1 where one exists.\n\n')
        f.write(markdown(allrows))
