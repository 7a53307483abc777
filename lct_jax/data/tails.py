"""The tail dial: a heavy-tailing map of standardised latents, and its exact inverse.

The paper's mechanism is that SD-VAE latents carry impulsive outliers that derail Pseudo-Huber
consistency training. To test it, the heaviness of the latents' tails must be a setting, with
everything else fixed. The dial (data.tail_power = p >= 0) maps each standardised latent element
u = (z - mean) / std, before the normaliser's sigma_data scale, through

    g_p(u) = u * (1 + u**2)**(p / 2) / k_p,   k_p**2 = E[u**2 (1 + u**2)**p] for u ~ N(0, 1).

- p = 0 is the identity (every run before the dial is level 0, to the bit).
- Linear near 0 and growing like |u|**(1 + p) beyond |u| ~ 1: it stretches the tails and leaves
  the bulk's shape (a sign, a rank, a slope at 0) alone.
- Strictly increasing and odd (g_p' = (1 + u^2)^(p/2 - 1) (1 + (1 + p) u^2) / k_p > 0), so it has
  an exact inverse: samples are mapped back before decoding, and every level is scored with the
  same decoder and features.
- k_p keeps a Gaussian element at unit variance (k_1 = 2): the dial changes the tails, not the
  scale that the EDM preconditioning (sigma_data) assumes.

Why not Tukey's h, u exp(h u^2 / 2): its growth is exponential. These latents' per-element
standardisation already puts 39 values beyond 8 sigma (corner elements with per-element excess
kurtosis up to 57: the impulsive outliers the dial is about), and at h = 0.1 the largest (13.3
sigma) becomes 37,000 and the data's std 57: not a heavier tail but a different scale. The power
map takes the same latents past Student-t(3)'s outer-fence fraction (1.28%) at p = 1 (1.62%, std
1.2, largest value 88): docs/study/tails/README.md has the measurements.

Pure functions of numpy or jax arrays (the normaliser runs on the host; the decoder's inverse
inside the jitted evaluation programs).
"""
from __future__ import annotations

import functools

import numpy as np

MAX_POWER = 4.0    # beyond, a 13-sigma element would land past 10^4: not a setting anyone needs
NEWTON_STEPS = 25  # the log-space Newton iteration below converges in < 10 from its start


def _xp(x):
    """numpy for numpy inputs, jax.numpy for jax arrays and tracers (the same arithmetic)."""
    if isinstance(x, (np.ndarray, np.generic, float, int)):
        return np
    import jax.numpy as jnp
    return jnp


def check_power(p: float) -> float:
    p = float(p)
    if not (0.0 <= p <= MAX_POWER):  # also refuses nan
        raise ValueError(f'data.tail_power = {p!r}: the tail dial needs 0 <= p <= {MAX_POWER} (0 = as encoded)')
    return p


@functools.lru_cache(maxsize=None)
def variance_scale(p: float) -> float:
    """k_p: the standard deviation of u (1 + u^2)^(p/2) for a standard normal u (Gauss-Hermite
    quadrature of 200 nodes: exact to float64 for these smooth, polynomially growing integrands)."""
    p = check_power(p)
    nodes, weights = np.polynomial.hermite_e.hermegauss(200)
    return float(np.sqrt(np.sum(weights * nodes**2 * (1.0 + nodes**2) ** p) / np.sum(weights)))


def heavy_tail(u, p: float):
    """g_p(u) = u (1 + u^2)^(p/2) / k_p, elementwise; the identity at p = 0."""
    if check_power(p) == 0.0:
        return u
    return u * (1.0 + u * u) ** (0.5 * p) / variance_scale(p)


def heavy_tail_inverse(w, p: float):
    """The u with g_p(u) = w, elementwise; the identity at p = 0.

    For |u| = e^s the equation is phi(s) = s + (p/2) log(1 + e^{2s}) = log(k_p |w|) =: L. phi is
    increasing and convex (phi' = 1 + p sigmoid(2s)), and phi(L) >= L, so Newton's method started
    at s = L descends monotonically to the root; its slope lies in [1, 1 + p], so few steps do.
    Stable for any w: log(1 + e^{2s}) is taken as logaddexp(0, 2s).
    """
    if check_power(p) == 0.0:
        return w
    xp = _xp(w)
    a = xp.abs(w) * variance_scale(p)
    tiny = np.finfo(np.float32).tiny
    L = xp.log(xp.maximum(a, tiny))
    s = L
    for _ in range(NEWTON_STEPS):
        slope = 1.0 + p * 0.5 * (1.0 + xp.tanh(s))  # 1 + p sigmoid(2s), without overflow
        s = s - (s + 0.5 * p * xp.logaddexp(0.0, 2.0 * s) - L) / slope
    return xp.where(a > tiny, xp.sign(w) * xp.exp(s), w * 0.0)
