"""Image sources for encoding: the packaged default, an image folder, a prepared tfds dataset.

Each source is a sequence of uint8 HxWxC images at the configured resolution,
addressed by index (so an interrupted encode can resume any shard).
Optional precomputed horizontal flips (as the authors' LSUN Church set):
indices n..2n-1 are the mirror images of 0..n-1.

Class labels, when asked for (`labels=True`, config `data.class_labels`) and
the source has them (`classes` non-empty; `label(i)` an index into it): the
digits' 10 classes, an image folder whose images all sit in class subfolders
(sorted subfolder names, as torchvision's ImageFolder), a tfds dataset with a
`label` feature. The encode stores them with the latents. Off by default, so
unconditional datasets encode exactly as before.
"""
from __future__ import annotations

import bisect
import io
import os
import struct
import warnings
import zlib

import numpy as np
from PIL import Image

from lct_jax.data import example_codec, tfrecord
from lct_jax.untrusted import UnreadableFileError

IMAGE_EXTENSIONS = ('.jpg', '.jpeg', '.png', '.webp', '.bmp')
# Beyond this aspect ratio the centre is cut out before resizing: a 1 x 100,000 image must not
# become a 256 x 25,600,000 intermediate (a resize bomb). Ordinary photos never reach it.
MAX_ASPECT = 8


class BadImageError(ValueError):
    """An image file (or a dataset record's image) that cannot be decoded: names it and why."""


def _to_rgb(img: Image.Image, name: str) -> Image.Image:
    """RGB of any mode PIL opens: 16- and 32-bit greyscale scaled to 8 bits (PIL's own convert
    would clip them at 255: a 16-bit PNG came out nearly white), palette, CMYK, alpha dropped."""
    if img.mode.startswith('I;16') or img.mode == 'I':
        a = np.asarray(img, np.float64)
        a = np.clip(a, 0, 65535) / 257.0  # 16-bit range -> 8-bit, as libpng's strip_16 rounds
        img = Image.fromarray(np.round(a).astype(np.uint8), mode='L')
    elif img.mode == 'F':
        raise BadImageError(f'{name}: a floating-point image (mode F) has no defined 8-bit range; '
                            'convert it to an 8- or 16-bit image')
    return img if img.mode == 'RGB' else img.convert('RGB')


def decode_image(source, name: str, resolution: int) -> np.ndarray:
    """uint8 HxWx3 at `resolution` from a file path or a file object; BadImageError naming `name`
    for anything PIL cannot decode, and for a decompression bomb (more than
    PIL.Image.MAX_IMAGE_PIXELS pixels: PIL only warns below twice that; here it is an error)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter('error', Image.DecompressionBombWarning)
            with Image.open(source) as img:
                img.load()
                return resize_center_crop(_to_rgb(img, name), resolution)
    except BadImageError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise BadImageError(f'{name}: refused: {e}') from None
    except (OSError, SyntaxError, ValueError, EOFError, struct.error, zlib.error, IndexError, TypeError,
            KeyError, MemoryError, OverflowError, ZeroDivisionError) as e:
        # PIL raises all of these for damaged files (UnidentifiedImageError, "image file is truncated", ...)
        raise BadImageError(f'{name}: not a readable image: {type(e).__name__}: '
                            f'{str(e).splitlines()[0] if str(e) else ""}') from None


def resize_center_crop(img: Image.Image, resolution: int) -> np.ndarray:
    """Resize the shorter side to `resolution` (bicubic), then crop the centre square."""
    w, h = img.size
    if max(w, h) > MAX_ASPECT * min(w, h):
        side = MAX_ASPECT * min(w, h)
        left, top = max((w - side) // 2, 0), max((h - side) // 2, 0)
        img = img.crop((left, top, left + min(w, side), top + min(h, side)))
        w, h = img.size
    scale = resolution / min(w, h)
    if (w, h) != (resolution, resolution):
        img = img.resize((max(resolution, round(w * scale)), max(resolution, round(h * scale))),
                         Image.BICUBIC)
    w, h = img.size
    left, top = (w - resolution) // 2, (h - resolution) // 2
    return np.asarray(img.crop((left, top, left + resolution, top + resolution)))


class Source:
    name = 'source'
    channels = 3
    classes: tuple = ()     # class names; empty = the source has no labels

    def __len__(self) -> int:
        raise NotImplementedError

    def label(self, index: int) -> int | None:
        """The class index of example `index` (into `classes`), or None without labels."""
        return None

    def labels(self, indices) -> list:
        return [self.label(int(i)) for i in indices]

    def image(self, index: int) -> np.ndarray:
        raise NotImplementedError

    def images(self, indices) -> np.ndarray:
        return np.stack([self.image(int(i)) for i in indices])


class DigitsSource(Source):
    """scikit-learn's handwritten digits (1,797 real 8x8 scans, 17 grey levels), upscaled."""
    channels = 1

    def __init__(self, resolution: int, labels: bool = False):
        from sklearn.datasets import load_digits
        self.name = 'sklearn.load_digits'
        digits = load_digits()
        self._raw = (digits.images * (255.0 / 16.0)).round().astype(np.uint8)
        self._labels = digits.target.astype(np.int64)
        if labels:
            self.classes = tuple(str(d) for d in range(10))
        self.resolution = resolution

    def label(self, index):
        return int(self._labels[index]) if self.classes else None

    def __len__(self):
        return len(self._raw)

    def image(self, index):
        img = Image.fromarray(self._raw[index], mode='L')
        if self.resolution != img.size[0]:
            img = img.resize((self.resolution, self.resolution), Image.BICUBIC)
        return np.asarray(img)[..., None]


