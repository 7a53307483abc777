"""TFRecord shards: exact round trip, tf.data compatibility, errors that name file and record."""
import os

import numpy as np
import pytest

from lct_jax.data import tfrecord


def _write(path, n=5, shape=(4, 4, 2)):
    rng = np.random.default_rng(0)
    data = rng.standard_normal((n, *shape)).astype(np.float32)
    with tfrecord.TFRecordWriter(path) as w:
        for i, a in enumerate(data):
            w.write(tfrecord.encode_latent(a, i))
    return data


def test_round_trip_is_bit_exact(tmp_path):
    path = str(tmp_path / 'a.tfrecord')
    data = _write(path)
    assert not os.path.exists(path + '.partial')
    out = [tfrecord.decode_latent(p) for p in tfrecord.read_all(path)]
    assert [i for _, i in out] == list(range(5))
    np.testing.assert_array_equal(np.stack([a for a, _ in out]), data)


def test_known_framing_bytes():
    # Framing of TFRecord: len, masked crc32c(len), data, masked crc32c(data).
    framed = tfrecord.frame(b'abc')
    assert framed[:8] == (3).to_bytes(8, 'little') and framed[12:15] == b'abc'
    assert tfrecord.masked_crc(b'') == 0xA282EAD8  # crc32c('') = 0, rotated then offset


def test_corrupted_payload_names_file_and_record(tmp_path):
    path = str(tmp_path / 'b.tfrecord')
    _write(path)
    offsets = tfrecord.index_records(path)
    with open(path, 'r+b') as f:
        f.seek(offsets[3][0] + 10)
        f.write(b'\xff\xff')
    with pytest.raises(tfrecord.CorruptRecordError, match=r'b\.tfrecord: record 3 .*payload checksum'):
        tfrecord.read_all(path)


def test_truncated_file_names_file_and_record(tmp_path):
    path = str(tmp_path / 'c.tfrecord')
    _write(path)
    size = os.path.getsize(path)
    with open(path, 'r+b') as f:
        f.truncate(size - 7)
    with pytest.raises(tfrecord.CorruptRecordError, match=r'c\.tfrecord: record 4 .*truncated'):
        tfrecord.index_records(path)


def test_failed_writer_leaves_no_shard(tmp_path):
    path = str(tmp_path / 'd.tfrecord')
    with pytest.raises(RuntimeError):
        with tfrecord.TFRecordWriter(path) as w:
            w.write(b'x')
            raise RuntimeError('boom')
    assert not os.path.exists(path) and not os.path.exists(path + '.partial')


def test_readable_by_tf_data(tmp_path):
    tf = pytest.importorskip('tensorflow')  # pip install tensorflow-cpu to run this test
    path = str(tmp_path / 'e.tfrecord')
    data = _write(path)
    spec = {'latent': tf.io.FixedLenFeature([], tf.string), 'shape': tf.io.FixedLenFeature([3], tf.int64),
            'index': tf.io.FixedLenFeature([1], tf.int64)}
    out = []
    for rec in tf.data.TFRecordDataset(path):
        ex = tf.io.parse_single_example(rec, spec)
        out.append(tf.reshape(tf.io.decode_raw(ex['latent'], tf.float32), ex['shape']).numpy())
    np.testing.assert_array_equal(np.stack(out), data)
    # and an Example written by TensorFlow decodes with ours
    ex = tf.train.Example(features=tf.train.Features(feature={
        'latent': tf.train.Feature(bytes_list=tf.train.BytesList(value=[data[0].tobytes()])),
        'shape': tf.train.Feature(int64_list=tf.train.Int64List(value=list(data[0].shape))),
        'index': tf.train.Feature(int64_list=tf.train.Int64List(value=[7]))}))
    latent, index = tfrecord.decode_latent(ex.SerializeToString())
    np.testing.assert_array_equal(latent, data[0])
    assert index == 7


def test_example_codec_round_trip_with_negative_and_large_ints():
    from lct_jax.data import example_codec
    feats = {'a': [b'', b'xyz' * 100], 'b': [0, 1, -1, 2**40, -(2**62)]}
    assert example_codec.decode_example(example_codec.encode_example(feats)) == feats
