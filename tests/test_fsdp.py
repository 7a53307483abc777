"""FSDP (config.mesh.fsdp): the sharding rule, sharded = replicated training on 8 devices, per-device
state memory ~1/8, and checkpoints that restore on another device count."""
import json
import subprocess
import sys

import jax
import numpy as np
from jax.sharding import PartitionSpec as P

from lct_jax import parallel
from tests import fsdp_worker, runs


def _worker(*args, timeout=600):
    out = subprocess.run([sys.executable, '-m', 'tests.fsdp_worker', *map(str, args)], cwd=runs.ROOT,
                         env=runs.env(), capture_output=True, text=True, timeout=timeout)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_the_sharding_rule():
    assert parallel.fsdp_spec((768, 3072), 8, 1) == P(None, 'data')           # the largest dimension
    assert parallel.fsdp_spec((3, 3, 256, 256), 8, 1) == P(None, None, None, 'data')  # the last of equals
    assert parallel.fsdp_spec((36, 20), 8, 1) == P()                           # nothing divides
    assert parallel.fsdp_spec((12, 90), 4, 1) == P('data', None)                # the largest that divides
    assert parallel.fsdp_spec((768,), 8, 2 ** 14) == P()                       # too small to matter
    assert parallel.fsdp_spec((), 8, 0) == P()
    assert parallel.fsdp_spec((1024, 1024), 1, 1) == P()                       # one device


def test_state_shardings_switch_and_every_copy_of_a_leaf_shares_a_layout():
    mesh = parallel.make_mesh()
    tree = {'params': {'w': jax.ShapeDtypeStruct((64, 32), np.float32), 'b': jax.ShapeDtypeStruct((32,), np.float32)},
            'mu': {'w': jax.ShapeDtypeStruct((64, 32), np.float32), 'b': jax.ShapeDtypeStruct((32,), np.float32)},
            'count': jax.ShapeDtypeStruct((), np.int32)}
    replicated = parallel.state_shardings(tree, mesh)
    assert all(s.is_fully_replicated for s in jax.tree_util.tree_leaves(replicated))
    sharded = parallel.state_shardings(tree, mesh, fsdp=True, min_size=100)
    assert sharded['params']['w'].spec == sharded['mu']['w'].spec == P('data', None)
    assert sharded['params']['b'].is_fully_replicated and sharded['count'].is_fully_replicated


def test_sharded_training_equals_replicated_on_8_devices_with_an_eighth_of_the_state():
    """Three steps of a small DiT, replicated and FSDP, on the same batches (8 CPU devices)."""
    r = _worker('equivalence', 8)
    assert r['devices'] == 8
    np.testing.assert_allclose(r['fsdp_losses'], r['replicated_losses'], rtol=1e-5)
    assert r['max_relative_difference'] < 1e-5, (r['max_relative_difference'], r['worst_leaf'])
    assert r['replicated_trace_count'] == r['fsdp_trace_count'] == 1
    # the state really is sharded, and stays sharded through the donated, jitted step
    assert r['replicated_sharded_leaves'] == 0 and r['fsdp_sharded_leaves'] == r['fsdp_state_sharding_after'] > 100
    # per-device state bytes ~ 1/8 (biases and scalars below fsdp_min_size stay replicated), by the
    # arrays themselves and by XLA's memory analysis of the compiled update program
    ratio = r['fsdp_state_bytes_per_device'] / r['replicated_state_bytes_per_device']
    xla_ratio = r['fsdp_xla_argument_bytes'] / r['replicated_xla_argument_bytes']
    assert 0.125 <= ratio < 0.14 and 0.125 <= xla_ratio < 0.14, (ratio, xla_ratio)
    # no hand-written collective: XLA gathers the sharded weights itself
    assert r['fsdp_collectives']['all-gather'] > 0 and r['replicated_collectives']['all-gather'] == 0


def test_a_checkpoint_saved_sharded_on_8_devices_restores_on_4_and_1(tmp_path):
    workdir = str(tmp_path / 'run')
    saved = _worker('save', 8, workdir)
    assert saved['final_step'] == 2 and np.isfinite(saved['loss']) and saved['sharded_leaves'] > 100
    for devices in (jax.devices(), jax.devices()[:1]):             # this process: 4 CPU devices
        r = fsdp_worker.restore(workdir, parallel.make_mesh(devices))
        assert r['restored_step'] == 2 and r['max_abs_difference'] == 0.0
        n = len(devices)
        assert r['kernel_shard_shape'] == [r['kernel_shape'][0], r['kernel_shape'][1] // n]
        assert (r['sharded_leaves'] > 100) == (n > 1)
