"""A study's numbers: every run's rows, and per variant and sampler the mean, std, bootstrap 95%
interval and the paired difference against the baseline over the same seeds.

The bootstrap is the percentile bootstrap of the mean over seeds. With few
seeds it is computed exactly (all n^n resamples are equally likely, n <= 6),
otherwise by `num_resamples` resamples from a fixed generator; the interval
ends are the smallest resampled means whose cumulative probability reaches
2.5% and 97.5% (numpy's 'inverted_cdf'). With 3 seeds it is exactly [min, max]
of the seeds (each of the 27 resamples has probability 1/27 > 2.5%): a
description of the spread, not a calibrated 95% interval; read it with the std.

So every summary also carries the Student-t interval of the mean
(mean ± t_{n-1, 0.975} · std / sqrt(n)), which is a calibrated 95% interval if
the seeds' values are normal around their mean, and honest about how little 3
seeds pin down (t_{2, 0.975} = 4.30). A paired difference is called evidence
only when this interval excludes 0.
"""
from __future__ import annotations

import itertools
import math

import numpy as np

from lct_jax.study import progress

EXACT_MAX_N = 6          # 6^6 = 46,656 resamples; beyond this, Monte Carlo
NUM_RESAMPLES = 20_000
LEVEL = 0.95


def bootstrap_means(values, num_resamples: int = NUM_RESAMPLES, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(means of the bootstrap resamples, their probabilities)."""
    v = np.asarray(values, np.float64)
    n = len(v)
    if n <= EXACT_MAX_N:
        idx = np.array(list(itertools.product(range(n), repeat=n)), dtype=np.int64)
        return v[idx].mean(axis=1), np.full(len(idx), 1.0 / len(idx))
    idx = np.random.default_rng(seed).integers(0, n, size=(num_resamples, n))
    return v[idx].mean(axis=1), np.full(num_resamples, 1.0 / num_resamples)


def weighted_quantile(values: np.ndarray, weights: np.ndarray, q: float) -> float:
    """The smallest value whose cumulative weight reaches q (the inverse of the discrete CDF)."""
    order = np.argsort(values, kind='stable')
    cdf = np.cumsum(weights[order])
    i = int(np.searchsorted(cdf, q - 1e-12, side='left'))
    return float(values[order][min(i, len(values) - 1)])


def bootstrap_interval(values, level: float = LEVEL, **kw) -> tuple[float, float]:
    if len(values) == 0:
        return (math.nan, math.nan)
    means, probs = bootstrap_means(values, **kw)
    tail = (1.0 - level) / 2.0
    return weighted_quantile(means, probs, tail), weighted_quantile(means, probs, 1.0 - tail)


def t_interval(values, level: float = LEVEL) -> tuple[float, float]:
    """mean ± t_{n-1} quantile · std / sqrt(n); (nan, nan) below 2 values."""
    from scipy import stats
    v = np.asarray(values, np.float64)
    if len(v) < 2:
        return (math.nan, math.nan)
    half = float(stats.t.ppf(0.5 + level / 2.0, len(v) - 1)) * float(v.std(ddof=1)) / math.sqrt(len(v))
    return float(v.mean()) - half, float(v.mean()) + half


def describe(values) -> dict:
    """n, mean, std (ddof 1; 0 for one value), min, max, the bootstrap interval of the mean (ci95) and
    its Student-t interval (t95, from 2 values)."""
    v = np.asarray(values, np.float64)
    if len(v) == 0:
        return {'n': 0}
    lo, hi = bootstrap_interval(v)
    out = {'n': int(len(v)), 'mean': float(v.mean()), 'std': float(v.std(ddof=1)) if len(v) > 1 else 0.0,
           'min': float(v.min()), 'max': float(v.max()), 'ci95': [lo, hi]}
    if len(v) > 1:
        out['t95'] = list(t_interval(v))
    return out


def collect_rows(runs) -> list[dict]:
    """Every evaluation row of every run that has any: {variant, seed, sampler, step, fd, ...}."""
    out = []
    for r in runs:
        for row in progress.evaluation_rows(r.workdir):
            entry = {'variant': r.variant, 'seed': r.seed, 'sampler': row.get('sampler'), 'step': row['step'],
                     'fd': row.get('fid'), 'nfe': row.get('nfe'), 'features': row.get('features'),
                     'num_samples': row.get('num_samples'), 'checkpoint': row.get('checkpoint')}
            for k in ('precision', 'recall'):
                if row.get(k) is not None:
                    entry[k] = row[k]
            out.append(entry)
    return out


def _by(rows, *keys) -> dict:
    groups = {}
    for row in rows:
        groups.setdefault(tuple(row[k] for k in keys), []).append(row)
    return groups


def summarise(rows, variants, baseline: str, metric: str = 'fd') -> list[dict]:
    """One entry per (variant, sampler, step): the metric over seeds, and the paired difference
    (variant - baseline) over the seeds both have at that sampler and step."""
    groups = _by(rows, 'variant', 'sampler', 'step')
    order = {v: i for i, v in enumerate(variants)}
    out = []
    for (variant, sampler, step), group in sorted(groups.items(),
                                                 key=lambda kv: (order.get(kv[0][0], 99), str(kv[0][1]), kv[0][2])):
        by_seed = {r['seed']: r[metric] for r in group if r.get(metric) is not None}
        entry = {'variant': variant, 'sampler': sampler, 'step': step, 'seeds': sorted(by_seed), 'metric': metric,
                 **describe([by_seed[s] for s in sorted(by_seed)])}
        base = {r['seed']: r[metric] for r in groups.get((baseline, sampler, step), []) if r.get(metric) is not None}
        shared = sorted(set(by_seed) & set(base))
        if variant != baseline and shared:
            entry['vs_baseline'] = {'baseline': baseline, 'seeds': shared,
                                    **describe([by_seed[s] - base[s] for s in shared])}
        out.append(entry)
    return out


def final_step(rows) -> int | None:
    return max((r['step'] for r in rows), default=None)


def late_average_rows(rows, last: int = 2, metric: str = 'fd') -> tuple[list[dict], list[int]]:
    """Each (variant, seed, sampler)'s metric averaged over the `last` latest evaluated steps, as rows
    with step = the latest of them (only seeds evaluated at all of those steps); and those steps.

    Why: one checkpoint's FD moves a lot from one evaluation to the next (up to 3x on the digits),
    so a comparison at the final step alone mixes checkpoint noise into the seed spread."""
    steps = sorted({r['step'] for r in rows})[-last:]
    out = []
    for (variant, seed, sampler), group in _by(rows, 'variant', 'seed', 'sampler').items():
        values = {r['step']: r[metric] for r in group if r['step'] in steps and r.get(metric) is not None}
        if len(values) == len(steps) and steps:
            out.append({'variant': variant, 'seed': seed, 'sampler': sampler, 'step': steps[-1],
                        metric: float(np.mean([values[s] for s in steps]))})
    return out, steps
