"""`FeatureNet`: a feature network as a pure function and its weights (features.py makes them)."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from lct_jax.models.autoencoder import file_sha256


class FeatureNet:
    """A feature network as a pure function and its weights.

    apply(params, images uint8 NHWC) -> (N, dims) float32, traceable: the same function gives the
    generated images' features on the mesh and the real images' on the host, so the two agree.
    """

    def __init__(self, apply, params, dims: int, fingerprint: dict, batch_size: int = 100):
        self.apply, self.params, self.dims = apply, params, dims
        self.fingerprint, self.batch_size = fingerprint, batch_size
        self._jitted = jax.jit(apply)

    def identity(self) -> dict:
        """The network and its weights, the same on any machine: the fingerprint without the weights
        file's path, size and time, with the weights' SHA-256 (what a statistics file records)."""
        fp = {k: v for k, v in self.fingerprint.items() if k not in ('weights', 'size', 'mtime_ns')}
        if 'weights_sha256' not in fp and 'weights' in self.fingerprint:
            fp['weights_sha256'] = file_sha256(self.fingerprint['weights'])
        return fp

    def __call__(self, images: np.ndarray) -> np.ndarray:
        """(N, dims) float64 features of host images, in batches on the default device."""
        out = [np.asarray(self._jitted(self.params, jnp.asarray(images[i:i + self.batch_size])), np.float64)
               for i in range(0, len(images), self.batch_size)]
        return np.concatenate(out) if out else np.zeros((0, self.dims))
