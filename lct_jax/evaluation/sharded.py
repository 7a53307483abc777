"""Evaluation as programs on the mesh: every device samples, decodes and featurizes its own rows.

Why: `--mode=evaluate` used to gather every sampled latent to every host, decode all of them
and run the feature network over all of them on one device of each host. On a v4-32 (16 chips,
4 hosts) each host repeated the whole FID-50k alone, the SD-VAE decode of 50,000 images on one
chip instead of sixteen, holding 50,000 x 256 x 256 x 3 bytes (about 9.8 GB) of images.

Here, for one sampler and one batch of sample indices (sharded on 'data'):

    indices --sampler--> latents --decode, to uint8, each feature network--> {name: features}

all on the mesh (`shard_map`: each device its own rows; the decoder's and the feature
networks' weights replicated program inputs), and only the features (64, 2,048 or 4,096 floats per image)
are gathered to the hosts. No host ever holds more images than it decodes itself, so host
memory grows with num_samples by the features only. `--mode=sample` gathers the decoded
uint8 images one batch at a time (`image_batches`), never all of them at once.

Sample i's noise depends on i alone (lct_jax/sampling.py), and each device runs a batch of
sampling.device_batch rows whatever the layout, so the samples, the features and the FID are
bitwise the same on 1 device, 8 devices or 2 processes x 2 devices (tests/test_sharded_evaluation.py).
"""
from __future__ import annotations

from typing import Callable, Iterator

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import PartitionSpec as P

from lct_jax import parallel


def to_uint8(images):
    """[-1, 1] images -> uint8 on the device: models.autoencoder.to_uint8's arithmetic, in jnp."""
    return (jnp.clip((images + 1.0) / 2.0, 0.0, 1.0) * 255.0 + 0.5).astype(jnp.uint8)


def decode_images(codec, normalizer) -> Callable:
    """(decoder weights, normalised latents) -> uint8 images, traceable (runs inside the programs
    below, which take the weights replicated as an argument: never folded in as constants)."""
    return lambda weights, x: to_uint8(codec.decode_with(weights, normalizer.denormalize(x)))


def per_device(fn: Callable, mesh, replicated_args: int = 1) -> Callable:
    """`fn(*replicated, rows)` on each device's own rows of a batch sharded on 'data', jitted."""
    spec = P(parallel.DATA_AXIS)
    return jax.jit(jax.shard_map(fn, mesh=mesh, in_specs=(P(),) * replicated_args + (spec,),
                                 out_specs=spec, check_vma=False))


def make_featurizer(codec, normalizer, nets: dict, mesh) -> Callable:
    """latents (global, sharded on 'data') -> {name: float32 features, sharded on 'data'}: the
    images are decoded and each FeatureNet in `nets` applied on the device that sampled them."""
    decode = decode_images(codec, normalizer)

    def program(params, x):
        images = decode(params['decoder'], x)
        return {name: net.apply(params['nets'][name], images) for name, net in nets.items()}

    fn = per_device(program, mesh)
    params = {'decoder': parallel.replicate(codec.params, mesh),
              'nets': {name: parallel.replicate(net.params, mesh) for name, net in nets.items()}}
    return lambda x: fn(params, x)


def make_image_decoder(codec, normalizer, mesh) -> Callable:
    """latents (sharded on 'data') -> uint8 images (sharded on 'data'), decoded where they lie."""
    fn = per_device(decode_images(codec, normalizer), mesh)
    weights = parallel.replicate(codec.params, mesh)
    return lambda x: fn(weights, x)


_GATHERS = [0]


def gather(tree):
    """A pytree of global arrays sharded on 'data' -> host numpy, every process the whole of it.
    The one place rows leave the devices (a test wraps it to check only features pass).

    With several processes, each first waits for its own rows and meets the others at a barrier
    (parallel.barrier): a peer still compiling the first batch's programs must not make the
    gather's collective time out (Gloo gives its peers 30 s). Every process gathers the same
    batches in the same order, so the barriers' names agree."""
    if jax.process_count() > 1:
        jax.block_until_ready(tree)
        _GATHERS[0] += 1
        parallel.barrier(f'lct_jax/evaluation/gather/{_GATHERS[0]}')
    return multihost_utils.process_allgather(tree, tiled=True)


