"""Improved MeanFlow's few-step sampler (objectives/imf.py): MeanFlow's average-velocity jumps
z <- z - (t - r) u(z, t, t - r) with the network's u head, and, for a class-conditional model with
guidance inputs, the configured CFG scale and interval (imf.sample_omega, sample_t_min / t_max)
as the authors' `sample_one_step` passes them. Same starting noise as every sampler."""
from __future__ import annotations

import jax.numpy as jnp

from lct_jax.sampling.meanflow import meanflow_spec
from lct_jax.sampling.spec import (
    SamplerSpec,
    jit_over_mesh,
    sample_keys,
    unit_noise,
    with_labels,
)


def configured(sampling_config, obj) -> list[SamplerSpec]:
    del sampling_config
    one = meanflow_spec('1-step', (1.0, 0.0))
    two = meanflow_spec(f'{len(obj.two_step_times) - 1}-step', obj.two_step_times)
    return [SamplerSpec(s.label, 'imf', s.sigmas, s.nfe) for s in (one, two)]


def imf_sample(apply_fn, params, noise, times, guidance: dict):
    n = noise.shape[0]
    z = noise
    for t, r in zip(times[:-1], times[1:]):
        t_vec = jnp.full((n,), t, jnp.float32)
        u = apply_fn({'params': params}, z, t_vec, h=jnp.full((n,), t - r, jnp.float32), **guidance)[0]
        z = z - (t - r) * u.astype(jnp.float32)
    return z


def make(spec: SamplerSpec, apply_fn, obj, shape, seed: int, mesh=None, num_classes: int = 0):
    times = tuple(float(s) for s in spec.sigmas)

    def fn(params, indices):
        n = indices.shape[0]
        guidance = {} if not obj.guidance else {
            'omega': jnp.full((n,), obj.sample_omega, jnp.float32), 't_min': jnp.full((n,), obj.sample_t_min, jnp.float32),
            't_max': jnp.full((n,), obj.sample_t_max, jnp.float32)}
        noise = unit_noise(sample_keys(seed, indices), shape, 0)
        return imf_sample(with_labels(apply_fn, indices, num_classes), params, noise, times, guidance)

    return jit_over_mesh(fn, mesh)
