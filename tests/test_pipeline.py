"""Encoding to shards and the input pipeline: determinism, layout independence, errors."""
import os

import numpy as np
import pytest

from lct_jax.data import encode, latents, pipeline, tfrecord
from lct_jax.data.sources import DigitsSource
from lct_jax.models.autoencoder import identity_codec


@pytest.fixture(scope='module')
def digits_dir(tmp_path_factory):
    d = str(tmp_path_factory.mktemp('digits'))
    encode.encode_dataset(DigitsSource(8), identity_codec(1), d, examples_per_shard=500,
                          batch_size=256, show_progress=False)
    return d


def test_encoded_digits_round_trip_to_the_source(digits_dir):
    ds = latents.LatentDataset(digits_dir)
    src = DigitsSource(8)
    assert len(ds) == 1797 and ds.manifest['shards'][-1] == 'shard-00003-of-00004.tfrecord'
    for i in (0, 499, 500, 1796):
        np.testing.assert_array_equal(ds.read(i), src.image(i).astype(np.float32) / 127.5 - 1)
    mean, std = latents.read_stats(digits_dir)
    all_x = ds.read_batch(range(1797))
    np.testing.assert_allclose(mean, all_x.mean(0), atol=1e-5)
    np.testing.assert_allclose(std, all_x.std(0, ddof=1), atol=1e-5)


def test_every_example_once_per_epoch_and_same_for_any_process_count():
    n, b = 103, 10
    for epoch in range(2):
        seen = np.concatenate([pipeline.batch_indices(epoch * 10 + k, b, n, seed=3) for k in range(10)])
        assert len(set(seen.tolist())) == 100  # drop_last: 3 examples wait for another epoch
    one = pipeline.batch_indices(7, b, n, seed=3)
    two = np.concatenate([one[slice(0, 5)], one[slice(5, 10)]])  # process 0 and 1 rows
    np.testing.assert_array_equal(one, two)
    assert not np.array_equal(pipeline.batch_indices(0, b, n, 3), pipeline.batch_indices(10, b, n, 3))


def test_pipeline_resumes_at_any_step(digits_dir):
    ds = latents.LatentDataset(digits_dir)
    norm = pipeline.Normalizer.from_dir(digits_dir, mode='scalar')
    full = pipeline.InputPipeline(ds, norm, 32, 0, slice(0, 32))
    batches = [next(full) for _ in range(6)]
    resumed = pipeline.InputPipeline(ds, norm, 32, 0, slice(16, 32), start_step=4)
    np.testing.assert_array_equal(next(resumed).x, batches[4].x[16:])
    full.close(), resumed.close()


def test_normalizer_round_trip_and_modes():
    mean = np.array([[1.0, 2.0]]); std = np.array([[2.0, 4.0]])
    for mode in ('per_element', 'scalar', 'none'):
        n = pipeline.Normalizer(mean, std, 0.5, mode=mode)
        lat = np.array([[3.0, -1.0]])
        np.testing.assert_allclose(n.denormalize(n.normalize(lat)), lat / 0.5, rtol=1e-6)
    n = pipeline.Normalizer(mean, std, 0.5)
    np.testing.assert_allclose(n.normalize(np.array([[1.0, 2.0]])), [[(2 - 1) / 2 * 0.5, (4 - 2) / 4 * 0.5]])
    with pytest.raises(ValueError, match='valid'):
        pipeline.Normalizer(mean, std, 1.0, mode='zscore')


def test_corrupt_shard_stops_reading_with_file_and_record(digits_dir, tmp_path):
    import shutil
    d = str(tmp_path / 'copy')
    shutil.copytree(digits_dir, d)
    path = os.path.join(d, 'shard-00001-of-00004.tfrecord')
    off = tfrecord.index_records(path)[7][0]
    with open(path, 'r+b') as f:
        f.seek(off + 20)
        f.write(b'\x00\x01\x02')
    ds = latents.LatentDataset(d)
    with pytest.raises(tfrecord.CorruptRecordError, match='shard-00001-of-00004.tfrecord: record 7'):
        ds.read(500 + 7)
    p = pipeline.InputPipeline(ds, pipeline.Normalizer.from_dir(d), 1797, 0, slice(0, 1797))
    with pytest.raises(tfrecord.CorruptRecordError, match='record 7'):
        next(p)
    p.close()


def test_interrupted_encode_finishes_with_identical_shards(digits_dir, tmp_path):
    d = str(tmp_path / 'again')
    encode.encode_dataset(DigitsSource(8), identity_codec(1), d, examples_per_shard=500, show_progress=False)
    # a kill while shard 2 was being written leaves only its temporary file (lct_jax/writer.py), named
    # with the killed process's pid
    leftover = os.path.join(d, '.shard-00002-of-00004.tfrecord.4194305.0.tmp')
    os.replace(os.path.join(d, 'shard-00002-of-00004.tfrecord'), leftover)
    with open(leftover, 'r+b') as f:
        f.truncate(1000)
    with open(os.path.join(d, 'shard-00003-of-00004.tfrecord'), 'r+b') as f:
        f.truncate(100)  # a shard cut short by a kill is detected and redone
    before = os.path.getmtime(os.path.join(d, 'shard-00000-of-00004.tfrecord'))
    encode.encode_dataset(DigitsSource(8), identity_codec(1), d, examples_per_shard=500, show_progress=False)
    assert os.path.getmtime(os.path.join(d, 'shard-00000-of-00004.tfrecord')) == before
    assert not any(n.endswith(('.partial', '.tmp')) for n in os.listdir(d))
    for name in latents.read_manifest(d)['shards']:
        with open(os.path.join(d, name), 'rb') as a, open(os.path.join(digits_dir, name), 'rb') as b:
            assert a.read() == b.read(), name


