"""The published figures against the commands that make them (benchmarks/figures.py): the cheap
sources in the default run would still cost a test collection; so all of it is slow.

    python -m pytest -m slow tests/test_figures.py     # ~10 min: the cheap sources and the default run
"""
import os
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, 'benchmarks'))


@pytest.mark.slow
def test_the_readme_figures_regenerate(tmp_path):
    import figures
    rows, _ = figures.check(['help', 'tests', 'committed', 'default'], str(tmp_path))
    assert rows and all(r['ok'] for r in rows), [r for r in rows if not r['ok']]


def test_every_figure_names_a_source_and_is_printed_once():
    """Cheap and always run: the registry's patterns still match the docs exactly once, so a figure
    that moved or was reworded is noticed at once (not only when the slow check runs)."""
    import re
    import figures
    for f in figures.FIGURES:
        assert f.source in figures.SOURCES, f.name
        found = re.findall(f.pattern, figures.text_of(f.file))
        assert len(found) == 1, (f.name, f.file, len(found))
        groups = found[0] if isinstance(found[0], tuple) else (found[0],)
        assert len(groups) == len(f.keys), f.name
