"""The paper's statistical look at latents (spec §19): Tukey fences, outlier fractions and excess
kurtosis of a set of values, and the box plots (modes/analyze.py computes the sets).

Box plots with Tukey fences (inner 1.5 IQR, outer 3 IQR), the fraction of elements beyond each,
and the excess kurtosis, as the paper's Fig. 1 shows them for SD-VAE latents, pixels and the
temporal differences f(x + sigma_i z) - f(x + sigma_{i+1} z) of consistency training.
"""
from __future__ import annotations

import numpy as np

from lct_jax import writer


def tukey_summary(values: np.ndarray) -> dict:
    v = np.asarray(values, np.float64).ravel()
    q1, q3 = np.percentile(v, [25, 75])
    iqr = q3 - q1
    centred = v - v.mean()
    kurt = float(np.mean(centred**4) / np.mean(centred**2) ** 2 - 3.0)
    outer = (v < q1 - 3 * iqr) | (v > q3 + 3 * iqr)
    inner = (v < q1 - 1.5 * iqr) | (v > q3 + 1.5 * iqr)
    return {'q1': float(q1), 'q3': float(q3), 'iqr': float(iqr), 'excess_kurtosis': kurt,
            'fraction_beyond_inner_fences': float(inner.mean()),
            'fraction_beyond_outer_fences': float(outer.mean()), 'count': int(v.size),
            'std': float(v.std()), 'max_abs': float(np.abs(v).max()) if v.size else 0.0}


def thinned(values, limit: int = 200_000) -> np.ndarray:
    """At most about `limit` of the values, evenly strided (a box plot of millions is the same)."""
    v = np.ravel(values)
    return v[::max(1, v.size // limit)]


def draw_boxplots(sets: dict, path: str, title: str = 'Tukey outer fences (3 IQR); red: outliers') -> str:
    """One box per named set, whiskers at the outer fences, outliers in red, as the paper's Fig. 1."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(4 + 1.6 * len(sets), 4))
    ax.boxplot([thinned(v) for v in sets.values()], whis=3.0,
               flierprops=dict(marker='.', markerfacecolor='red', markeredgecolor='red', markersize=2))
    ax.set_xticks(range(1, len(sets) + 1), list(sets), fontsize=8)
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    writer.save_figure(fig, path, dpi=120)
    plt.close(fig)
    return path
