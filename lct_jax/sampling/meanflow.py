"""MeanFlow's few-step sampler: z_r = z_t - (t - r) u(z_t, t, t - r) down a grid of flow times.

As the authors' `solver_step`: 1 step is t = 1 -> r = 0 (z_0 = e - u(e, 1, 1)), 2 steps
1 -> 0.5 -> 0 (meanflow.two_step_times). Sample i starts from the same unit noise as every other
sampler (spec.unit_noise): t = 1 is pure noise, so it is taken as is.
"""
from __future__ import annotations

import jax.numpy as jnp

from lct_jax.objectives.meanflow import check_flow_times
from lct_jax.sampling.spec import (
    SamplerSpec,
    jit_over_mesh,
    sample_keys,
    unit_noise,
    with_labels,
)


def meanflow_spec(label: str, times) -> SamplerSpec:
    """A SamplerSpec for the times (1.0, ..., 0.0): its `sigmas` field holds them."""
    times = tuple(float(s) for s in times)
    check_flow_times(times, 'MeanFlow sampler times')
    return SamplerSpec(label, 'meanflow', times, len(times) - 1)


def configured(sampling_config, obj) -> list[SamplerSpec]:
    """The 1-step and 2-step rows of a MeanFlow objective."""
    del sampling_config
    return [meanflow_spec('1-step', (1.0, 0.0)),
            meanflow_spec(f'{len(obj.two_step_times) - 1}-step', obj.two_step_times)]


def meanflow_sample(apply_fn, params, noise, times):
    """Integrate with the average velocity: for each (t, r) in the grid, z <- z - (t - r) u(z, t, t - r)."""
    n = noise.shape[0]
    z = noise
    for t, r in zip(times[:-1], times[1:]):
        t_vec = jnp.full((n,), t, jnp.float32)
        h_vec = jnp.full((n,), t - r, jnp.float32)
        u = apply_fn({'params': params}, z, t_vec, h=h_vec).astype(jnp.float32)
        z = z - (t - r) * u
    return z


def make_meanflow_sampler(spec, apply_fn, shape, seed: int, mesh=None, num_classes: int = 0):
    """A jitted (params, sample indices) -> latents for a 'meanflow' SamplerSpec; sample i of class
    `spec.class_of(i)` for a class-conditional model."""
    times = tuple(float(s) for s in spec.sigmas)

    def fn(params, indices):
        noise = unit_noise(sample_keys(seed, indices), shape, 0)
        return meanflow_sample(with_labels(apply_fn, indices, num_classes), params, noise, times)

    return jit_over_mesh(fn, mesh)


def make(spec: SamplerSpec, apply_fn, obj, shape, seed: int, mesh=None, num_classes: int = 0):
    del obj
    return make_meanflow_sampler(spec, apply_fn, shape, seed, mesh, num_classes)
