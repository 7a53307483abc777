"""Noise grids, boundary scalings and curricula of sLCT (spec §3-§5, §7).

Every function is plain `jnp` and accepts traced arguments where it makes
sense, so the curriculum (N, c, the interval distribution) is evaluated inside
the compiled train step from `state.step`: a change of stage never
recompiles. Grids whose length depends on a traced N are handled by padding
to a static maximum length and masking (`interval_logits`).
"""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp

SIGMA_MIN = 0.002
SIGMA_MAX = 80.0
RHO = 7.0
SIGMA_DATA = 0.5
P_MEAN = -1.1
P_STD = 2.0


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


def stage_length(total_steps: int, s0: int = 10, s1: int = 640) -> int:
    """K' of the iCT doubling curriculum: the number of steps per stage."""
    num_stages = math.log2(s1 // s0) + 1
    return max(int(math.floor(total_steps / num_stages)), 1)


def num_scales(step, total_steps: int, s0: int = 10, s1: int = 640):
    """N(k) = min(s0 * 2^floor(k / K'), s1) + 1, as an int32 (traceable in `step`)."""
    # Past the last doubling N stays at s1 + 1; clamp so s0 * 2^stage cannot overflow int32.
    last_stage = math.ceil(math.log2(max(s1 / s0, 1))) + 1
    stage = jnp.minimum(jnp.asarray(step) // stage_length(total_steps, s0, s1), last_stage)
    return (jnp.minimum(s0 * jnp.left_shift(1, stage.astype(jnp.int32)), s1) + 1).astype(jnp.int32)


def interval_probs(sigmas, p_mean=P_MEAN, p_std=P_STD):
    """Discrete lognormal over the n-1 intervals [sigma_{i+1}, sigma_i] of a grid (sums to 1)."""
    cdf = jax.scipy.special.erf((jnp.log(sigmas) - p_mean) / (math.sqrt(2.0) * p_std))
    mass = cdf[:-1] - cdf[1:]
    return mass / mass.sum()


def interval_logits(n, max_n: int, p_mean=P_MEAN, p_std=P_STD, sigma_min=SIGMA_MIN,
                    sigma_max=SIGMA_MAX, rho=RHO):
    """Log-probabilities of `interval_probs` for a traced n, padded to max_n - 1 entries.

    Entries i >= n - 1 (intervals that do not exist at this n) are -inf.
    """
    idx = jnp.arange(max_n)
    sig = karras_sigma(jnp.minimum(idx, n - 1), n, sigma_min, sigma_max, rho)
    cdf = jax.scipy.special.erf((jnp.log(sig) - p_mean) / (math.sqrt(2.0) * p_std))
    mass = cdf[:-1] - cdf[1:]
    valid = idx[:-1] < n - 1
    return jnp.where(valid & (mass > 0), jnp.log(jnp.where(mass > 0, mass, 1.0)), -jnp.inf)


def sample_intervals(key, n, max_n: int, shape, p_mean=P_MEAN, p_std=P_STD):
    """Interval indices i ~ interval_probs, for a traced n (one per element of `shape`)."""
    return jax.random.categorical(key, interval_logits(n, max_n, p_mean, p_std), shape=shape)


def interval_weights(sigmas):
    """lambda_i = 1 / (sigma_i - sigma_{i+1}), the iCT weighting (length n - 1)."""
    return 1.0 / (sigmas[:-1] - sigmas[1:])


C0_ICT = 0.00054


def ict_c(data_dim: int) -> float:
    """iCT's robustness constant c0 = 0.00054 * sqrt(d) (0.03456 for 4x32x32 latents)."""
    return C0_ICT * math.sqrt(data_dim)


def robust_c(num_scales, s0: int = 10, c0: float = 0.03456):
    """The scaling-c schedule: c0 in the first stage, exp(-1.15 ln(N-1) - 0.85) after it."""
    n = jnp.asarray(num_scales, jnp.float32)
    fitted = jnp.exp(-1.15 * jnp.log(n - 1.0) - 0.85)
    return jnp.where(n > s0 + 1, fitted, jnp.float32(c0))
