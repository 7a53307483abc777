"""Robust metrics and the two loss terms of sLCT (spec §6, §8).

The robust metrics act on m, the per-sample MEAN of squared residuals over all
elements, exactly as the authors' code does: with this convention the c values
of the scaling-c schedule mean what the paper says they mean.
"""
from __future__ import annotations

from typing import Callable

import jax.numpy as jnp


def l2(m, c):
    del c
    return m


def pseudo_huber(m, c):
    """iCT's metric: sqrt(m + c^2) - c."""
    return jnp.sqrt(m + c**2) - c


def cauchy(m, c):
    """The paper's metric: ln(1 + m / (2 c^2))."""
    return jnp.log1p(m / (2.0 * c**2))


def geman_mcclure(m, c):
    """Redescending metric 2m / (m + 4c^2), bounded by 2."""
    return 2.0 * m / (m + 4.0 * c**2)


METRICS: dict[str, Callable] = {
    'l2': l2,
    'huber': pseudo_huber,
    'cauchy': cauchy,
    'gm': geman_mcclure,
}
# The authors' `*_new` variants apply the same function to each squared
# element and then average; `l1` is the mean absolute residual.
ELEMENTWISE = ('huber_new', 'cauchy_new', 'gm_new')
LOSS_NORMS = tuple(METRICS) + ELEMENTWISE + ('l1',)


def _mean_over_sample(a):
    return a.reshape(a.shape[0], -1).mean(axis=1)


def per_sample_loss(residual, c, loss_norm: str):
    """rho_c applied per sample as the authors do, for any `--loss-norm` name."""
    if loss_norm in METRICS:
        return METRICS[loss_norm](_mean_over_sample(jnp.square(residual)), c)
    if loss_norm in ELEMENTWISE:
        return _mean_over_sample(METRICS[loss_norm[:-4]](jnp.square(residual), c))
    if loss_norm == 'l1':
        return _mean_over_sample(jnp.abs(residual))
    raise ValueError(f'unknown loss_norm {loss_norm!r}; valid: {LOSS_NORMS}')


def consistency_loss(student, target, weights, c, loss_norm: str = 'cauchy'):
    """mean_b lambda_b * rho_c(mean((f_theta - f_target)^2)) over the batch."""
    per_sample = per_sample_loss(student - target, c, loss_norm)
    return jnp.mean(weights * per_sample)


def early_diffusion_mask(indices, num_scales, threshold: float = 0.75):
    """Samples whose interval index is in the small-noise end: i >= floor(threshold * N)."""
    return indices >= jnp.floor(threshold * jnp.asarray(num_scales, jnp.float32))


def diffusion_loss(student, clean, sigma, mask, sigma_data: float = 0.5):
    """Masked mean over the selected samples of (1/sigma^2 + 1/sigma_data^2) * mse.

    With no sample selected it is 0 (the authors' NaN would skip the step;
    a masked sum over max(count, 1) is the same whenever the subset is not empty).
    """
    weight = 1.0 / sigma**2 + 1.0 / sigma_data**2
    per_sample = weight * _mean_over_sample(jnp.square(student - clean))
    mask = mask.astype(per_sample.dtype)
    return jnp.sum(mask * per_sample) / jnp.maximum(jnp.sum(mask), 1.0)


def edm_diffusion_loss(denoised, x, sigma, c, sigma_data: float = 0.5):
    """Per-sample (B,) loss of the LDM-8† baseline (spec §16.5): w(sigma) * rho_cauchy(m).

    m = mean((D(x + sigma z, sigma) - x)^2) per sample, w = 1/sigma^2 + 1/sigma_data^2.
    The authors write ln(0.5 m + c^2) - 2 ln c; at c = 3.45 that difference of two
    large logarithms loses most of float32's digits (m is ~1e-3..1), while
    ln(1 + m / (2c^2)) is the same number computed without the cancellation.
    """
    m = _mean_over_sample(jnp.square(denoised - x))
    weight = 1.0 / sigma**2 + 1.0 / sigma_data**2
    return weight * cauchy(m, c)
