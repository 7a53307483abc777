"""Features of the real reference images, computed once and kept on disk.

Why: a study evaluates every run at several checkpoints against one and the
same reference set. When that set is the decoded training latents (the
default when no reference_dir / reference_tfds / reference_stats is given),
each evaluation decoded every latent again and ran the feature network over
it: on the digits latent study about a third of an evaluation's time, spent
105 times on identical inputs.

What is cached: {name: features} as `cli.reference_feature_sets` returns it.
The key is a hash of everything the features depend on: the latent
directory's manifest and each shard's name, size and modification time (a
re-encode changes them), the decoding weights' SHA-256 (the codec computes it
anyway), the feature networks and their settings, the limits, and this
module's CACHE_VERSION. Image folders and tfds references are not cached
(fingerprinting 30k files per evaluation would cost what it saves). Entries are
read and written as lct_jax/cache_dirs.py says (`cached_arrays`).

Location: <lct_jax cache>/reference_features (lct_jax/cache_dirs.py);
`evaluation.reference_cache=False` turns it off.
"""
from __future__ import annotations

import hashlib
import json
import os
import zipfile
from typing import Callable

from lct_jax import parallel, writer
from lct_jax.cache_dirs import cache_root, cached_arrays, write_arrays
from lct_jax.data.latents import read_manifest
from lct_jax.models.autoencoder import file_sha256

CACHE_VERSION = 1


def latent_dir_fingerprint(latent_dir: str) -> dict:
    """The manifest's content and (name, size, mtime_ns) of each shard: what a re-encode changes."""
    manifest_json = read_manifest(latent_dir)  # checked: shard names stay inside latent_dir
    with open(os.path.join(latent_dir, 'manifest.json'), 'rb') as f:
        manifest = f.read()
    shards = []
    for name in manifest_json['shards']:
        st = os.stat(os.path.join(latent_dir, name))
        shards.append([name, st.st_size, st.st_mtime_ns])
    stats = os.path.join(latent_dir, 'stats.npz')
    return {'manifest_sha256': hashlib.sha256(manifest).hexdigest(), 'shards': shards,
            'stats_sha256': file_sha256(stats) if os.path.exists(stats) else ''}


def cache_key(parts: dict) -> str:
    """A stable hash of JSON-able `parts` (sorted keys)."""
    blob = json.dumps({'version': CACHE_VERSION, **parts}, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:32]


_AGREEMENTS = [0]


def _every_process_has(path: str) -> bool:
    """Does every process's cache hold a readable entry at `path`? The computation has collectives
    (the decode and features run on the mesh, evaluation/sharded.py): if one host computed while
    another read its own disk's copy, the first would wait for the second forever. So a hit counts
    only when it is a hit everywhere (hosts need not share a file system)."""
    import jax
    import numpy as np
    try:
        with np.load(path) as z:
            readable = bool(z.files) and all(z[k].size >= 0 for k in z.files)
    except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile):
        readable = False
    if jax.process_count() == 1:
        return readable
    from jax.experimental import multihost_utils
    _AGREEMENTS[0] += 1
    parallel.barrier(f'lct_jax/reference_cache/{_AGREEMENTS[0]}')
    return bool(np.min(multihost_utils.process_allgather(np.int32(readable))))


def cached_features(parts: dict, compute: Callable[[], dict], root: str | None = None) -> tuple[dict, str]:
    """(features, 'hit' | 'miss'): the stored {name: array} for `parts`, or compute() stored under it
    (computed by every process together unless every process's cache holds it)."""
    path = os.path.join(root or cache_root(), 'reference_features', cache_key(parts) + '.npz')
    if _every_process_has(path):
        features, how = cached_arrays(path, compute)
    else:  # some process lacks it: all compute together, each stores it
        features, how = compute(), 'miss'
        write_arrays(path, features)
    if how == 'miss' and os.path.exists(path):
        # what the key was made of, for a reader
        writer.write_json(path[:-len('.npz')] + '.json', parts, sort_keys=True, default=str)
    return features, how
