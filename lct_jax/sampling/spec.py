"""What every sampler shares: the spec a results row names, the per-sample keys and noise, the
classes of a class-conditional model's samples, and jitting over the mesh.

Noise is per sample: sample i uses keys derived from fold_in(key(seed), i) only, so the same seed
gives the same images whatever the batch size, the number of devices or processes. Every sampler
starts sample i from the same unit noise `unit_noise(keys, shape)` (the consistency and ODE
samplers scale it by sigma_max, the flow samplers take it as is), so models of different
objectives trained on the same data are compared on the same starting noise.
"""
from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np

from lct_jax import parallel


@dataclasses.dataclass(frozen=True)
class SamplerSpec:
    """One way of drawing samples, as a results row names it."""
    label: str        # '1-step', '2-step', 'euler-250', 'heun-40'
    method: str       # the sampler family: 'consistency' | 'euler' | 'heun' | 'meanflow' (sampling.FAMILIES)
    sigmas: tuple     # consistency: the step sigmas; ODE: the descending grid ending in 0;
                      # meanflow: the flow times, 1.0 down to 0.0
    nfe: int          # network evaluations per sample

    @property
    def file_label(self) -> str:   # '1step', 'euler250': for file and directory names
        return self.label.replace('-', '')


def class_of(indices, num_classes: int):
    """A class-conditional model draws sample i from class i mod num_classes: any run of
    num_classes consecutive indices is uniform over the classes (the FID over all classes), and
    class c's samples are c, c + num_classes, ... (`class_indices`, the per-class grids)."""
    return jnp.asarray(indices, jnp.int32) % num_classes


def class_indices(label: int, count: int, num_classes: int) -> np.ndarray:
    """The first `count` sample indices of class `label`."""
    return (label + num_classes * np.arange(count)).astype(np.int32)


def with_labels(apply_fn, indices, num_classes: int):
    """apply_fn with the samples' classes as labels (a class-conditional model), else apply_fn."""
    if not num_classes:
        return apply_fn
    return functools.partial(apply_fn, labels=class_of(indices, num_classes))


def sample_keys(seed: int, indices) -> jax.Array:
    base = jax.random.key(seed)
    return jax.vmap(lambda i: jax.random.fold_in(base, i))(jnp.asarray(indices))


def unit_noise(keys, shape, stream: int = 0):
    """Each sample's unit Gaussian of `shape` from its key folded with `stream` (0: the start)."""
    return jax.vmap(lambda k: jax.random.normal(jax.random.fold_in(k, stream), shape, jnp.float32))(keys)


def jit_over_mesh(fn, mesh):
    """jit a (params, indices) -> latents function; indices and output sharded on 'data'.

    The params keep the layout they come in (None: unconstrained), replicated or FSDP-sharded
    (the grids written during an FSDP run): XLA gathers sharded weights where they are used.
    """
    if mesh is None:
        return jax.jit(fn)
    return jax.jit(fn, in_shardings=(None, parallel.batch_sharding(mesh)),
                   out_shardings=parallel.batch_sharding(mesh))