class ImageFolderSource(Source):
    """Every image under a folder (any nesting), in sorted path order, as RGB."""

    def __init__(self, root: str, resolution: int, labels: bool = False):
        if not os.path.isdir(root):
            raise FileNotFoundError(f'data.image_dir is not a folder: {root!r}')
        self.name = f'image_dir:{os.path.abspath(root)}'
        self.paths = sorted(
            os.path.join(d, f) for d, _, files in os.walk(root) for f in files
            if f.lower().endswith(IMAGE_EXTENSIONS))
        if not self.paths:
            raise FileNotFoundError(f'no images ({", ".join(IMAGE_EXTENSIONS)}) under {root!r}')
        self.resolution = resolution
        # Labels when every image lies below a first-level subfolder: its name is the class.
        tops = [os.path.relpath(p, root).split(os.sep) for p in self.paths]
        if labels and not all(len(t) > 1 for t in tops):
            flat = next(os.path.join(root, *t) for t in tops if len(t) == 1)
            raise ValueError(f'data.class_labels=True, but {flat} is not inside a class subfolder of {root!r}')
        if labels:
            self.classes = tuple(sorted({t[0] for t in tops}))
            index = {c: i for i, c in enumerate(self.classes)}
            self._labels = [index[t[0]] for t in tops]

    def __len__(self):
        return len(self.paths)

    def label(self, index):
        return self._labels[index] if self.classes else None

    def image(self, index):
        return decode_image(self.paths[index], self.paths[index], self.resolution)


