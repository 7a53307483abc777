"""Feature extractors for Fréchet distances and precision / recall.

'inception'   pytorch-fid's FID InceptionV3 (pool3, 2048-d), weights from a local
              pt_inception-2015-12-05-*.pth: the paper's FID.
'vgg16'       the 4,096-d fc2 features of VGG16 that StyleGAN2-ADA's pr50k3 uses for
              precision / recall (the paper's recall), weights from a local file
              (`evaluation/vgg16_features.py` says what is and is not verified).
'digits_mlp'  for the embedded digits default, where no Inception weights exist
              offline: the 64-d hidden layer of an MLP classifier trained
              deterministically on the real digits (about a second at 8x8, 15-30 s at
              the latent study's 32x32, so its weights are cached on disk, keyed by the
              resolution and the sklearn / numpy versions). Like FID's Inception, it is
              a network trained to tell the data's classes apart, so its Fréchet
              distance grows when samples stop looking like digits or when classes
              are missing.

Every feature function carries `.fingerprint`, a JSON-able description of the
network and its weights (lct_jax/evaluation/reference_cache.py keys on it).
"""
from __future__ import annotations

import functools
import hashlib
import os

import jax
import jax.numpy as jnp
import numpy as np

from lct_jax.cache_dirs import file_fingerprint


def inception_features(weights_path: str, batch_size: int = 100):
    """images uint8 NHWC (3 channels; grey is repeated) -> (N, 2048) float64."""
    from lct_jax.models.convert import inception_params_from_torch, load_state_dict
    from lct_jax.models.inception import InceptionV3
    from lct_jax.weights import inception_weights_file
    weights_path = inception_weights_file(weights_path)  # a local file, or pytorch-fid's URL via the cache
    model = InceptionV3()
    variables = inception_params_from_torch(load_state_dict(weights_path), model)
    apply = jax.jit(model.apply)

    def features(images: np.ndarray) -> np.ndarray:
        out = []
        for i in range(0, len(images), batch_size):
            x = images[i:i + batch_size].astype(np.float32) / 255.0
            if x.shape[-1] == 1:
                x = np.repeat(x, 3, axis=-1)
            out.append(np.asarray(apply(variables, jnp.asarray(x)), np.float64))
        return np.concatenate(out)

    features.fingerprint = {'kind': 'inception', **file_fingerprint(weights_path)}
    return features


@functools.lru_cache(maxsize=None)
def _digits_mlp(resolution: int) -> tuple[np.ndarray, np.ndarray]:
    """(w, b) of the MLP's hidden layer: from the on-disk cache, else trained and cached."""
    import sklearn
    from lct_jax.cache_dirs import cache_root, cached_arrays

    def train():
        clf = _train_digits_mlp(resolution)
        return {'w': clf.coefs_[0], 'b': clf.intercepts_[0]}

    path = os.path.join(cache_root(), 'digits_mlp',
                        f'r{resolution}-sklearn{sklearn.__version__}-numpy{np.__version__}.npz')
    arrays, _ = cached_arrays(path, train)
    return arrays['w'], arrays['b']


def _train_digits_mlp(resolution: int):
    from PIL import Image
    from sklearn.datasets import load_digits
    from sklearn.neural_network import MLPClassifier
    d = load_digits()
    raw = (d.images * (255.0 / 16.0)).round().astype(np.uint8)
    if resolution != 8:
        raw = np.stack([np.asarray(Image.fromarray(im).resize((resolution, resolution), Image.BICUBIC))
                        for im in raw])
    x = raw.reshape(len(raw), -1) / 255.0
    # One BLAS thread: on these 64-wide matrices OpenBLAS's threads cost more than they save
    # (measured here: 6 s with one thread, 30 s with two; weights equal to 2.5e-11).
    from threadpoolctl import threadpool_limits
    with threadpool_limits(limits=1, user_api='blas'):
        return MLPClassifier(hidden_layer_sizes=(64,), max_iter=500, random_state=0).fit(x, d.target)


def digits_mlp_features(resolution: int = 8):
    """images uint8 (N, r, r, 1) -> (N, 64) hidden ReLU activations of the digits MLP."""
    w, b = _digits_mlp(resolution)

    def features(images: np.ndarray) -> np.ndarray:
        x = images.reshape(len(images), -1).astype(np.float64) / 255.0
        return np.maximum(x @ w + b, 0.0)

    features.fingerprint = {'kind': 'digits_mlp', 'resolution': resolution,
                            'weights_sha256': hashlib.sha256(w.tobytes() + b.tobytes()).hexdigest()}
    return features


FEATURES = ('inception', 'vgg16', 'digits_mlp')


def make_features(config, kind: str | None = None):
    """The feature function named `kind` (default: evaluation.features, the FID features)."""
    field = 'evaluation.features' if kind is None else 'evaluation.pr_features'
    kind = config.evaluation.features if kind is None else kind
    if kind == 'inception':
        return inception_features(config.evaluation.inception_weights)
    if kind == 'vgg16':
        from lct_jax.evaluation.vgg16_features import vgg16_features
        from lct_jax.weights import vgg16_weights_file  # a local file, or torchvision's URL via the cache
        ev = config.evaluation
        return vgg16_features(vgg16_weights_file(ev.vgg16_weights), ev.vgg16_input, ev.vgg16_fc2_relu)
    if kind == 'digits_mlp':
        return digits_mlp_features(config.data.resolution)
    raise ValueError(f'{field} {kind!r}; valid: {FEATURES}')
