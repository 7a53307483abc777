"""Where lct_jax keeps what it computes once and reuses: $LCT_JAX_CACHE, else
$XDG_CACHE_HOME/lct_jax, else ~/.cache/lct_jax.

  xla/                 JAX's persistent compilation cache (main.py; --compilation_cache_dir)
  reference_features/  real images' features for evaluation (evaluation/reference_cache.py)
  digits_mlp/          the digits feature network's weights (evaluation/features.py)
"""
from __future__ import annotations

import os


def cache_root() -> str:
    return os.environ.get('LCT_JAX_CACHE') or os.path.join(
        os.environ.get('XDG_CACHE_HOME') or os.path.expanduser('~/.cache'), 'lct_jax')