class TfdsSource(Source):
    """A prepared tfds split's images, read without TensorFlow and never all at once.

    ArrayRecord datasets are read at random through tfds's own data source
    (`as_data_source`, what `tfds.data_source` returns). TFRecord datasets are
    read by `TFRecordSplit` below, one file at a time: only the records an
    index asks for are read (plus the 12-byte headers of that file), so an
    encode holds one batch of images at most and a resumed encode reads only
    the shards it rewrites. Either way the stored image bytes are decoded with
    PIL exactly as image files are, so a tfds dataset and the same images in a
    folder give the same pixels. `records_read` counts what was read (for tests).
    """
    image_key = 'image'

    def __init__(self, name: str, split: str, resolution: int, data_dir: str | None = None,
                 labels: bool = False):
        builder = _tfds_builder(name, data_dir)  # first: it says what to install if tfds is missing
        from tensorflow_datasets.core import file_adapters
        from tensorflow_datasets.core.decode import base as decode_base
        with _metadata_errors(builder, name):
            splits, fmt, features = builder.info.splits, builder.info.file_format, builder.info.features
            if split.partition('[')[0] not in splits:
                raise ValueError(f'tfds {name}: split {split!r}: the dataset has splits {sorted(splits)}')
            split_info = splits[split]  # also slices: 'train[:1000]'
            instructions, num_examples = split_info.file_instructions, split_info.num_examples
        if fmt == file_adapters.FileFormat.ARRAY_RECORD:
            self._records = builder.as_data_source(split=split,
                                                   deserialize_method=decode_base.DeserializeMethod.RAW_BYTES)
        elif fmt in (None, file_adapters.FileFormat.TFRECORD):  # tfds' default format
            self._records = TFRecordSplit(instructions)
        else:
            raise ValueError(f'tfds {name}: file format {fmt.value} is not read here; prepare it as '
                             f'array_record or tfrecord')
        self.name = f'tfds:{name}/{split}'
        self.file_format = (fmt or file_adapters.FileFormat.TFRECORD).value
        self.resolution = resolution
        self.records_read = 0
        self._len = num_examples
        names = getattr(features['label'], 'names', None) if 'label' in features else None
        if labels and not names:
            raise ValueError(f'data.class_labels=True, but tfds {name} has no ClassLabel feature "label"')
        if labels:   # a tfds ClassLabel (imagenet2012: 1000 classes)
            self.classes = tuple(names)

    def __len__(self):
        return self._len

    def _features(self, payload: bytes) -> dict:
        try:
            return example_codec.decode_example(payload)
        except ValueError as e:  # a record that passed its checksum but holds no Example
            raise BadImageError(f'{self.name}: a record is not a tf.train.Example: {e}') from None

    def _pixels(self, payload: bytes) -> np.ndarray:
        features = self._features(payload)
        if not features.get(self.image_key):
            raise ValueError(f'{self.name}: examples have no {self.image_key!r} image; '
                             f'their bytes / int features: {sorted(features)}')
        return decode_image(io.BytesIO(features[self.image_key][0]), f'{self.name}: a record\'s image',
                            self.resolution)

    def image(self, index):
        return self.images([index])[0]

    def _payloads(self, indices):
        indices = [int(i) for i in indices]
        if isinstance(self._records, TFRecordSplit):
            payloads = [self._records.read(i) for i in indices]
        else:
            payloads = self._records.__getitems__(indices)
        self.records_read += len(payloads)
        return payloads

    def images(self, indices):
        payloads = self._payloads(indices)
        if self.classes:   # kept for `labels` of the same indices (the encode asks next): no second read
            self._labels_read = dict(zip((int(i) for i in indices), map(self._label_of, payloads)))
        return np.stack([self._pixels(p) for p in payloads])

    def _label_of(self, payload: bytes) -> int:
        label = self._features(payload).get('label')
        if not label or not isinstance(label[0], int) or not 0 <= label[0] < len(self.classes):
            raise BadImageError(f'{self.name}: a record\'s label {label!r:.40} is not one of its '
                                f'{len(self.classes)} classes')
        return label[0]

    def labels(self, indices):
        """The examples' `label` feature (from the last `images` call, or read again)."""
        cached = getattr(self, '_labels_read', {})
        if all(int(i) in cached for i in indices):
            return [cached[int(i)] for i in indices]
        return [self._label_of(p) for p in self._payloads(indices)]

    def label(self, index):
        return self.labels([index])[0] if self.classes else None


class _metadata_errors:
    """Any failure reading a prepared dataset's metadata (tfds parses dataset_info.json and
    features.json lazily, and raises its own ParseError, TypeError, ...) as one error naming them."""

    def __init__(self, builder, name: str):
        self.where = os.path.join(str(getattr(builder, 'data_dir', name)), 'dataset_info.json')

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None or issubclass(exc_type, (ValueError, KeyboardInterrupt, SystemExit)) and \
                str(exc).startswith('tfds '):
            return False
        raise UnreadableFileError(f'{self.where} (or features.json beside it): the tfds metadata cannot be read: '
                                  f'{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ""}') from None