def test_analyze_writes_boxplot_and_summary(digits_dir, tmp_path):
    from configs import default
    from lct_jax.evaluation.analysis import tukey_summary
    from lct_jax.modes.analyze import analyze_dataset
    c = default.get_config()
    with c.unlocked():
        c.data.latent_dir = digits_dir
    summary = analyze_dataset(c, str(tmp_path))['summary']
    assert os.path.getsize(tmp_path / 'analysis' / 'boxplot.png') > 0
    assert set(summary) == {'latents', 'pixels', 'tail_power', 'temporal_differences'}
    td = summary['temporal_differences']   # no checkpoint here: the untrained network, and it says so
    assert td['num_scales'] == 21 and 'untrained' in td['weights'] and td['count'] == 512 * 64
    rng = np.random.default_rng(0)
    heavy, gauss = tukey_summary(rng.standard_t(2.5, 100_000)), tukey_summary(rng.standard_normal(100_000))
    assert heavy['fraction_beyond_outer_fences'] > 10 * gauss['fraction_beyond_outer_fences']
    assert heavy['excess_kurtosis'] > 3 and abs(gauss['excess_kurtosis']) < 0.1


def test_reader_processes_give_the_serial_batches(digits_dir):
    ds = latents.LatentDataset(digits_dir)
    norm = pipeline.Normalizer.from_dir(digits_dir, mode='scalar')
    serial = pipeline.InputPipeline(ds, norm, 96, 0, slice(0, 96))
    parallel = pipeline.InputPipeline(ds, norm, 96, 0, slice(0, 96), read_processes=3)
    try:
        for _ in range(20):  # past an epoch (18 steps of 96): the next permutation too
            np.testing.assert_array_equal(next(parallel).x, next(serial).x)
        resumed = pipeline.InputPipeline(ds, norm, 96, 0, slice(32, 96), start_step=7, read_processes=2)
        np.testing.assert_array_equal(next(resumed).x, pipeline.InputPipeline.local_batch(serial, 7)[32:])
        resumed.close()
    finally:
        serial.close(), parallel.close()


def test_reader_processes_give_the_serial_labeled_batches(tmp_path):
    d = str(tmp_path / 'labeled')
    encode.encode_dataset(DigitsSource(8, labels=True), identity_codec(1), d, examples_per_shard=500,
                          batch_size=256, show_progress=False)
    ds = latents.LatentDataset(d)
    norm = pipeline.Normalizer.from_dir(d, mode='scalar')
    serial = pipeline.InputPipeline(ds, norm, 64, 0, slice(0, 64), labels=True)
    parallel = pipeline.InputPipeline(ds, norm, 64, 0, slice(0, 64), labels=True, read_processes=2)
    try:
        for _ in range(3):
            (xs, _, _, ys), (xp, _, _, yp) = next(serial), next(parallel)
            np.testing.assert_array_equal(xp, xs)
            np.testing.assert_array_equal(yp, ys)
            assert yp.dtype == np.int32
    finally:
        serial.close(), parallel.close()


def test_reader_processes_name_the_corrupt_shard_and_record(digits_dir, tmp_path):
    import shutil
    d = str(tmp_path / 'copy')
    shutil.copytree(digits_dir, d)
    path = os.path.join(d, 'shard-00002-of-00004.tfrecord')
    off = tfrecord.index_records(path)[11][0]
    with open(path, 'r+b') as f:
        f.seek(off + 20)
        f.write(b'\x00\x01\x02')
    ds = latents.LatentDataset(d)
    p = pipeline.InputPipeline(ds, pipeline.Normalizer.from_dir(d), 1797, 0, slice(0, 1797), read_processes=2)
    with pytest.raises(tfrecord.CorruptRecordError, match='shard-00002-of-00004.tfrecord: record 11') as e:
        next(p)
    assert (e.value.path, e.value.record) == (path, 11)
    p.close()


def test_reader_chunks_keep_the_order_and_no_reader_process_outlives_close(digits_dir):
    from lct_jax.data.parallel_reader import ProcessReader, chunks
    idx = np.arange(10)[::-1]
    assert [c.tolist() for c in chunks(idx, 3)] == [[9, 8, 7, 6], [5, 4, 3], [2, 1, 0]]
    assert [c.tolist() for c in chunks(idx[:2], 4)] == [[9], [8]]  # no empty chunk
    ds = latents.LatentDataset(digits_dir)
    norm = pipeline.Normalizer.from_dir(digits_dir, mode='scalar')
    reader = ProcessReader(digits_dir, norm, 2)
    x = reader.read(idx, example_shape=ds.shape)
    np.testing.assert_array_equal(x, norm.normalize(ds.read_batch(idx)).astype(np.float32))
    pids = reader.pids()
    assert len(pids) == 2
    reader.close()
    for pid in pids:
        assert not os.path.exists(f'/proc/{pid}') or open(f'/proc/{pid}/stat').read().split(') ')[1][0] == 'Z'


def test_reader_processes_with_the_host_pairing_give_the_serial_batches(digits_dir):
    from lct_jax.data.host_pairing import HostPairer
    ds = latents.LatentDataset(digits_dir)
    norm = pipeline.Normalizer.from_dir(digits_dir, mode='scalar')

    def make(read_processes):
        pairer = HostPairer(0, 'exact', 0.01, (8, 8, 1), slice(0, 32), [slice(0, 16), slice(16, 32)])
        return pipeline.InputPipeline(ds, norm, 32, 0, slice(0, 32), pairer=pairer, read_processes=read_processes)

    serial, parallel = make(0), make(2)
    try:
        for _ in range(3):
            for a, b in zip(next(serial), next(parallel)):  # x, z paired, cost ratio
                np.testing.assert_array_equal(a, b)
    finally:
        serial.close(), parallel.close()
