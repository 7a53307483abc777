"""Fréchet distance and feature statistics, as pytorch-fid computes them.

Statistics files use pytorch-fid's `.npz` format (`mu`, `sigma`), so either
tool can read the other's. Features come from `models.inception.InceptionV3`
(pool3, 2048-d) or any other feature function.
"""
from __future__ import annotations

import sys
import warnings

import numpy as np
from scipy import linalg

from lct_jax import writer
from lct_jax.untrusted import UnreadableFileError, finite_array, load_npz


def frechet_distance(mu1, sigma1, mu2, sigma2, eps: float = 1e-6) -> float:
    """||mu1 - mu2||^2 + Tr(S1 + S2 - 2 sqrt(S1 S2)), in float64 like pytorch-fid."""
    mu1, mu2 = np.atleast_1d(np.asarray(mu1, np.float64)), np.atleast_1d(np.asarray(mu2, np.float64))
    sigma1, sigma2 = np.atleast_2d(np.asarray(sigma1, np.float64)), np.atleast_2d(np.asarray(sigma2, np.float64))
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape:
        raise ValueError(f'statistics of different sizes: mu {mu1.shape} vs {mu2.shape}, '
                         f'sigma {sigma1.shape} vs {sigma2.shape}')
    diff = mu1 - mu2
    with warnings.catch_warnings(record=True) as caught:  # SciPy's LinAlgWarning: said once, in words
        warnings.simplefilter('always', linalg.LinAlgWarning)
        covmean = linalg.sqrtm(sigma1.dot(sigma2))
    if any(issubclass(w.category, linalg.LinAlgWarning) for w in caught):
        _note_singular_once(sigma1.shape[0])
    if not np.isfinite(covmean).all():
        # A singular product: add eps to the diagonals, as pytorch-fid does.
        offset = np.eye(sigma1.shape[0]) * eps
        covmean = linalg.sqrtm((sigma1 + offset).dot(sigma2 + offset))
    if np.iscomplexobj(covmean):
        if not np.allclose(np.diagonal(covmean).imag, 0, atol=1e-3):
            raise ValueError(f'imaginary component {np.max(np.abs(covmean.imag))} in sqrt(S1 S2)')
        covmean = covmean.real
    return float(diff.dot(diff) + np.trace(sigma1) + np.trace(sigma2) - 2 * np.trace(covmean))


_SAID = set()


def _note_singular_once(dims: int) -> None:
    """pytorch-fid computes through a singular S1 S2 (its sqrtm warning silenced): so do we, and say
    why once per process instead of SciPy's raw warning at every distance."""
    if 'singular' not in _SAID:
        _SAID.add('singular')
        print(f'note: the product of the two {dims}x{dims} feature covariances is singular (more feature '
              'dimensions than independent samples, or a constant feature); its square root is computed '
              'as pytorch-fid does, without an offset unless it is not finite', file=sys.stderr, flush=True)


def statistics(features) -> tuple[np.ndarray, np.ndarray]:
    """(mean, covariance with N - 1) of (N, D) features, as pytorch-fid."""
    f = np.asarray(features, np.float64)
    return f.mean(axis=0), np.cov(f, rowvar=False)


def save_stats(path: str, mu, sigma, overwrite: bool = False, extra: dict | None = None) -> str:
    """Write pytorch-fid's .npz; the path written. An existing file of other statistics is kept:
    the new ones go beside it (<name>.new.npz) unless `overwrite` (a statistics file is the
    yardstick of every FID measured against it). `extra`: more arrays beside mu and sigma (the
    provenance, evaluation/stats_file.py)."""
    import os
    import sys
    mu, sigma = np.asarray(mu), np.asarray(sigma)
    if os.path.exists(path) and not overwrite:
        try:
            old_mu, old_sigma = load_stats(path)
            same = np.array_equal(old_mu, mu) and np.array_equal(old_sigma, sigma)
        except (OSError, ValueError):
            same = False
        if same:
            return path
        path = path[:-len('.npz')] + '.new.npz' if path.endswith('.npz') else path + '.new.npz'
        print(f'note: other statistics exist at {path.replace(".new.npz", ".npz")}; kept, the new ones '
              f'written to {path} (pass overwrite=True to replace)', file=sys.stderr, flush=True)
    return writer.write_npz(path, mu=mu, sigma=sigma, **(extra or {}))


def load_stats(path: str) -> tuple[np.ndarray, np.ndarray]:
    """(mu, sigma) of a statistics file, checked: D-vector and D x D matrix of finite numbers,
    read without pickles (lct_jax/untrusted.py); anything else an error naming the file."""
    f = load_npz(path, 'FID statistics (pytorch-fid\'s .npz: mu, sigma)', required=('mu', 'sigma'))
    what = 'FID statistics'
    mu = finite_array(path, f, 'mu', what, ndim=1)
    sigma = finite_array(path, f, 'sigma', what, ndim=2)
    if sigma.shape != (mu.shape[0], mu.shape[0]) or not mu.shape[0]:
        raise UnreadableFileError(f'{path}: {what}: mu {mu.shape} and sigma {sigma.shape}; expected a D-vector '
                                  'and a D x D covariance')
    return mu, sigma
