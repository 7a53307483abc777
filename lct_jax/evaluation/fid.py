"""Fréchet distance and feature statistics, as pytorch-fid computes them.

Statistics files use pytorch-fid's `.npz` format (`mu`, `sigma`), so either
tool can read the other's. Features come from `models.inception.InceptionV3`
(pool3, 2048-d) or any other feature function.
"""
from __future__ import annotations

import numpy as np
from scipy import linalg


def frechet_distance(mu1, sigma1, mu2, sigma2, eps: float = 1e-6) -> float:
    """||mu1 - mu2||^2 + Tr(S1 + S2 - 2 sqrt(S1 S2)), in float64 like pytorch-fid."""
    mu1, mu2 = np.atleast_1d(np.asarray(mu1, np.float64)), np.atleast_1d(np.asarray(mu2, np.float64))
    sigma1, sigma2 = np.atleast_2d(np.asarray(sigma1, np.float64)), np.atleast_2d(np.asarray(sigma2, np.float64))
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape:
        raise ValueError(f'statistics of different sizes: mu {mu1.shape} vs {mu2.shape}, '
                         f'sigma {sigma1.shape} vs {sigma2.shape}')
    diff = mu1 - mu2
    covmean = linalg.sqrtm(sigma1.dot(sigma2))
    if not np.isfinite(covmean).all():
        # A singular product: add eps to the diagonals, as pytorch-fid does.
        offset = np.eye(sigma1.shape[0]) * eps
        covmean = linalg.sqrtm((sigma1 + offset).dot(sigma2 + offset))
    if np.iscomplexobj(covmean):
        if not np.allclose(np.diagonal(covmean).imag, 0, atol=1e-3):
            raise ValueError(f'imaginary component {np.max(np.abs(covmean.imag))} in sqrt(S1 S2)')
        covmean = covmean.real
    return float(diff.dot(diff) + np.trace(sigma1) + np.trace(sigma2) - 2 * np.trace(covmean))


def statistics(features) -> tuple[np.ndarray, np.ndarray]:
    """(mean, covariance with N - 1) of (N, D) features, as pytorch-fid."""
    f = np.asarray(features, np.float64)
    return f.mean(axis=0), np.cov(f, rowvar=False)


def save_stats(path: str, mu, sigma) -> None:
    np.savez(path, mu=mu, sigma=sigma)


def load_stats(path: str) -> tuple[np.ndarray, np.ndarray]:
    with np.load(path) as f:
        if 'mu' not in f or 'sigma' not in f:
            raise ValueError(f'{path}: a statistics file needs arrays mu and sigma; has {list(f.keys())}')
        return f['mu'][:], f['sigma'][:]
