"""`--mode=analyze`: the paper's statistical look at latents against pixels (spec §19).

Box plots with Tukey fences (inner 1.5 IQR, outer 3 IQR), the fraction of
elements beyond the outer fences, and the excess kurtosis, for the encoded
latents (normalised as in training) and for the source pixels (scaled to the
same std), written as PNG and JSON in <workdir>/analysis/.
"""
from __future__ import annotations

import json
import os

import numpy as np

from lct_jax.builders import latent_dir_of


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
            'fraction_beyond_outer_fences': float(outer.mean()), 'count': int(v.size)}


def analyze_dataset(config, workdir: str, max_examples: int = 2048) -> dict:
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    from lct_jax.data.latents import LatentDataset
    from lct_jax.data.pipeline import Normalizer
    from lct_jax.data.sources import make_source
    d = latent_dir_of(config, workdir)
    ds = LatentDataset(d)
    n = min(len(ds), max_examples)
    idx = np.linspace(0, len(ds) - 1, n).astype(int)
    norm = Normalizer.of_config(config, d)
    lat = norm.normalize(ds.read_batch(idx))
    sets = {'latents': lat}
    try:
        src = make_source(config.data)
        pix = src.images(idx).astype(np.float64) / 127.5 - 1.0
        sets['pixels'] = (pix - pix.mean()) / pix.std() * lat.std()
    except (FileNotFoundError, ImportError, ValueError) as e:
        print(f'analyze: pixels unavailable ({e}); latents only')
    summary = {name: tukey_summary(v) for name, v in sets.items()}
    out = os.path.join(workdir, 'analysis')
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, 'summary.json'), 'w') as f:
        json.dump(summary, f, indent=1)
    fig, ax = plt.subplots(figsize=(4 + 2 * len(sets), 4))
    ax.boxplot([np.ravel(v)[::max(1, np.size(v) // 200_000)] for v in sets.values()], whis=3.0,
               flierprops=dict(marker='.', markerfacecolor='red', markeredgecolor='red', markersize=2))
    ax.set_xticks(range(1, len(sets) + 1), list(sets))
    ax.set_title('Tukey outer fences (3 IQR); red: outliers')
    fig.tight_layout()
    fig.savefig(os.path.join(out, 'boxplot.png'), dpi=120)
    plt.close(fig)
    print(json.dumps(summary, indent=1))
    return summary
