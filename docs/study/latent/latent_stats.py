"""Tail statistics of an encoded dataset, raw and as training sees it, beside a Gaussian.

    python docs/study/latent/latent_stats.py <latent_dir> [--out stats.json]

`--mode=analyze` measures the latents after the per-element normalisation that
training applies (spec §2.3) against the pixels; the paper's Fig. 1 looks at the
latents themselves. This prints both, per channel too, and the same numbers for
2,000,000 standard-normal draws (what "no heavy tail" looks like: excess kurtosis
0, 0.70% beyond the inner and 0.0002% beyond the outer Tukey fences).
"""
import argparse
import json
import os
import sys

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', '..', '..'))
from lct_jax.data.latents import LatentDataset  # noqa: E402
from lct_jax.data.pipeline import Normalizer  # noqa: E402
from lct_jax.evaluation.analysis import tukey_summary  # noqa: E402


def main():
    p = argparse.ArgumentParser()
    p.add_argument('latent_dir')
    p.add_argument('--out', default='')
    a = p.parse_args()
    ds = LatentDataset(a.latent_dir)
    raw = ds.read_batch(range(len(ds)))
    normalised = Normalizer.from_dir(a.latent_dir, 0.5, 'per_element').normalize(raw)
    out = {'latent_dir': a.latent_dir, 'shape': list(raw.shape), 'raw': tukey_summary(raw),
           'per_element_normalised': tukey_summary(normalised),
           'raw_per_channel': [tukey_summary(raw[..., c]) for c in range(raw.shape[-1])],
           'gaussian_reference': tukey_summary(np.random.default_rng(0).standard_normal(2_000_000))}
    text = json.dumps(out, indent=1)
    print(text)
    if a.out:
        with open(a.out, 'w') as f:
            f.write(text + '\n')


if __name__ == '__main__':
    main()
