"""Nothing a command rewrites destroys what is there: a new file that holds less than the one it
would replace is written beside it instead, and the command says what it would have dropped.

Why: `python -m lct_jax.study report docs/study/latent/study_latent.py` on a fresh clone (no
runs in the default work root) replaced the committed 24-run report with an empty one. A
report, a comparison table or a pooled table is regenerated from its inputs; when the inputs
at hand are fewer than the ones the file was made from, regenerating it loses results. So each
such write compares what the old and the new file hold (finished runs for a report, numbers
for a table) and, when the new one holds less, keeps the old one and writes `<name>.new<ext>`
beside it, unless the caller passes `replace` (the commands' --replace flag).
"""
from __future__ import annotations

import os
import re


def beside(path: str) -> str:
    """results.md -> results.new.md; the name a kept file's would-be replacement gets."""
    stem, ext = os.path.splitext(path)
    return f'{stem}.new{ext}'


def write_atomically(path: str, text: str) -> None:
    tmp = f'{path}.{os.getpid()}.tmp'
    with open(tmp, 'w') as f:
        f.write(text)
    os.replace(tmp, path)


_NUMBER_CELL = re.compile(r'^\s*[+\-−]?\d')


def count_numbers(text: str) -> int:
    """Table cells of a markdown text that hold a number: what a regenerated table can lose."""
    return sum(1 for line in text.splitlines() if line.lstrip().startswith('|')
               for cell in line.strip().strip('|').split('|') if _NUMBER_CELL.match(cell))


def write_text_keeping(path: str, text: str, measure, what: str, replace: bool = False) -> str:
    """Write `text` to `path` unless the file there holds more (by `measure`, e.g. count_numbers)
    and not `replace`: then to beside(path). The path written."""
    if not replace and os.path.isfile(path):
        try:
            with open(path, encoding='utf-8') as f:
                old = measure(f.read())
        except (OSError, UnicodeDecodeError):
            old = 0
        if old > measure(text):
            path = beside(path)
    write_atomically(path, text)
    return path


def done_runs(result: dict) -> set[tuple[str, int]]:
    """The (variant, seed) pairs a study report (results.json) counts as finished."""
    progress = result.get('progress') if isinstance(result, dict) else None
    if not isinstance(progress, list):
        return set()
    return {(str(e.get('variant')), e.get('seed')) for e in progress
            if isinstance(e, dict) and e.get('state') == 'done'}
