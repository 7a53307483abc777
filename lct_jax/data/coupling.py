"""Minibatch optimal-transport coupling of data and noise (spec §9), with ott-jax.

The authors solve an exact OT problem on each GPU's own minibatch between the
flattened normalised latents x and unit noise z (squared Euclidean cost) and
pair every x with the z the plan assigns to it. Here the same happens on each
device's own rows of the global batch, so pairs never cross devices. Where it
runs is `coupling.placement`:
  'host'   (default) in the input pipeline, on the host CPU, steps ahead of the
           device (`lct_jax.data.host_pairing`): the Hungarian is a sequential
           loop of thousands of iterations, cheap on a CPU core and costly on a
           GPU, where each iteration is kernel launches and a host read-back.
  'device' inside a jitted program over the mesh (`couple_per_device`, shard_map).
Both draw the noise with `step_rng.step_noise` and pair with `couple`, so they
give the same z and the same permutation.

Methods:
  'exact'    Hungarian matching (`ott.tools.unreg.hungarian`), the paper's choice.
  'sinkhorn' entropic OT (`ott.solvers.linear.solve`), then the plan rounded
             greedily to a permutation (a Sinkhorn plan's row argmax is not one).
  'none'     identity pairing (the iLCT baseline).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.sharding import PartitionSpec as P

METHODS = ('exact', 'sinkhorn', 'none')
PLACEMENTS = ('host', 'device')


def _flat(a):
    return a.reshape(a.shape[0], -1).astype(jnp.float32)


def pair_costs(x, z):
    """Squared Euclidean cost of each pair (x_b, z_b)."""
    return jnp.sum(jnp.square(_flat(x) - _flat(z)), axis=1)


def exact_permutation(x, z):
    """perm with z[perm] the optimal (minimum total squared distance) partner of x."""
    # ott-jax is imported where it is used: it takes ~1.5-2.8 s to import (scipy.stats, lineax,
    # jaxopt), and every process that builds a config reads this module's METHODS and PLACEMENTS
    from ott.geometry import pointcloud
    from ott.tools import unreg
    geom = pointcloud.PointCloud(_flat(x), _flat(z))
    _, out = unreg.hungarian(geom)
    rows, cols = out.paired_indices
    return jnp.zeros(x.shape[0], jnp.int32).at[rows].set(cols.astype(jnp.int32))


def round_plan_to_permutation(plan):
    """Greedy rounding: repeatedly take the largest remaining entry of the plan.

    Each row and each column is used exactly once, so the result is a
    permutation however diffuse the plan is.
    """
    n = plan.shape[0]

    def body(_, carry):
        perm, free_rows, free_cols = carry
        masked = jnp.where(free_rows[:, None] & free_cols[None, :], plan, -jnp.inf)
        flat = jnp.argmax(masked)
        r, c = flat // n, flat % n
        return perm.at[r].set(c), free_rows.at[r].set(False), free_cols.at[c].set(False)

    init = (jnp.zeros(n, jnp.int32), jnp.ones(n, bool), jnp.ones(n, bool))
    perm, _, _ = jax.lax.fori_loop(0, n, body, init)
    return perm


def sinkhorn_permutation(x, z, epsilon: float = 0.01):
    """Entropic OT on the max-normalised cost, rounded to a permutation."""
    from ott.geometry import pointcloud   # lazily, as in exact_permutation
    from ott.solvers import linear
    geom = pointcloud.PointCloud(_flat(x), _flat(z), scale_cost='max_cost', epsilon=epsilon)
    out = linear.solve(geom)
    return round_plan_to_permutation(out.matrix)


def couple(x, z, method: str = 'exact', epsilon: float = 0.01):
    """Reorder z to be OT-paired with x; also the pair cost relative to identity pairing."""
    if method == 'none':
        return z, jnp.float32(1.0)
    if method == 'exact':
        perm = exact_permutation(x, z)
    elif method == 'sinkhorn':
        perm = sinkhorn_permutation(x, z, epsilon)
    else:
        raise ValueError(f'unknown coupling method {method!r}; valid: {METHODS}')
    paired = z[perm]
    ratio = pair_costs(x, paired).mean() / pair_costs(x, z).mean()
    return paired, ratio


def couple_rows(x, z, method: str = 'exact', epsilon: float = 0.01):
    """`couple` with the cost ratio repeated on every row: (paired z, ratio per row).

    Per-row ratios shard like the batch, so the mean over the global batch is
    the mean over devices of each device's ratio, whichever placement paired it.
    """
    paired, ratio = couple(x, z, method, epsilon)
    return paired, jnp.full((x.shape[0],), ratio, jnp.float32)


def couple_per_device(x, z, mesh, axis: str = 'data', method: str = 'exact',
                      epsilon: float = 0.01):
    """`couple_rows` on each device's own shard of a batch sharded along `axis`.

    Returns the re-paired noise and the per-row cost ratios (both sharded like
    z). ott-jax's while-loop carry fails shard_map's varying-axes check, hence
    check_vma=False (the computation is purely per-device).
    """
    if method == 'none':
        return z, jnp.ones((x.shape[0],), jnp.float32)
    spec = P(axis)
    fn = jax.shard_map(lambda xs, zs: couple_rows(xs, zs, method, epsilon), mesh=mesh,
                       in_specs=(spec, spec), out_specs=(spec, spec), check_vma=False)
    return fn(x, z)
