"""`--mode=encode`: images -> autoencoder latents -> TFRecord shards, manifest, stats.

Each example also holds its integer class label when the source has labels
(class subfolders of an image folder, a tfds `label`, the digits' 10 classes);
the manifest then lists the classes (`num_classes`, `classes`).

Shard i holds the examples [i * per_shard, (i + 1) * per_shard) in order. Each
example's posterior noise comes from fold_in(seed, index), so a shard's bytes
do not depend on batching or on which run wrote it: an interrupted encode
re-run writes only the missing shards (a shard appears under its final name
only once complete) and ends with the same files. With several processes,
process p encodes shards p, p + P, ...; process 0 then writes the stats, the
manifest, and tfds metadata (so `tfds.builder_from_directory` reads the shards).
"""
from __future__ import annotations

import math
import os

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import multihost_utils

from lct_jax import parallel, writer
from lct_jax.data import latents, tfrecord
from lct_jax.data.tfds_metadata import write_tfds_metadata
from lct_jax.progress import Progress


def _shard_complete(path: str, expected: int) -> bool:
    if not os.path.exists(path):
        return False
    try:
        return len(tfrecord.index_records(path)) == expected
    except tfrecord.CorruptRecordError:
        return False


def encode_dataset(source, codec, latent_dir: str, *, seed: int = 0, batch_size: int = 64,
                   examples_per_shard: int = 2048, show_progress: bool = True) -> dict:
    """Encode every image of `source` into `latent_dir`; returns the manifest."""
    os.makedirs(latent_dir, exist_ok=True)
    writer.remove_stale_temporaries(latent_dir)  # the shards a killed encode was writing
    n = len(source)
    num_shards = max(1, math.ceil(n / examples_per_shard))
    names = [latents.shard_name(i, num_shards) for i in range(num_shards)]
    base_key = jax.random.key(seed)
    keys_for = jax.jit(jax.vmap(lambda i: jax.random.fold_in(base_key, i)))
    mine = [i for i in range(num_shards) if i % jax.process_count() == jax.process_index()]
    todo = []
    for i in mine:
        count = min(examples_per_shard, n - i * examples_per_shard)
        if not _shard_complete(os.path.join(latent_dir, names[i]), count):
            todo.append(i)
    # Each batch is split over this process's devices (SPMD through the jitted encoder).
    local_sharding = parallel.batch_sharding(parallel.make_mesh(jax.local_devices()))
    ndev = len(jax.local_devices())
    total = sum(min(examples_per_shard, n - i * examples_per_shard) for i in todo)
    progress = Progress('encode', total, unit='img', enabled=show_progress)
    done = 0
    for i in todo:
        lo, hi = i * examples_per_shard, min((i + 1) * examples_per_shard, n)
        with tfrecord.TFRecordWriter(os.path.join(latent_dir, names[i])) as shard:
            for start in range(lo, hi, batch_size):
                idx = np.arange(start, min(start + batch_size, hi))
                images = source.images(idx).astype(np.float32) / 127.5 - 1.0
                keys = keys_for(jnp.asarray(idx))
                if len(idx) % ndev == 0:
                    images, keys = jax.device_put((images, keys), local_sharding)
                z = np.asarray(codec.encode(keys, jnp.asarray(images)), np.float32)
                labels = source.labels(idx) if source.classes else [None] * len(idx)
                for j, latent, label in zip(idx, z, labels):
                    shard.write(tfrecord.encode_latent(latent, int(j), label))
                done += len(idx)
                progress.update(done, f'shard {i + 1}/{num_shards}')
    progress.close()
    if jax.process_count() > 1:
        multihost_utils.sync_global_devices('lct_jax_encode_shards_written')
    manifest = {
        'count': n, 'shape': list(codec.latent_shape(source.resolution)), 'dtype': 'float32',
        'scale_factor': codec.scale_factor, 'autoencoder': codec.name,
        'autoencoder_weights_sha256': codec.weights_sha256, 'source': source.name,
        'resolution': source.resolution, 'image_channels': source.channels,
        'posterior_seed': seed, 'shards': names,
        # Class labels stored with each example (0 = none): the source's classes, in label order.
        'num_classes': len(source.classes), 'classes': list(source.classes),
    }
    if jax.process_index() == 0:
        write_stats(latent_dir, names, codec.scale_factor, tuple(manifest['shape']))
        writer.write_json(os.path.join(latent_dir, latents.MANIFEST), manifest)
        offer_to_tfds(latent_dir, manifest,
                      [min(examples_per_shard, n - i * examples_per_shard) for i in range(num_shards)])
    if jax.process_count() > 1:
        multihost_utils.sync_global_devices('lct_jax_encode_manifest_written')
    return manifest


def offer_to_tfds(latent_dir: str, manifest: dict, shard_lengths) -> None:
    """tfds metadata beside the shards, where tensorflow-datasets is installed (nothing needs it)."""
    try:
        write_tfds_metadata(latent_dir, manifest, shard_lengths)
    except ImportError:
        pass


def write_stats(latent_dir: str, shard_names, scale_factor: float, shape) -> None:
    """Per-element mean and (unbiased, as torch.std) std of latent / scale_factor (spec §2.3)."""
    total = np.zeros(shape, np.float64)
    total_sq = np.zeros(shape, np.float64)
    count = 0
    for name in shard_names:
        for payload in tfrecord.read_all(os.path.join(latent_dir, name)):
            x = tfrecord.decode_latent(payload)[0].astype(np.float64) / scale_factor
            total += x
            total_sq += x * x
            count += 1
    mean = total / count
    var = (total_sq - count * mean**2) / max(count - 1, 1)
    std = np.sqrt(np.maximum(var, 0.0))
    writer.write_npz(os.path.join(latent_dir, latents.STATS), mean=mean.astype(np.float32),
                     std=std.astype(np.float32), count=count)
