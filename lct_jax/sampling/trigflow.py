"""sCT's samplers in TrigFlow (objectives/sct.py): 1 step from t_max = atan(sigma_max / s_d), and 2
steps through sCM's intermediate t = 1.1 (sct.two_step_t):

    x = s_d z;  x0 = f(x, t_max) = cos(t_max) x - sin(t_max) s_d F(x / s_d, c(t_max))
    x_t = cos(t) x0 + sin(t) s_d z';  x0 = f(x_t, t)

Sample i starts from the same unit noise as every other sampler (spec.unit_noise), scaled by s_d.
"""
from __future__ import annotations

import jax.numpy as jnp

from lct_jax.sampling.spec import (
    SamplerSpec,
    jit_over_mesh,
    sample_keys,
    unit_noise,
    with_labels,
)


def trigflow_spec(label: str, times) -> SamplerSpec:
    """A SamplerSpec for TrigFlow times (t_max, ..., t_last), decreasing: its `sigmas` field holds them."""
    times = tuple(float(t) for t in times)
    if not times or any(a <= b for a, b in zip(times, times[1:])) or times[-1] <= 0:
        raise ValueError(f'TrigFlow sampler times {times}: must decrease and stay positive')
    return SamplerSpec(label, 'trigflow', times, len(times))


def configured(sampling_config, obj) -> list[SamplerSpec]:
    del sampling_config
    return [trigflow_spec('1-step', (obj.t_max,)), trigflow_spec('2-step', (obj.t_max, obj.two_step_t))]


def trigflow_sample(apply_fn, params, keys, shape, times, obj):
    """x0 after len(times) consistency steps, each re-noised to the next time."""
    sd = obj.sigma_data
    x0 = None
    for j, t in enumerate(times):
        z = sd * unit_noise(keys, shape, j)
        x_t = z if x0 is None else jnp.cos(t) * x0 + jnp.sin(t) * z
        t_vec = jnp.full((keys.shape[0],), t, jnp.float32)
        F = apply_fn({'params': params}, x_t / sd, obj.noise_labels(t_vec))
        x0 = jnp.cos(t) * x_t - jnp.sin(t) * sd * F
    return x0


def make(spec: SamplerSpec, apply_fn, obj, shape, seed: int, mesh=None, num_classes: int = 0):
    times = tuple(spec.sigmas)

    def fn(params, indices):
        return trigflow_sample(with_labels(apply_fn, indices, num_classes), params, sample_keys(seed, indices),
                               shape, times, obj)

    return jit_over_mesh(fn, mesh)
