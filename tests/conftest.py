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
# Every program, not only those over JAX's default of 1 s: the suite's training and evaluation
# subprocesses each compiled the same small programs (init, samplers, the checkpoint's finiteness
# check) again. The variable reaches the subprocesses too.
os.environ.setdefault('JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS', '0')
jax.config.update('jax_persistent_cache_min_compile_time_secs',
                  float(os.environ['JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS']))
# Evaluation's on-disk caches (digits MLP weights, reference features): out of the user's ~/.cache.
os.environ.setdefault('LCT_JAX_CACHE', os.path.join(os.environ.get('TMPDIR', '/tmp'), 'lct_jax_test_cache'))

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

# Files that take minutes (real processes, end-to-end runs) go to the workers first, so the short
# files fill in beside them instead of one long file starting last (measured with --durations).
LONG_FILES = ('test_multiprocess.py', 'test_accelerator_check.py', 'test_workdir.py', 'test_faults.py',
              'test_meanflow.py', 'test_objective.py', 'test_ldm.py', 'test_train.py', 'test_reference_cache.py',
              'test_sharded_evaluation.py', 'test_fsdp.py', 'test_unet.py', 'test_training_evaluation.py',
              'test_tfds.py')


def pytest_collection_modifyitems(config, items):
    rank = {name: i for i, name in enumerate(LONG_FILES)}
    items.sort(key=lambda item: rank.get(os.path.basename(str(item.fspath)), len(LONG_FILES)))  # stable


def pytest_xdist_auto_num_workers(config):
    """`-n auto`: one worker per core, at most 4, and at most one per 8 GB of memory (a worker with a
    subprocess run beside it peaks near 8 GB); LCT_TEST_WORKERS overrides."""
    if os.environ.get('LCT_TEST_WORKERS'):
        return int(os.environ['LCT_TEST_WORKERS'])
    memory_gb = os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2 ** 30
    return max(1, min(os.cpu_count() or 1, 4, int(memory_gb // 8)))
