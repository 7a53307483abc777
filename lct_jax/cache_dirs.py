"""Where lct_jax keeps what it computes once and reuses, and the one way an entry is read and written.

The root: $LCT_JAX_CACHE, else $XDG_CACHE_HOME/lct_jax, else ~/.cache/lct_jax.
  xla/                 JAX's persistent compilation cache (main.py; --compilation_cache_dir)
  reference_features/  real images' features for evaluation (evaluation/reference_cache.py)
  digits_mlp/          the digits feature network's weights (evaluation/features.py)

An entry is a .npz of named arrays. An unreadable one (a partial copy, a full
disk earlier) is recomputed and rewritten, never an error; a write goes through
a temporary file and a rename, so concurrent processes at worst compute it
twice; a cache that cannot be written costs the time, not the caller's work.
"""
from __future__ import annotations

import os
import zipfile
from typing import Callable

import numpy as np

from lct_jax import writer


def xdg_cache_home() -> str:
    return os.environ.get('XDG_CACHE_HOME') or os.path.expanduser('~/.cache')


def cache_root() -> str:
    return os.environ.get('LCT_JAX_CACHE') or os.path.join(xdg_cache_home(), 'lct_jax')


def cached_arrays(path: str, compute: Callable[[], dict]) -> tuple[dict, str]:
    """({name: array}, 'hit' | 'miss'): the .npz at `path`, or compute()'s result stored there."""
    if os.path.exists(path):
        try:
            with np.load(path) as z:
                return {k: z[k] for k in z.files}, 'hit'
        except (OSError, ValueError, EOFError, zipfile.BadZipFile, KeyError):
            pass
    arrays = compute()
    write_arrays(path, arrays)
    return arrays, 'miss'


def write_arrays(path: str, arrays: dict) -> None:
    """Store a cache entry through a temporary file and a rename; a cache that cannot be written
    costs the time, not the caller's work."""
    try:
        writer.write_npz(path, **arrays)
    except OSError as e:
        print(f'not cached ({e}): {path}', flush=True)


def file_fingerprint(path: str) -> dict:
    """A weights file by path, size and modification time, as a cache key's part (hashing hundreds
    of MB per evaluation would cost more than the cache it keys saves)."""
    st = os.stat(path)
    return {'weights': os.path.abspath(path), 'size': st.st_size, 'mtime_ns': st.st_mtime_ns}
