"""An encoded latent dataset on disk: shards, manifest, normalisation statistics.

Layout of a latent directory:
  shard-00000-of-00016.tfrecord ...   the latents (see `tfrecord.py`)
  manifest.json                        count, shape, dtype, scale_factor, autoencoder, source, shards,
                                       num_classes, classes (class labels stored with the examples)
  stats.npz                            per-element mean / std of latent / scale_factor (spec §2.3)

`LatentDataset` indexes the shards once (headers only) and then reads any
example by its dataset index, so each process reads exactly the records of
its share of each global batch.
"""
from __future__ import annotations

import bisect
import math
import os
import threading

import numpy as np

from lct_jax import untrusted
from lct_jax.data import tfrecord
from lct_jax.names import UnsafeNameError, check_component

MANIFEST = 'manifest.json'
STATS = 'stats.npz'


def latent_dir_of(config, workdir: str) -> str:
    """Where a run's encoded dataset is: data.latent_dir, or <workdir>/latents."""
    return config.data.latent_dir or os.path.join(workdir, 'latents')


def shard_name(i: int, n: int) -> str:
    return f'shard-{i:05d}-of-{n:05d}.tfrecord'


def read_manifest(latent_dir: str) -> dict:
    """The manifest, its fields checked: a damaged or hand-edited one is an error naming it, not a
    wrong dataset (a shard name must be a file in `latent_dir`, never a path out of it)."""
    path = os.path.join(latent_dir, MANIFEST)
    if not os.path.exists(path):
        raise FileNotFoundError(f'no {MANIFEST} in {latent_dir}: encode the dataset first '
                                f'(python -m lct_jax.main --mode=encode ...)')
    m = untrusted.read_json(path, 'a latent manifest', expect=dict)
    what = 'the latent manifest'
    count = untrusted.field(path, m, 'count', int, what, lambda n: n >= 0)
    untrusted.field(path, m, 'shape', list, what,
                    lambda s: 1 <= len(s) <= 4 and all(isinstance(d, int) and not isinstance(d, bool)
                                                       and 0 < d <= 1 << 16 for d in s))
    untrusted.field(path, m, 'scale_factor', (int, float), what, lambda x: math.isfinite(x) and x != 0)
    shards = untrusted.field(path, m, 'shards', list, what)
    for name in shards:
        try:
            check_component(name, f'{path}: shard name')
        except UnsafeNameError as e:
            raise untrusted.UnreadableFileError(str(e)) from None
    if len(set(shards)) != len(shards):
        raise untrusted.UnreadableFileError(f'{path}: {what} lists a shard twice')
    if count and not shards:
        raise untrusted.UnreadableFileError(f'{path}: {what} says {count} examples but lists no shards')
    if 'num_classes' in m:
        n = untrusted.field(path, m, 'num_classes', int, what, lambda n: n >= 0)
        classes = m.get('classes', [])
        if not isinstance(classes, list) or (n and len(classes) != n):
            raise untrusted.UnreadableFileError(f'{path}: {what}: num_classes {n} but classes {classes!r:.80}')
    return m


def read_stats(latent_dir: str, shape: tuple | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(mean, std) of stats.npz: finite, of one shape (`shape` when given), std >= 0."""
    path = os.path.join(latent_dir, STATS)
    f = untrusted.load_npz(path, 'latent statistics', required=('mean', 'std'))
    mean = untrusted.finite_array(path, f, 'mean', 'latent statistics').astype(np.float32)
    std = untrusted.finite_array(path, f, 'std', 'latent statistics').astype(np.float32)
    if mean.shape != std.shape or (shape is not None and mean.shape != tuple(shape)):
        raise untrusted.UnreadableFileError(
            f'{path}: mean {mean.shape} and std {std.shape}'
            + (f'; the manifest says latents of shape {tuple(shape)}' if shape is not None else '')
            + ': the statistics are not of this dataset (re-encode, or restore the file)')
    if (std < 0).any():
        raise untrusted.UnreadableFileError(f'{path}: std holds negative values')
    return mean, std


class LatentDataset:
    """Random access to the examples of a latent directory, by dataset index."""

    def __init__(self, latent_dir: str):
        self.dir = latent_dir
        self.manifest = read_manifest(latent_dir)
        self.shape = tuple(self.manifest['shape'])
        self.paths = [os.path.join(latent_dir, s) for s in self.manifest['shards']]
        self._records = [tfrecord.index_records(p) for p in self.paths]
        self._starts = np.cumsum([0] + [len(r) for r in self._records]).tolist()
        if self._starts[-1] != self.manifest['count']:
            raise ValueError(f'{latent_dir}: the shards hold {self._starts[-1]} examples but '
                             f'{MANIFEST} says {self.manifest["count"]}')
        self._local = threading.local()

    def __len__(self) -> int:
        return self._starts[-1]

    def _file(self, shard: int):
        files = getattr(self._local, 'files', None)
        if files is None:
            files = self._local.files = {}
        if shard not in files:
            files[shard] = open(self.paths[shard], 'rb')
        return files[shard]

    @property
    def num_classes(self) -> int:
        """Classes of the labels stored with the examples; 0 = none (or encoded before labels existed)."""
        return int(self.manifest.get('num_classes', 0))

    def read(self, index: int) -> np.ndarray:
        """Example `index` (position in the shards = index in the source dataset)."""
        return self.read_labeled(index)[0]

    def read_labeled(self, index: int) -> tuple[np.ndarray, int | None]:
        """(latent, class label or None) of example `index`."""
        shard = bisect.bisect_right(self._starts, index) - 1
        rec = index - self._starts[shard]
        offset, length = self._records[shard][rec]
        payload = tfrecord.read_record(self._file(shard), self.paths[shard], rec, offset, length)
        try:
            latent, stored_index, label = tfrecord.decode_labeled_latent(payload)
        except (ValueError, KeyError, IndexError, TypeError) as e:  # a well-framed record holding no latent Example
            raise tfrecord.CorruptRecordError(self.paths[shard], rec, offset - 12,
                                              f'not a latent Example ({type(e).__name__}: {e})') from None
        if latent.shape != self.shape:
            raise ValueError(f'{self.paths[shard]} record {rec}: shape {latent.shape}, '
                             f'manifest says {self.shape}')
        if stored_index != index:
            raise ValueError(f'{self.paths[shard]} record {rec}: holds example {stored_index}, '
                             f'expected {index}')
        return latent, label

    def read_batch(self, indices) -> np.ndarray:
        return np.stack([self.read(int(i)) for i in indices])

    def read_labeled_batch(self, indices) -> tuple[np.ndarray, np.ndarray]:
        """(latents, int32 class labels) of the examples; an error if one has no label."""
        items = [self.read_labeled(int(i)) for i in indices]
        missing = [int(i) for i, (_, y) in zip(indices, items) if y is None]
        if missing:
            raise ValueError(f'{self.dir}: examples {missing[:5]} have no class label; encode a source with '
                             f'labels (class subfolders, a tfds label) for a class-conditional model')
        return np.stack([x for x, _ in items]), np.asarray([y for _, y in items], np.int32)
