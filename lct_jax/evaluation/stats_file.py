"""Reference statistics files that say what they were computed from, and are checked against it.

Why: a FID is only as good as its yardstick. A statistics file made with another feature
network (a digits MLP's 64-d features, VGG16's fc2), other weights, at another resolution or
from another dataset gives a number that looks like a FID and means nothing; before this, such
a file was read as long as its mu and sigma had the shapes the features happened to have.

Three kinds of file are read (all through lct_jax/untrusted.py's load_npz, no pickles):

  ours         mu, sigma and `provenance`: a JSON string with the dataset, split, resolution,
               image count, the feature network's fingerprint (its kind and weights' SHA-256,
               evaluation/features.py) and the lct_jax version. Every field the evaluation also
               knows must agree, or the file is refused with a sentence naming the fields.
  pytorch-fid  mu, sigma only (`python -m pytorch_fid --save-stats`): Inception pool3 by
               construction, so it is accepted for evaluation.features='inception' with
               2,048-d statistics, and refused otherwise.
  ADM          openai/guided-diffusion's reference batches (e.g. VIRTUAL_imagenet256_labeled.npz:
               mu, sigma, mu_s, sigma_s of the TF Inception's pool3 / spatial features, and
               arr_0, 10,000 images for precision / recall). mu and sigma are read, nothing
               else (arr_0 is 1.9 GB at 256 x 256); the same rule as pytorch-fid's applies. The
               TF graph ADM uses is the network pytorch-fid's weights were ported from, so FIDs
               against it compare with DiT's, MeanFlow's and iMF's.
"""
from __future__ import annotations

import json
import os
import sys

import numpy as np

from lct_jax.evaluation import fid
from lct_jax.untrusted import UnreadableFileError, finite_array, load_npz

FORMAT = 'lct_jax.fid_stats/1'
INCEPTION_DIMS = 2048


class StatisticsMismatchError(ValueError):
    """A statistics file computed from other data or with another network than the evaluation's."""


def lct_jax_version() -> str:
    try:
        from importlib.metadata import version
        return version('lct_jax')
    except Exception:  # not installed (a checkout on PYTHONPATH): the pyproject's
        root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        try:
            for line in open(os.path.join(root, 'pyproject.toml')):
                if line.startswith('version'):
                    return line.split('=', 1)[1].strip().strip('"')
        except OSError:
            pass
        return 'unknown'


def provenance(dataset: str, split: str, resolution: int, count: int, features: dict) -> dict:
    """What a statistics file is computed from; `features` is the FeatureNet's fingerprint."""
    return {'format': FORMAT, 'dataset': dataset, 'split': split, 'resolution': int(resolution),
            'count': int(count), 'features': features, 'lct_jax_version': lct_jax_version()}


def expected_provenance(config, fingerprint: dict) -> dict:
    """The fields an evaluation with `config` and its FID FeatureNet's `fingerprint` requires."""
    return {'dataset': config.evaluation.dataset, 'resolution': int(config.data.resolution),
            'features': fingerprint}


def save(path: str, mu, sigma, prov: dict, overwrite: bool = False) -> str:
    """Write mu, sigma (pytorch-fid reads these two) and the provenance; the path written (an
    existing file of other statistics is kept, as fid.save_stats does)."""
    return fid.save_stats(path, mu, sigma, overwrite, extra={'provenance': np.array(json.dumps(prov, sort_keys=True))})


def read(path: str) -> tuple[np.ndarray, np.ndarray, dict | None, str]:
    """(mu, sigma, provenance or None, kind: 'lct_jax' | 'pytorch-fid' | 'adm'), each array checked."""
    what = 'FID statistics (mu, sigma: ours, pytorch-fid\'s or ADM\'s reference batch)'
    # arr_0 (ADM's images) is not read; mu_s / sigma_s only tell the kind.
    arrays = load_npz(path, what, required=('mu', 'sigma'), only=('mu', 'sigma', 'provenance', 'mu_s'))
    mu = finite_array(path, arrays, 'mu', 'FID statistics', ndim=1)
    sigma = finite_array(path, arrays, 'sigma', 'FID statistics', ndim=2)
    if sigma.shape != (mu.shape[0], mu.shape[0]) or not mu.shape[0]:
        raise UnreadableFileError(f'{path}: FID statistics: mu {mu.shape} and sigma {sigma.shape}; expected a '
                                  'D-vector and a D x D covariance')
    if 'provenance' not in arrays:
        return mu, sigma, None, 'adm' if 'mu_s' in arrays else 'pytorch-fid'
    raw = arrays['provenance']
    try:
        prov = json.loads(str(raw.item())) if raw.dtype.kind == 'U' and raw.ndim == 0 else None
    except ValueError:
        prov = None
    if not isinstance(prov, dict) or prov.get('format') != FORMAT:
        raise UnreadableFileError(f'{path}: its provenance is not a {FORMAT} record (a JSON object in a '
                                  'string array); remake the file')
    return mu, sigma, prov, 'lct_jax'


def mismatches(found: dict, wanted: dict) -> list[str]:
    """'field: file has X, evaluation has Y' for each field of `wanted` the file disagrees with."""
    out = []
    for key, want in wanted.items():
        have = found.get(key)
        if key == 'features' and isinstance(have, dict) and isinstance(want, dict):
            for k in sorted(set(have) | set(want)):
                if have.get(k) != want.get(k):
                    out.append(f'features.{k}: the file has {have.get(k)!r}, the evaluation {want.get(k)!r}')
        elif have != want:
            out.append(f'{key}: the file has {have!r}, the evaluation {want!r}')
    return out


def load_checked(path: str, config, fingerprint: dict, say=None):
    """(mu, sigma) of `path` if it was computed as this evaluation computes its features; a
    StatisticsMismatchError naming the differing fields otherwise."""
    say = say or (lambda line: print(line, file=sys.stderr, flush=True))
    mu, sigma, prov, kind = read(path)
    if kind == 'lct_jax':
        wrong = mismatches(prov, expected_provenance(config, fingerprint))
        if wrong:
            raise StatisticsMismatchError(f'{path}: these statistics were not computed as this evaluation '
                                          f'computes its features: {"; ".join(wrong)}')
        say(f'reference statistics: {path} ({prov["count"]:,} images of {prov["dataset"]}:{prov["split"]} '
            f'at {prov["resolution"]}px, {fingerprint.get("kind")} features, lct_jax {prov["lct_jax_version"]})')
        return mu, sigma
    name = {'adm': "ADM's reference batch (openai/guided-diffusion)", 'pytorch-fid': "pytorch-fid's"}[kind]
    kind_of_features = fingerprint.get('kind')
    if kind_of_features != 'inception' or mu.shape[0] != INCEPTION_DIMS:
        raise StatisticsMismatchError(
            f'{path}: {name} statistics ({mu.shape[0]}-d, no provenance) are of Inception pool3 features '
            f'({INCEPTION_DIMS}-d); this evaluation\'s features are {kind_of_features!r}'
            + ('' if kind_of_features == 'inception' else ': set evaluation.features=inception or use statistics '
               'computed with these features'))
    say(f'reference statistics: {path}, {name} (Inception pool3, {mu.shape[0]}-d; the file does not say what '
        'images or resolution it was computed from)')
    return mu, sigma
