"""One- and multi-step consistency sampling (spec §14): x0 = f(sigma_0 z, sigma_0), then re-noise
to each later sigma and denoise again. The steps are indices on a Karras grid of
`sampling.grid_steps` points (the paper's two-step sampler: ts = (0, 420, 640) of 641)."""
from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from lct_jax.objectives import edm
from lct_jax.sampling.spec import (
    SamplerSpec,
    jit_over_mesh,
    sample_keys,
    unit_noise,
    with_labels,
)


def step_sigmas(ts, grid_steps: int, obj) -> np.ndarray:
    """sigma of each index in `ts` on a Karras grid of `grid_steps` points (0 -> sigma_max)."""
    return np.asarray(edm.karras_sigma(np.asarray(ts), grid_steps, obj.sigma_min, obj.sigma_max, obj.rho))


def multistep_sample(apply_fn, params, keys, shape, sigmas, obj):
    """x0 = f(sigma_0 z, sigma_0); then for each later sigma > sigma_min: re-noise and denoise.

    sigmas: the step sigmas (e.g. `step_sigmas((0, 420, 640), 641, obj)`);
    one entry = the one-step sampler. The authors' last index maps to
    sigma_min, where re-noising adds nothing, so it costs no evaluation.
    """
    n = keys.shape[0]
    x = edm.consistency_fn(apply_fn, params, sigmas[0] * unit_noise(keys, shape, 0),
                           jnp.full((n,), sigmas[0], jnp.float32), obj)
    for j, sigma in enumerate(sigmas[1:], start=1):
        if sigma <= obj.sigma_min:
            break
        x_t = x + np.sqrt(sigma**2 - obj.sigma_min**2) * unit_noise(keys, shape, j)
        x = edm.consistency_fn(apply_fn, params, x_t, jnp.full((n,), sigma, jnp.float32), obj)
    return x


def make_sampler(apply_fn, obj, shape, sigmas, seed: int, mesh=None, num_classes: int = 0):
    """A jitted (params, sample indices) -> latents; the indices sharded over the mesh if given.

    Sample i's noise comes from fold_in(key(seed), i) only; with num_classes > 0 its class is
    `class_of(i)`.
    """
    sigmas = tuple(float(s) for s in sigmas)

    def fn(params, indices):
        return multistep_sample(with_labels(apply_fn, indices, num_classes), params, sample_keys(seed, indices),
                                shape, sigmas, obj)

    return jit_over_mesh(fn, mesh)


def consistency_spec(label: str, ts, grid_steps: int, obj) -> SamplerSpec:
    sig = step_sigmas(ts, grid_steps, obj)
    # The authors' last index maps to sigma_min, which costs no evaluation (multistep_sample).
    nfe = 1 + sum(1 for s in sig[1:] if s > obj.sigma_min)
    return SamplerSpec(label, 'consistency', tuple(float(s) for s in sig), nfe)


def configured(sampling_config, obj) -> list[SamplerSpec]:
    """The 1-step and the 2-step (sampling.ts on sampling.grid_steps) rows."""
    return [consistency_spec('1-step', (0,), sampling_config.grid_steps, obj),
            consistency_spec('2-step', tuple(sampling_config.ts), sampling_config.grid_steps, obj)]


def from_argument(arg: str, sampling_config, obj) -> SamplerSpec:
    """'consistency:0,420,640' in evaluation.curve_samplers: named by its NFE, as the configured
    ones ((0, 420, 640) is '2-step': the last index costs nothing)."""
    spec = consistency_spec('', tuple(int(t) for t in arg.split(',')), sampling_config.grid_steps, obj)
    return SamplerSpec(f'{spec.nfe}-step', spec.method, spec.sigmas, spec.nfe)


def make(spec: SamplerSpec, apply_fn, obj, shape, seed: int, mesh=None, num_classes: int = 0):
    return make_sampler(apply_fn, obj, shape, spec.sigmas, seed, mesh, num_classes)
