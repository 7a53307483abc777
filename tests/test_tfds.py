"""tfds sources and tfds metadata, against real tfds datasets built here from the digits.

tfds prepares an ArrayRecord dataset without TensorFlow (from encoded image
files); a TFRecord one needs TensorFlow's writer, so the main environment
gets its TFRecord dataset by re-framing the same serialized examples into
TFRecord files (what tfds' writer produces), and the TensorFlow tests below
(skipped without it) prepare one with tfds itself. Run those in the optional
environment of the README:
`PYTHONPATH=. /tmp/tfenv/bin/python -m pytest --noconftest -o addopts= tests/test_tfds.py`.
"""
import io
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

tfds = pytest.importorskip('tensorflow_datasets', reason='tensorflow-datasets is not installed')

from lct_jax.data import tfrecord  # noqa: E402
from lct_jax.data.sources import ImageFolderSource, TfdsSource  # noqa: E402


class DigitPngs(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """The PNG files of a folder as a tfds dataset, in sorted name order (shuffling off)."""
    VERSION = tfds.core.Version('1.0.0')
    # No checksums file to look for beside the code: tfds 4.9.10 looks for it through
    # `importlib_resources`, which it no longer gets installed for a builder inside a package.
    code_path = None

    def __init__(self, png_dir, **kwargs):
        self._png_dir = png_dir
        super().__init__(**kwargs)

    def _info(self):
        return tfds.core.DatasetInfo(builder=self, disable_shuffling=True, features=tfds.features.FeaturesDict({
            'image': tfds.features.Image(shape=(None, None, 3)), 'label': tfds.features.ClassLabel(num_classes=10)}))

    def _split_generators(self, dl_manager):
        return {'train': self._generate_examples()}

    def _generate_examples(self):
        # Image files, not arrays: tfds stores their bytes as they are (encoding arrays needs TensorFlow).
        for name in sorted(os.listdir(self._png_dir)):
            yield name, {'image': os.path.join(self._png_dir, name), 'label': int(name.split('_')[1][0])}


def write_digit_pngs(folder, n, size, distinct=None):
    """n RGB PNGs of the real digits at size x size (cycling through `distinct` of them)."""
    from sklearn.datasets import load_digits
    d = load_digits()
    raw = (d.images * (255.0 / 16.0)).round().astype(np.uint8)
    os.makedirs(folder, exist_ok=True)
    encoded = {}
    for i in range(n):
        j = i % (distinct or len(raw))
        if j not in encoded:
            buf = io.BytesIO()
            Image.fromarray(raw[j]).resize((size, size), Image.BICUBIC).convert('RGB').save(buf, 'PNG')
            encoded[j] = buf.getvalue()
        with open(os.path.join(folder, f'{i:05d}_{d.target[j]}.png'), 'wb') as f:
            f.write(encoded[j])
    return folder


def prepare_array_record(png_dir, data_dir):
    builder = DigitPngs(png_dir, data_dir=data_dir, file_format='array_record')
    builder.download_and_prepare()
    return builder.data_dir


def reframe_as_tfrecord(prepared_dir, out_dir, shard_lengths):
    """The same serialized examples in TFRecord files named and listed as tfds names them."""
    records = tfds.builder_from_directory(prepared_dir).as_data_source(
        'train', deserialize_method=tfds.decode.DeserializeMethod.RAW_BYTES)
    assert sum(shard_lengths) == len(records)
    os.makedirs(out_dir)
    start = 0
    for k, length in enumerate(shard_lengths):
        name = f'digit_pngs-train.tfrecord-{k:05d}-of-{len(shard_lengths):05d}'
        with tfrecord.TFRecordWriter(os.path.join(out_dir, name)) as w:
            for i in range(start, start + length):
                w.write(records[i])
        start += length
    with open(os.path.join(prepared_dir, 'dataset_info.json')) as f:
        info = json.load(f)
    info['fileFormat'] = 'tfrecord'
    info['splits'][0]['shardLengths'] = [str(n) for n in shard_lengths]
    with open(os.path.join(out_dir, 'dataset_info.json'), 'w') as f:
        json.dump(info, f)
    with open(os.path.join(prepared_dir, 'features.json')) as src, \
            open(os.path.join(out_dir, 'features.json'), 'w') as dst:
        dst.write(src.read())
    return out_dir


@pytest.fixture(scope='module')
def digits(tmp_path_factory):
    """300 digit PNGs at 12x12, as a folder, an ArrayRecord tfds dataset and a TFRecord one (3 files)."""
    root = tmp_path_factory.mktemp('tfds_digits')
    pngs = write_digit_pngs(str(root / 'pngs'), 300, 12)
    array_record = prepare_array_record(pngs, str(root / 'tfds'))
    tfrecords = reframe_as_tfrecord(array_record, str(root / 'tfds_tfrecord' / 'digit_pngs' / '1.0.0'),
                                    [70, 130, 100])
    return {'folder': pngs, 'array_record': array_record, 'tfrecord': tfrecords, 'tfds_data_dir': str(root / 'tfds')}


@pytest.mark.parametrize('fmt', ['array_record', 'tfrecord'])
def test_tfds_images_equal_the_folder_images(digits, fmt):
    src = TfdsSource(digits[fmt], 'train', 8)
    assert src.file_format == fmt and len(src) == 300
    folder = ImageFolderSource(digits['folder'], 8)
    np.testing.assert_array_equal(src.images(range(300)), folder.images(range(300)))
    # out of order, across files, and a slice of the split
    idx = [299, 0, 69, 70, 71, 200, 5]
    np.testing.assert_array_equal(src.images(idx), folder.images(idx))
    part = TfdsSource(digits[fmt], 'train[65:75]', 8)
    np.testing.assert_array_equal(part.images(range(10)), folder.images(range(65, 75)))


def test_tfds_by_name_and_data_dir_and_clear_errors(digits):
    src = TfdsSource('digit_pngs', 'train', 8, data_dir=digits['tfds_data_dir'])
    assert len(src) == 300 and src.file_format == 'array_record'
    with pytest.raises(ValueError, match="split 'test'"):
        TfdsSource(digits['array_record'], 'test', 8)
    with pytest.raises(FileNotFoundError, match="'no_such_dataset' not found"):
        TfdsSource('no_such_dataset', 'train', 8, data_dir=digits['tfds_data_dir'])


def _encode_config(**data):
    from configs import default
    c = default.get_config()
    with c.unlocked():
        c.model.in_channels = c.model.out_channels = 3
        c.data.update(resolution=8, expected_count=0, examples_per_shard=64, encode_batch_size=32, **data)
    return c


def _shard_bytes(latent_dir):
    names = sorted(f for f in os.listdir(latent_dir) if f.endswith('.tfrecord'))
    return {n: open(os.path.join(latent_dir, n), 'rb').read() for n in names}


@pytest.mark.parametrize('fmt', ['array_record', 'tfrecord'])
def test_encode_from_tfds_equals_encode_from_the_folder_and_resumes_reading_only_what_it_rewrites(
        digits, fmt, tmp_path):
    pytest.importorskip('jax')
    from lct_jax.data.encode import encode_dataset
    from lct_jax.models.autoencoder import identity_codec
    from lct_jax.modes import encode as encode_mode
    encode_mode.encode(_encode_config(source='image_dir', image_dir=digits['folder']), str(tmp_path / 'folder'))
    encode_mode.encode(_encode_config(source='tfds', tfds_name=digits[fmt]), str(tmp_path / 'tfds'))
    from_folder, from_tfds = _shard_bytes(tmp_path / 'folder' / 'latents'), _shard_bytes(tmp_path / 'tfds' / 'latents')
    assert len(from_tfds) == 5 and from_tfds == from_folder  # 300 examples, 64 per shard, byte for byte
    # A lost shard: the resumed encode reads exactly the 64 examples it rewrites, and ends identical.
    lost = sorted(from_tfds)[2]
    os.remove(tmp_path / 'tfds' / 'latents' / lost)
    src = TfdsSource(digits[fmt], 'train', 8)
    encode_dataset(src, identity_codec(3), str(tmp_path / 'tfds' / 'latents'), seed=0, batch_size=32,
                   examples_per_shard=64, show_progress=False)
    assert src.records_read == 64
    assert _shard_bytes(tmp_path / 'tfds' / 'latents') == from_folder


def test_encoded_latents_carry_tfds_metadata(digits, tmp_path):
    pytest.importorskip('jax')
    from lct_jax.modes import encode as encode_mode
    encode_mode.encode(_encode_config(source='tfds', tfds_name=digits['array_record']), str(tmp_path))
    latent_dir = str(tmp_path / 'latents')
    builder = tfds.builder_from_directory(latent_dir)  # reads our dataset_info.json / features.json
    assert builder.info.splits['train'].num_examples == 300
    assert [os.path.basename(f) for f in builder.info.splits['train'].filenames] == \
        json.load(open(os.path.join(latent_dir, 'manifest.json')))['shards']
    assert builder.info.features['latent'].shape == (8, 8, 3)


# --- peak memory: bounded by a batch, not by the dataset --------------------------------------------

# The child's own peak: VmHWM of its address space (ru_maxrss would carry over the pytest
# process's size, since Linux keeps the larger of the pre-exec and post-exec peaks).
_PEAK_RSS = ('import atexit, re, runpy, sys; '
             'atexit.register(lambda: print("PEAK_RSS_KB", re.search(r"VmHWM:\\s+(\\d+)", '
             'open("/proc/self/status").read()).group(1), file=sys.stderr, flush=True)); '
             'sys.argv = ["lct_jax.main"] + sys.argv[1:]; runpy.run_module("lct_jax.main", run_name="__main__")')


def _encode_peak_rss_mb(dataset_dir, workdir):
    from tests import runs
    cmd = [sys.executable, '-c', _PEAK_RSS, '--config=configs/default.py', f'--workdir={workdir}', '--mode=encode',
           '--num_cpu_devices=1', '--config.data.source=tfds', f'--config.data.tfds_name={dataset_dir}',
           '--config.data.resolution=32', '--config.data.expected_count=0', '--config.data.examples_per_shard=256',
           '--config.data.encode_batch_size=64', '--config.model.in_channels=3', '--config.model.out_channels=3']
    env = runs.env()
    env.pop('JAX_COMPILATION_CACHE_DIR', None)  # a cache hit or miss moves the peak by ~30 MiB
    out = subprocess.run(cmd, cwd=runs.ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    return int(out.stderr.split('PEAK_RSS_KB')[1].split()[0]) / 1024


@pytest.mark.parametrize('fmt', ['array_record', 'tfrecord'])
def test_encode_peak_memory_does_not_grow_with_the_dataset(tmp_path, fmt):
    """256x256 images (192 KiB decoded each): 3,200 of them are 600 MiB of pixels, 200 are 38 MiB.

    `--mode=encode` holds one batch (64 images, 12 MiB), so its peak RSS must be
    about the same for both: within 32 MiB (the ArrayRecord reader keeps some
    buffers, which level off at ~20 MiB), where holding the dataset would add 560 MiB.
    """
    pytest.importorskip('jax')
    sizes, peaks = (200, 3200), {}
    for n in sizes:
        pngs = write_digit_pngs(str(tmp_path / f'pngs{n}'), n, 256, distinct=50)
        prepared = prepare_array_record(pngs, str(tmp_path / f'tfds{n}'))
        if fmt == 'tfrecord':
            prepared = reframe_as_tfrecord(prepared, str(tmp_path / f'tfrecord{n}' / 'digit_pngs' / '1.0.0'),
                                           [n // 4] * 4)
        peaks[n] = _encode_peak_rss_mb(prepared, str(tmp_path / f'work{n}'))
    extra_pixels_mib = (sizes[1] - sizes[0]) * 256 * 256 * 3 / 2**20
    print(f'{fmt}: encode peak RSS {peaks[sizes[0]]:.0f} MiB ({sizes[0]} images), {peaks[sizes[1]]:.0f} MiB '
          f'({sizes[1]} images); the extra images hold {extra_pixels_mib:.0f} MiB of pixels')
    assert peaks[sizes[1]] - peaks[sizes[0]] < 32, (peaks, extra_pixels_mib)


# --- with TensorFlow (optional environment) -----------------------------------------------------------

def test_tfds_prepared_tfrecord_dataset_is_read_like_the_folder(tmp_path):
    pytest.importorskip('tensorflow', reason='TensorFlow is not installed (see the README\'s tf.data test)')
    pngs = write_digit_pngs(str(tmp_path / 'pngs'), 120, 12)
    builder = DigitPngs(pngs, data_dir=str(tmp_path / 'tfds'), file_format='tfrecord')
    builder.download_and_prepare()  # tfds' own TFRecord writer
    src = TfdsSource(builder.data_dir, 'train', 8)
    assert src.file_format == 'tfrecord'
    np.testing.assert_array_equal(src.images(range(120)), ImageFolderSource(pngs, 8).images(range(120)))


def test_our_latents_load_through_tfds_and_tf_data(tmp_path):
    pytest.importorskip('tensorflow', reason='TensorFlow is not installed (see the README\'s tf.data test)')
    from lct_jax.data import latents
    from lct_jax.data.tfds_metadata import write_tfds_metadata
    rng = np.random.default_rng(0)
    data = rng.standard_normal((10, 4, 4, 3)).astype(np.float32)
    names = [latents.shard_name(i, 2) for i in range(2)]
    for k, name in enumerate(names):
        with tfrecord.TFRecordWriter(str(tmp_path / name)) as w:
            for i in range(5 * k, 5 * k + 5):
                w.write(tfrecord.encode_latent(data[i], i))
    manifest = {'shape': [4, 4, 3], 'shards': names, 'source': 'test', 'autoencoder': 'identity',
                'scale_factor': 1.0}
    write_tfds_metadata(str(tmp_path), manifest, [5, 5])
    ds = tfds.builder_from_directory(str(tmp_path)).as_dataset(split='train', shuffle_files=False)
    got = list(tfds.as_numpy(ds))
    assert [int(ex['index']) for ex in got] == list(range(10))
    np.testing.assert_array_equal(np.stack([ex['latent'] for ex in got]), data)
