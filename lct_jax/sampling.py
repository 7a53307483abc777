"""One- and multi-step consistency sampling (spec §14).

Noise is per sample: sample i uses keys derived from fold_in(key(seed), i)
only, so the same seed gives the same images whatever the batch size, the
number of devices or processes.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from lct_jax import schedules
from lct_jax.objective import Objective, consistency_fn


def sample_keys(seed: int, indices) -> jax.Array:
    base = jax.random.key(seed)
    return jax.vmap(lambda i: jax.random.fold_in(base, i))(jnp.asarray(indices))


def step_sigmas(ts, grid_steps: int, obj: Objective) -> np.ndarray:
    """sigma of each index in `ts` on a Karras grid of `grid_steps` points (0 -> sigma_max)."""
    return np.asarray(schedules.karras_sigma(np.asarray(ts), grid_steps, obj.sigma_min,
                                             obj.sigma_max, obj.rho))


def multistep_sample(apply_fn, params, keys, shape, sigmas, obj: Objective):
    """x0 = f(sigma_0 z, sigma_0); then for each later sigma > sigma_min: re-noise and denoise.

    sigmas: the step sigmas (e.g. `step_sigmas((0, 420, 640), 641, obj)`);
    one entry = the one-step sampler. The authors' last index maps to
    sigma_min, where re-noising adds nothing, so it costs no evaluation.
    """
    def noise(k, j):
        return jax.vmap(lambda kk: jax.random.normal(jax.random.fold_in(kk, j), shape, jnp.float32))(k)

    n = keys.shape[0]
    x = consistency_fn(apply_fn, params, sigmas[0] * noise(keys, 0),
                       jnp.full((n,), sigmas[0], jnp.float32), obj)
    for j, sigma in enumerate(sigmas[1:], start=1):
        if sigma <= obj.sigma_min:
            break
        x_t = x + np.sqrt(sigma**2 - obj.sigma_min**2) * noise(keys, j)
        x = consistency_fn(apply_fn, params, x_t, jnp.full((n,), sigma, jnp.float32), obj)
    return x


def make_sampler(apply_fn, obj: Objective, shape, sigmas, seed: int, mesh=None):
    """A jitted (params, sample indices) -> latents; the indices sharded over the mesh if given.

    Sample i's noise comes from fold_in(key(seed), i) only.
    """
    sigmas = tuple(float(s) for s in sigmas)

    def fn(params, indices):
        return multistep_sample(apply_fn, params, sample_keys(seed, indices), shape, sigmas, obj)

    if mesh is None:
        return jax.jit(fn)
    from lct_jax import parallel
    return jax.jit(fn, in_shardings=(parallel.replicated(mesh), parallel.batch_sharding(mesh)),
                   out_shardings=parallel.batch_sharding(mesh))
