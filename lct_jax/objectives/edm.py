"""The EDM pieces every noise-level objective here shares (spec §3): the Karras noise grid, the
consistency boundary scalings and the network's noise conditioning, and the denoiser built from
them. sLCT, iCT and the LDM-8† baseline train the same preconditioned network; the consistency
and ODE samplers call the same denoiser.

    f_theta(x, sigma) = c_skip(sigma) x + c_out(sigma) F_theta(c_in(sigma) x, 250 ln sigma)

with c_skip = s_d^2 / ((sigma - sigma_min)^2 + s_d^2), c_out = (sigma - sigma_min) s_d /
sqrt(sigma^2 + s_d^2), c_in = 1 / sqrt(sigma^2 + s_d^2): the boundary condition f(x, sigma_min)
= x holds exactly. The LDM-8† uses the same sigma_min-shifted scalings, as the authors' code calls
the same `denoise` for both.
"""
from __future__ import annotations

import jax.numpy as jnp

SIGMA_MIN = 0.002
SIGMA_MAX = 80.0
RHO = 7.0
SIGMA_DATA = 0.5


def karras_sigma(index, n, sigma_min=SIGMA_MIN, sigma_max=SIGMA_MAX, rho=RHO):
    """Element `index` of the n-point Karras grid (index 0 = sigma_max).

    `index` and `n` may be traced; `n` may be a float or an int.
    """
    index = jnp.asarray(index, jnp.float32)
    frac = index / (jnp.asarray(n, jnp.float32) - 1.0)
    lo, hi = sigma_min ** (1.0 / rho), sigma_max ** (1.0 / rho)
    return (hi + frac * (lo - hi)) ** rho


def karras_sigmas(n: int, sigma_min=SIGMA_MIN, sigma_max=SIGMA_MAX, rho=RHO):
    """The n-point Karras grid, decreasing from sigma_max to sigma_min."""
    return karras_sigma(jnp.arange(n), n, sigma_min, sigma_max, rho)


def boundary_scalings(sigma, sigma_data=SIGMA_DATA, sigma_min=SIGMA_MIN):
    """(c_skip, c_out, c_in) of the consistency boundary condition f(x, sigma_min) = x."""
    c_skip = sigma_data**2 / ((sigma - sigma_min) ** 2 + sigma_data**2)
    c_out = (sigma - sigma_min) * sigma_data / jnp.sqrt(sigma**2 + sigma_data**2)
    c_in = 1.0 / jnp.sqrt(sigma**2 + sigma_data**2)
    return c_skip, c_out, c_in


def noise_conditioning(sigma):
    """c_noise(sigma) = 1000 * 0.25 * ln(sigma + 1e-44), as the authors feed the UNet."""
    return 250.0 * jnp.log(sigma + 1e-44)


def consistency_fn(apply_fn, params, x, sigma, obj, train=False, rngs=None):
    """f_theta(x, sigma) = c_skip x + c_out F_theta(c_in x, 250 ln sigma); `obj` supplies
    sigma_data and sigma_min (any objective with those fields)."""
    c_skip, c_out, c_in = boundary_scalings(sigma, obj.sigma_data, obj.sigma_min)
    bcast = lambda a: a.reshape(-1, 1, 1, 1)
    out = apply_fn({'params': params}, bcast(c_in) * x, noise_conditioning(sigma),
                   train=train, rngs=rngs)
    return bcast(c_skip) * x + bcast(c_out) * out


def edm_fields(config) -> dict:
    """The EDM parameterisation a config's objectives share (its consistency section's)."""
    c = config.consistency
    return dict(sigma_min=c.sigma_min, sigma_max=c.sigma_max, rho=c.rho, sigma_data=c.sigma_data)
