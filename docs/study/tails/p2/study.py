"""The tail study at level p2 (docs/study/tails/levels.py: what the levels are; README.md: the study).

    python -m lct_jax.study run    docs/study/tails/p2/study.py --parallel 2 --cpus-per-run 1
    python -m lct_jax.study report docs/study/tails/p2/study.py
"""
import os
import sys

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from levels import study  # noqa: E402

STUDY = study('p2')
