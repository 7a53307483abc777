"""EDM probability-flow ODE samplers, Euler and Heun (spec §16.5): the LDM-8† baseline's
sampler (Euler, 250 steps), and a many-step reference for any denoiser trained on the EDM
parameterisation (objectives/edm.py)."""
from __future__ import annotations

import jax
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

ODE_METHODS = ('euler', 'heun')


def karras_ode_sigmas(steps: int, sigma_min=edm.SIGMA_MIN, sigma_max=edm.SIGMA_MAX, rho=edm.RHO) -> np.ndarray:
    """The Karras grid of `steps` levels from sigma_max to sigma_min, then a final 0 (k-diffusion's
    `get_sigmas_karras`, which the authors' `karras_sample` calls)."""
    if steps < 1:
        raise ValueError(f'an ODE sampler needs at least 1 step, got {steps}')
    ramp = np.linspace(0.0, 1.0, steps)
    lo, hi = sigma_min ** (1.0 / rho), sigma_max ** (1.0 / rho)
    return np.append((hi + ramp * (lo - hi)) ** rho, 0.0).astype(np.float32)


def ode_nfe(steps: int, method: str) -> int:
    """Network evaluations: Euler one per step; Heun two per step except the last (to sigma = 0)."""
    if method not in ODE_METHODS:
        raise ValueError(f'ODE method {method!r}; valid: {ODE_METHODS}')
    return steps if method == 'euler' else 2 * steps - 1


def karras_ode_sample(denoise_fn, x_T, sigmas, method: str = 'euler'):
    """Integrate the PF-ODE dx/dsigma = (x - D(x, sigma)) / sigma down the grid `sigmas`.

    denoise_fn(x, sigma_vector) -> denoised; sigmas descending, ending in 0;
    method 'euler' or 'heun' (EDM's Algorithm 1 without churn: Heun's correction
    on every step except one that ends at sigma = 0, where the derivative is
    undefined and the step is Euler's). One `fori_loop`: traced once, whatever
    the number of steps. Returns the final x.
    """
    if method not in ODE_METHODS:
        raise ValueError(f'ODE method {method!r}; valid: {ODE_METHODS}')
    sigmas = jnp.asarray(sigmas, jnp.float32)
    batch = x_T.shape[0]

    def derivative(x, sigma):
        return (x - denoise_fn(x, jnp.full((batch,), sigma, jnp.float32))) / sigma

    def step(i, x):
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        d = derivative(x, sigma)
        x_euler = x + (sigma_next - sigma) * d
        if method == 'euler':
            return x_euler

        def heun(_):
            return x + (sigma_next - sigma) * 0.5 * (d + derivative(x_euler, sigma_next))

        # A cond, so the last step really costs one evaluation (2n - 1 NFE for n steps).
        return jax.lax.cond(sigma_next > 0, heun, lambda _: x_euler, None)

    return jax.lax.fori_loop(0, sigmas.shape[0] - 1, step, x_T)


def make_ode_sampler(apply_fn, obj, shape, sigmas, method: str, seed: int, mesh=None, num_classes: int = 0):
    """A jitted (params, sample indices) -> latents running `karras_ode_sample` with the denoiser
    D = c_skip x + c_out F (the boundary scalings the model was trained with). Sample i starts
    from sigmas[0] * z_i, z_i from fold_in(key(seed), i) only."""
    sigmas = np.asarray(sigmas, np.float32)

    def fn(params, indices):
        z = unit_noise(sample_keys(seed, indices), shape, 0)
        apply = with_labels(apply_fn, indices, num_classes)
        return karras_ode_sample(lambda x, s: edm.consistency_fn(apply, params, x, s, obj),
                                 sigmas[0] * z, sigmas, method)

    return jit_over_mesh(fn, mesh)


def ode_spec(method: str, steps: int, obj) -> SamplerSpec:
    sig = karras_ode_sigmas(steps, obj.sigma_min, obj.sigma_max, obj.rho)
    return SamplerSpec(f'{method}-{steps}', method, tuple(float(s) for s in sig), ode_nfe(steps, method))


def configured(sampling_config, obj) -> list[SamplerSpec]:
    """The one ODE row: sampling.sampler ('euler' | 'heun') with sampling.ode_steps levels."""
    return [ode_spec(sampling_config.sampler, sampling_config.ode_steps, obj)]


def from_argument(method: str, arg: str, obj) -> SamplerSpec:
    """'euler:250' / 'heun:40' in evaluation.curve_samplers."""
    return ode_spec(method, int(arg), obj)


def make(spec: SamplerSpec, apply_fn, obj, shape, seed: int, mesh=None, num_classes: int = 0):
    return make_ode_sampler(apply_fn, obj, shape, spec.sigmas, spec.method, seed, mesh, num_classes)
