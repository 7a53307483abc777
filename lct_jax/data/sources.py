"""Image sources for encoding: the packaged default, an image folder, a tfds dataset.

Each source is a sequence of uint8 HxWxC images at the configured resolution,
addressed by index (so an interrupted encode can resume any shard).
Optional precomputed horizontal flips (as the authors' LSUN Church set):
indices n..2n-1 are the mirror images of 0..n-1.
"""
from __future__ import annotations

import os

import numpy as np
from PIL import Image

IMAGE_EXTENSIONS = ('.jpg', '.jpeg', '.png', '.webp', '.bmp')


def resize_center_crop(img: Image.Image, resolution: int) -> np.ndarray:
    """Resize the shorter side to `resolution` (bicubic), then crop the centre square."""
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

    def __len__(self) -> int:
        raise NotImplementedError

    def image(self, index: int) -> np.ndarray:
        raise NotImplementedError

    def images(self, indices) -> np.ndarray:
        return np.stack([self.image(int(i)) for i in indices])


class DigitsSource(Source):
    """scikit-learn's handwritten digits (1,797 real 8x8 scans, 17 grey levels), upscaled."""
    channels = 1

    def __init__(self, resolution: int):
        from sklearn.datasets import load_digits
        self.name = 'sklearn.load_digits'
        self._raw = (load_digits().images * (255.0 / 16.0)).round().astype(np.uint8)
        self.resolution = resolution

    def __len__(self):
        return len(self._raw)

    def image(self, index):
        img = Image.fromarray(self._raw[index], mode='L')
        if self.resolution != img.size[0]:
            img = img.resize((self.resolution, self.resolution), Image.BICUBIC)
        return np.asarray(img)[..., None]


class ImageFolderSource(Source):
    """Every image under a folder (any nesting), in sorted path order, as RGB."""

    def __init__(self, root: str, resolution: int):
        if not os.path.isdir(root):
            raise FileNotFoundError(f'data.image_dir is not a folder: {root!r}')
        self.name = f'image_dir:{os.path.abspath(root)}'
        self.paths = sorted(
            os.path.join(d, f) for d, _, files in os.walk(root) for f in files
            if f.lower().endswith(IMAGE_EXTENSIONS))
        if not self.paths:
            raise FileNotFoundError(f'no images ({", ".join(IMAGE_EXTENSIONS)}) under {root!r}')
        self.resolution = resolution

    def __len__(self):
        return len(self.paths)

    def image(self, index):
        with Image.open(self.paths[index]) as img:
            return resize_center_crop(img.convert('RGB'), self.resolution)


class TfdsSource(Source):
    """A tfds dataset's images (needs TensorFlow and the dataset prepared locally)."""

    def __init__(self, name: str, split: str, resolution: int, data_dir: str | None = None):
        try:
            import tensorflow_datasets as tfds
        except ImportError as e:
            raise ImportError('data.tfds_name needs tensorflow and tensorflow-datasets installed') from e
        self.name = f'tfds:{name}/{split}'
        ds = tfds.load(name, split=split, data_dir=data_dir or None, download=False)
        self._images = [ex['image'] for ex in tfds.as_numpy(ds)]
        self.resolution = resolution

    def __len__(self):
        return len(self._images)

    def image(self, index):
        return resize_center_crop(Image.fromarray(self._images[index]).convert('RGB'), self.resolution)


class Flipped(Source):
    """The base source followed by its horizontal mirror images."""

    def __init__(self, base: Source):
        self.base, self.name, self.channels = base, base.name + '+flips', base.channels

    def __len__(self):
        return 2 * len(self.base)

    def image(self, index):
        n = len(self.base)
        return self.base.image(index) if index < n else self.base.image(index - n)[:, ::-1]


def make_source(cfg) -> Source:
    """From the config's `data` group: source in ('digits', 'image_dir', 'tfds')."""
    if cfg.source == 'digits':
        src = DigitsSource(cfg.resolution)
    elif cfg.source == 'image_dir':
        src = ImageFolderSource(cfg.image_dir, cfg.resolution)
    elif cfg.source == 'tfds':
        src = TfdsSource(cfg.tfds_name, cfg.tfds_split, cfg.resolution)
    else:
        raise ValueError(f"data.source {cfg.source!r}; valid: ('digits', 'image_dir', 'tfds')")
    return Flipped(src) if cfg.flips else src
