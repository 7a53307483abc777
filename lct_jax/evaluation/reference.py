"""The real images an evaluation compares against, and their features.

The reference is an image folder (evaluation.reference_dir), a tfds dataset
(evaluation.reference_tfds), or else the training latents decoded (the autoencoder's
reconstructions: the best a generator can reach through this decoder). Decoding and feature
networks run on every device of the mesh, each on its rows of a batch (sharded.py). The decoded
training latents' features are kept on disk (reference_cache.py): a study evaluates ~100
checkpoints against the same set.
"""
from __future__ import annotations

import os

import jax
import numpy as np

from lct_jax import parallel
from lct_jax.cache_dirs import cache_root
from lct_jax.data.latents import LatentDataset, latent_dir_of
from lct_jax.data.sources import ImageFolderSource, TfdsSource
from lct_jax.evaluation import reference_cache, sharded
from lct_jax.evaluation.features import FeatureNet
from lct_jax.models.autoencoder import make_codec


def real_image_batches(config, workdir, limit: int | None = None, batch: int = 500, codec=None):
    """uint8 NHWC batches of real images: an image folder, a tfds dataset, else the decoded training
    latents (with `codec`, default the config's); the first `limit` of them if given."""
    ev = config.evaluation
    src = None
    if ev.reference_dir:
        src = ImageFolderSource(ev.reference_dir, config.data.resolution)
    elif ev.reference_tfds:
        name, _, split = ev.reference_tfds.partition(':')
        src = TfdsSource(name, split or 'train', config.data.resolution, config.data.tfds_data_dir)
    if src is not None:
        n = min(len(src), limit or len(src))
        for i in range(0, n, batch):
            yield src.images(range(i, min(i + batch, n)))
        return
    ds = LatentDataset(latent_dir_of(config, workdir))
    codec = codec or make_codec(config.autoencoder, config.model.in_channels)
    decode = sharded.host_decoder(codec, parallel.make_mesh())  # each device decodes its rows of a batch
    scale = ds.manifest['scale_factor']
    n = min(len(ds), limit or len(ds))
    for i in range(0, n, batch):
        yield decode(ds.read_batch(range(i, min(i + batch, n))) / scale)


def reference_feature_sets(config, workdir, features: dict, limits: dict | None = None, codec=None) -> dict:
    """{name: features of the real images} for several feature functions in one pass over the
    images (each decoded once, by `codec` if given); limits[name] keeps only that many images for that name."""
    limits = limits or {}
    cap = None if any(limits.get(k) is None for k in features) else max(limits[k] for k in features)
    mesh = parallel.make_mesh()  # a FeatureNet runs on every device, each on its rows of a batch
    features = {k: sharded.host_features(fn, mesh) if isinstance(fn, FeatureNet) else fn for k, fn in features.items()}
    out, seen = {k: [] for k in features}, 0
    for images in real_image_batches(config, workdir, cap, codec=codec):
        for name, fn in features.items():
            keep = len(images) if limits.get(name) is None else max(min(len(images), limits[name] - seen), 0)
            if keep:
                out[name].append(fn(images[:keep]))
        seen += len(images)
    return {k: np.concatenate(v) for k, v in out.items()}


def reference_features(config, workdir, features: dict, limits: dict) -> dict:
    """`reference_feature_sets`, kept on disk when the reference is the decoded training latents."""
    ev = config.evaluation
    if not ev.reference_cache or ev.reference_dir or ev.reference_tfds:
        return reference_feature_sets(config, workdir, features, limits)
    codec = make_codec(config.autoencoder, config.model.in_channels)  # built once: its hash keys the cache

    def compute():
        return reference_feature_sets(config, workdir, features, limits, codec=codec)

    parts = {'latents': reference_cache.latent_dir_fingerprint(latent_dir_of(config, workdir)),
             'decoder': {'name': codec.name, 'weights_sha256': codec.weights_sha256,
                         'autoencoder': config.autoencoder.to_dict()},
             'features': {name: getattr(fn, 'fingerprint', None) for name, fn in features.items()},
             'limits': {name: limits.get(name) for name in features}}
    if any(fp is None for fp in parts['features'].values()):  # a feature function we cannot name
        return compute()
    real, how = reference_cache.cached_features(parts, compute)
    if jax.process_index() == 0:
        sizes = ', '.join(f'{v.shape[0]:,} images x {v.shape[1]:,} features ({name})' for name, v in real.items())
        where = os.path.join(cache_root(), 'reference_features')
        print(f'reference features of the training data: {sizes}, '
              + (f'read from the cache in {where}' if how == 'hit' else f'computed and cached in {where} for next time'),
              flush=True)
    return real


def reference_split(config) -> str:
    """Which real images the reference is, as a statistics file records it."""
    ev = config.evaluation
    if ev.reference_tfds:
        name, _, split = ev.reference_tfds.partition(':')
        return f'tfds {name}:{split or "train"}'
    if ev.reference_dir:
        return f'folder {os.path.basename(os.path.normpath(ev.reference_dir))}'
    return 'train (the decoded training latents)'