def _tfds_builder(name: str, data_dir: str | None):
    """The builder of a prepared dataset: a directory holding dataset_info.json, or a name in data_dir."""
    try:
        import tensorflow_datasets as tfds
    except ImportError as e:
        raise ImportError('data.source=tfds needs tensorflow-datasets (pip install -e . or -r requirements.txt)') from e
    path = os.path.expanduser(name)
    if os.path.isfile(os.path.join(path, 'dataset_info.json')):
        try:
            return tfds.builder_from_directory(path)
        except Exception as e:  # noqa: BLE001 - tfds raises ParseError, KeyError, TypeError ... for damaged files
            raise UnreadableFileError(f'{os.path.join(path, "dataset_info.json")} (or features.json beside it): '
                                      f'the tfds metadata cannot be read: {type(e).__name__}: '
                                      f'{str(e).splitlines()[0] if str(e) else ""}') from None
    try:
        builder = tfds.builder(name, data_dir=data_dir or None)
    except Exception as e:  # noqa: BLE001 - tfds raises several kinds; the user needs one line
        raise FileNotFoundError(f'tfds dataset {name!r} not found (data_dir {data_dir or "tfds default"}): '
                                f'{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ""}') from None
    if not builder.info.splits:
        raise FileNotFoundError(f'tfds dataset {name!r} is not prepared under {builder.data_dir}: prepare it '
                                f'(e.g. `tfds build {name} --file_format=array_record`) or set data.tfds_data_dir')
    return builder


class TFRecordSplit:
    """The records of a tfds split stored as TFRecord files, by index, without TensorFlow.

    Built from the split's file instructions (file, skip, take), which tfds
    computes from dataset_info.json alone. One file is open at a time, with
    its record headers indexed (payloads are read only when asked for), so
    reading in order touches each file once.
    """

    def __init__(self, file_instructions):
        self._files = [(fi.filename, fi.skip, fi.take) for fi in file_instructions]
        self._starts = np.cumsum([0] + [take for _, _, take in self._files]).tolist()
        self._open_file, self._f, self._offsets = None, None, None

    def __len__(self):
        return self._starts[-1]

    def read(self, index: int) -> bytes:
        if not 0 <= index < len(self):
            raise IndexError(f'record {index} of a split of {len(self)}')
        k = bisect.bisect_right(self._starts, index) - 1
        path, skip, _ = self._files[k]
        if self._open_file != k:
            if self._f is not None:
                self._f.close()
            self._offsets = tfrecord.index_records(path)
            self._f, self._open_file = open(path, 'rb'), k
        record = skip + index - self._starts[k]
        if record >= len(self._offsets):  # dataset_info.json's shard lengths promise more than the file holds
            raise tfrecord.CorruptRecordError(path, record, os.path.getsize(path),
                                              f'the dataset\'s metadata says it holds record {record}, '
                                              f'the file ends after {len(self._offsets)}')
        return tfrecord.read_record(self._f, path, record, *self._offsets[record])


class Flipped(Source):
    """The base source followed by its horizontal mirror images."""

    def __init__(self, base: Source):
        self.base, self.name, self.channels = base, base.name + '+flips', base.channels
        self.classes = base.classes

    def __len__(self):
        return 2 * len(self.base)

    def images(self, indices):
        n = len(self.base)
        indices = [int(i) for i in indices]
        out = self.base.images([i % n for i in indices])
        return np.stack([img[:, ::-1] if i >= n else img for i, img in zip(indices, out)])

    def label(self, index):
        return self.base.label(index % len(self.base))

    def labels(self, indices):
        return self.base.labels([int(i) % len(self.base) for i in indices])

    def image(self, index):
        n = len(self.base)
        return self.base.image(index) if index < n else self.base.image(index - n)[:, ::-1]


def make_source(cfg) -> Source:
    """From the config's `data` group: source in ('digits', 'image_dir', 'tfds')."""
    labels = bool(cfg.get('class_labels', False))
    if cfg.source == 'digits':
        src = DigitsSource(cfg.resolution, labels)
    elif cfg.source == 'image_dir':
        src = ImageFolderSource(cfg.image_dir, cfg.resolution, labels)
    elif cfg.source == 'tfds':
        src = TfdsSource(cfg.tfds_name, cfg.tfds_split, cfg.resolution, cfg.tfds_data_dir, labels)
    else:
        raise ValueError(f"data.source {cfg.source!r}; valid: ('digits', 'image_dir', 'tfds')")
    return Flipped(src) if cfg.flips else src
