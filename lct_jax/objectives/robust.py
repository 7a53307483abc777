"""The robust metrics rho_c of the consistency loss (spec §6): the paper's Cauchy, iCT's
Pseudo-Huber, L2 and Geman-McClure; the LDM-8† baseline's loss is the Cauchy form too.

They act on m, the per-sample MEAN of squared residuals over all elements, exactly as the
authors' code does: with this convention the c values of the scaling-c schedule mean what the
paper says they mean.
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


def mean_over_sample(a):
    return a.reshape(a.shape[0], -1).mean(axis=1)


def per_sample_loss(residual, c, loss_norm: str):
    """rho_c applied per sample as the authors do, for any `--loss-norm` name."""
    if loss_norm in METRICS:
        return METRICS[loss_norm](mean_over_sample(jnp.square(residual)), c)
    if loss_norm in ELEMENTWISE:
        return mean_over_sample(METRICS[loss_norm[:-4]](jnp.square(residual), c))
    if loss_norm == 'l1':
        return mean_over_sample(jnp.abs(residual))
    raise ValueError(f'unknown loss_norm {loss_norm!r}; valid: {LOSS_NORMS}')