def padded_batch(sampling_config, mesh, num: int) -> int:
    """The global batch of an evaluation or of --mode=sample of `num` samples: sampling.device_batch
    rows per device (or fewer when `num` needs fewer). The same per-device shapes give the same
    numbers on any number of devices and hosts: XLA's kernels may round a row differently in a
    program of another batch size, and one uint8 pixel flipped by that moved a 100-sample FID by
    1.5e-6. With device_batch=0: sampling.batch_size rounded down to a multiple of the devices."""
    d = mesh.devices.size
    per_device = int(sampling_config.get('device_batch', 0) or 0)
    if per_device:
        return min(per_device, -(-num // d)) * d
    return max(sampling_config.batch_size // d, 1) * d


def batches(sampler, params, num: int, batch: int, mesh) -> Iterator[tuple[int, int, jax.Array]]:
    """(start, rows kept, latents of samples start..start+batch-1 on the mesh) for every batch;
    the tail batch is padded to `batch` (the same program) and its extra rows dropped."""
    for start in range(0, num, batch):
        idx = np.arange(start, start + batch, dtype=np.int32)
        yield start, min(batch, num - start), sampler(params, parallel.shard_host_array(idx, mesh))


def sampled_features(sampler, params, featurize, num: int, batch: int, mesh, progress=None) -> dict:
    """{name: (num, D) float64} features of samples 0..num-1, only features gathered to the hosts."""
    parts = {}
    for start, keep, x in batches(sampler, params, num, batch, mesh):
        feats = gather(featurize(x))
        for name, f in feats.items():
            parts.setdefault(name, []).append(np.asarray(f[:keep], np.float64))
        if progress is not None:
            progress.update(start + keep)
            if start == 0:
                progress.restart_clock(keep)  # the first batch compiled: the rate counts from here
    return {name: np.concatenate(v) for name, v in parts.items()}


def image_batches(sampler, params, decoder, num: int, batch: int, mesh,
                  with_latents: bool = False) -> Iterator[tuple]:
    """(start, uint8 images[, latents]) batch by batch, gathered to every host one batch at a time."""
    for start, keep, x in batches(sampler, params, num, batch, mesh):
        images = gather(decoder(x))[:keep]
        yield (start, images, gather(x)[:keep]) if with_latents else (start, images)


# --- the real reference: host batches that every process reads in full, worked on the mesh ---

class Unscaled:
    """A normaliser for latents already in the decoder's space (the training latents / scale)."""

    @staticmethod
    def denormalize(x):
        return x


def on_mesh_rows(program, rows: np.ndarray, mesh):
    """program(rows sharded on 'data') for host `rows` that every process holds in full (padded to
    a multiple of the devices, the padding dropped): each device works on its own part, and the
    result is gathered."""
    n, d = len(rows), mesh.devices.size
    pad = (-n) % d
    if pad:
        rows = np.concatenate([rows, np.repeat(rows[-1:], pad, axis=0)])
    out = gather(program(parallel.shard_host_array(rows, mesh)))
    return jax.tree_util.tree_map(lambda a: a[:n], out)


def host_decoder(codec, mesh) -> Callable:
    """unscaled latents (host) -> uint8 images (host), decoded on every device of the mesh."""
    decoder = make_image_decoder(codec, Unscaled(), mesh)
    return lambda latents: on_mesh_rows(decoder, np.asarray(latents, np.float32), mesh)


def host_features(net, mesh) -> Callable:
    """uint8 images (host) -> (N, D) float64 features of a FeatureNet, computed on every device."""
    fn = per_device(net.apply, mesh)
    params = parallel.replicate(net.params, mesh)
    return lambda images: np.asarray(on_mesh_rows(lambda x: fn(params, x), np.asarray(images), mesh), np.float64)
