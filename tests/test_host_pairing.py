"""Noise + OT pairing on the host (the default placement) against the device placement.

Same inputs, same z, same permutation; the device programs hold no data-dependent
loop; the pairing threads never outlive the pipeline or the training loop.
"""
import threading

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import default
from lct_jax import hlo, parallel
from lct_jax.data import latents, tfrecord
from lct_jax.data.host_pairing import HostPairer
from lct_jax.data.pipeline import HostBatch
from lct_jax.objectives.base import Batch
from lct_jax.step_rng import step_noise
from lct_jax.train import loop


def _config(**overrides):
    c = default.get_config('smoke')
    with c.unlocked():
        for k, v in overrides.items():
            section, key = k.split('.')
            c[section][key] = v
    return c


def _pairer(mesh, method, batch=16, seed=0, shape=(8, 8, 1)):
    return HostPairer(seed, method, 0.01, shape, parallel.process_batch_slice(batch, mesh),
                      parallel.device_row_slices(batch, mesh))


def _x(batch=16, seed=0, shape=(8, 8, 1)):
    return (0.5 * np.random.default_rng(seed).standard_normal((batch, *shape))).astype(np.float32)


def _pairing_threads():
    return [t.name for t in threading.enumerate() if t.name.startswith(('lct-pairing', 'lct-input'))]


@pytest.mark.parametrize('method', ['exact', 'sinkhorn', 'none'])
def test_host_and_device_placements_give_the_same_noise_and_permutation(method):
    mesh = parallel.make_mesh()
    assert mesh.devices.size == 4
    x = _x()
    step = 7
    pairer = _pairer(mesh, method)
    try:
        z_host, ratio_host = pairer(step, x)
        z_unpaired = pairer.noise(step)
    finally:
        pairer.close()
    _, _, state, compiled = loop.build_training(_config(**{'coupling.method': method,
                                                           'coupling.placement': 'device'}), mesh)
    z_dev, ratio_dev = compiled.pair_noise(jnp.int32(step), jax.device_put(x, parallel.batch_sharding(mesh)))
    np.testing.assert_array_equal(z_host, np.asarray(z_dev))
    np.testing.assert_allclose(ratio_host, np.asarray(ratio_dev), rtol=1e-6)
    # the paired z is a permutation of each device's own unpaired rows
    for rows in parallel.device_row_slices(16, mesh):
        perm = [int(np.flatnonzero((z_unpaired[rows] == r).all(axis=(1, 2, 3)))[0]) for r in z_host[rows]]
        assert sorted(perm) == list(range(rows.stop - rows.start))
        if method == 'none':
            assert perm == sorted(perm)
    if method != 'none':
        assert np.all(ratio_host < 1.0)


def test_noise_of_a_row_does_not_depend_on_the_device_count():
    full = np.asarray(step_noise(0, jnp.int32(3), jnp.arange(16), (8, 8, 1)))
    for devices in (jax.devices()[:1], jax.devices()[:2], jax.devices()):
        pairer = _pairer(parallel.make_mesh(devices), 'none')
        try:
            np.testing.assert_array_equal(pairer.noise(3), full)
        finally:
            pairer.close()
    # and a process holding rows 8..15 draws exactly those rows
    half = HostPairer(0, 'none', 0.01, (8, 8, 1), slice(8, 16), [slice(8, 12), slice(12, 16)])
    try:
        np.testing.assert_array_equal(half.noise(3), full[8:])
    finally:
        half.close()


def test_host_paired_steps_equal_device_paired_steps():
    mesh = parallel.make_mesh()
    params = []
    for placement in ('host', 'device'):
        config = _config(**{'coupling.placement': placement})
        _, _, state, step = loop.build_training(config, mesh)
        pairer = loop.make_host_pairer(config, mesh)
        for k in range(3):
            x = _x(seed=k)
            local = HostBatch.of(x, pairer, int(state.step))
            state, m = step(state, loop.device_batch(local, mesh))
        if pairer is not None:
            pairer.close()
        assert float(m['ot_cost_ratio']) < 1.0
        params.append(jax.device_get(state.params))
    jax.tree_util.tree_map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7), *params)


def test_default_placement_leaves_no_data_dependent_loop_on_the_device():
    mesh = parallel.make_mesh()
    batch = jax.ShapeDtypeStruct((16, 8, 8, 1), jnp.float32, sharding=parallel.batch_sharding(mesh))
    counts = {}
    for placement in ('host', 'device'):
        _, _, state, step = loop.build_training(_config(**{'coupling.placement': placement}), mesh)
        counts[placement] = sum(hlo.count_data_dependent_while_loops(p.compile())
                                for p in step.lower(state, Batch(batch, None, None)).values())
    assert counts['host'] == 0
    assert counts['device'] > 0  # the Hungarian's loops: the counter does see them


def test_threads_stop_when_a_corrupt_shard_stops_the_run(tmp_path):
    from lct_jax.data import encode
    from lct_jax.data.pipeline import batch_indices
    from lct_jax.data.sources import DigitsSource
    from lct_jax.models.autoencoder import identity_codec
    d = str(tmp_path / 'latents')
    encode.encode_dataset(DigitsSource(8), identity_codec(1), d, examples_per_shard=500, batch_size=256,
                          show_progress=False)
    config = _config(**{'data.latent_dir': d})
    # damage a record that the third step reads
    index = int(batch_indices(2, config.batch_size, 1797, config.seed)[0])
    shard, record = divmod(index, 500)
    path = f'{d}/{latents.shard_name(shard, 4)}'
    with open(path, 'r+b') as f:
        f.seek(tfrecord.index_records(path)[record][0] + 20)
        f.write(b'\x00\x01\x02')
    with pytest.raises(tfrecord.CorruptRecordError, match=rf'{latents.shard_name(shard, 4)}: record {record}'):
        loop.train(config, str(tmp_path / 'run'), show_progress=False)
    assert _pairing_threads() == []

