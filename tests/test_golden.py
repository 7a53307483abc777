"""The goldens of the train step (tests/golden/record.py): 40 logged steps of default, :meanflow and
:ldm, every metric, equal to the committed ones. Slow (3 training processes, ~2 min on 2 cores):
`python -m pytest -m slow tests/test_golden.py`."""
import os
import re
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.slow
def test_the_logged_metrics_equal_the_goldens():
    out = subprocess.run([sys.executable, os.path.join(ROOT, 'tests', 'golden', 'record.py')], cwd=ROOT,
                         capture_output=True, text=True, timeout=900)
    lines = [line for line in out.stdout.splitlines() if 'worst relative difference' in line]
    assert out.returncode == 0 and len(lines) == 3, out.stdout[-2000:] + out.stderr[-2000:]
    assert all(re.search(r'worst relative difference 0( |$)', line) for line in lines), lines
