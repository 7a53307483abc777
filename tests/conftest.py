"""Test set-up: 4 fake CPU devices for every test (set before JAX initialises)."""
import os
import sys

import jax

jax.config.update('jax_num_cpu_devices', 4)
jax.config.update('jax_platforms', 'cpu')
# Tests compile the same train step several times (and in subprocesses): share compilations.
CACHE = os.path.join(os.environ.get('TMPDIR', '/tmp'), 'lct_jax_test_xla_cache')
os.environ.setdefault('JAX_COMPILATION_CACHE_DIR', CACHE)
jax.config.update('jax_compilation_cache_dir', os.environ['JAX_COMPILATION_CACHE_DIR'])
jax.config.update('jax_persistent_cache_min_compile_time_secs', 1.0)
# Evaluation's on-disk caches (digits MLP weights, reference features): out of the user's ~/.cache.
os.environ.setdefault('LCT_JAX_CACHE', os.path.join(os.environ.get('TMPDIR', '/tmp'), 'lct_jax_test_cache'))

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)
