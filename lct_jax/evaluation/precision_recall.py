"""Improved precision and recall (Kynkäänniemi et al. 2019): k-NN manifolds, k = 3.

As in StyleGAN2-ADA's `pr50k3` metric (spec §15): each set's manifold is the
union of balls around its points with radius = distance to the k-th nearest
other point of the same set. Precision = fraction of generated points inside
the real manifold; recall = fraction of real points inside the generated one.
The paper uses VGG16 features (NVIDIA's TorchScript vgg16.pt); we compute it
on whatever features are given (Inception pool3 in `--mode=evaluate`).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np


@jax.jit
def _sq_dists(a, b):
    return jnp.maximum(jnp.sum(a * a, 1)[:, None] + jnp.sum(b * b, 1)[None, :] - 2 * a @ b.T, 0.0)


def _batched_dists(a, b, batch: int = 1024):
    return np.concatenate([np.asarray(_sq_dists(a[i:i + batch], b)) for i in range(0, len(a), batch)])


def knn_radii(features, k: int = 3, batch: int = 1024) -> np.ndarray:
    """Squared distance of each point to its k-th nearest other point, a block of rows at a time
    (the whole N x N matrix would be 10 GB at 50k points)."""
    f = jnp.asarray(features, jnp.float32)
    # index 0 of each sorted row is the point itself (distance 0)
    return np.concatenate([np.partition(np.asarray(_sq_dists(f[i:i + batch], f)), k, axis=1)[:, k]
                           for i in range(0, len(f), batch)])


def coverage(query, reference, radii, batch: int = 1024) -> float:
    """Fraction of query points within some reference ball."""
    q, r = jnp.asarray(query, jnp.float32), jnp.asarray(reference, jnp.float32)
    inside = [np.any(_batched_dists(q[i:i + batch], r) <= radii[None, :], axis=1)
              for i in range(0, len(q), batch)]
    return float(np.concatenate(inside).mean())


def precision_recall(real, generated, k: int = 3) -> tuple[float, float]:
    precision = coverage(generated, real, knn_radii(real, k))
    recall = coverage(real, generated, knn_radii(generated, k))
    return precision, recall
