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

Every feature function is a `FeatureNet`: `.apply(params, uint8 NHWC)` is a pure,
jittable function (so lct_jax/evaluation/sharded.py runs it on every device of the
mesh, each on its own rows, the weights `.params` replicated); calling the object
on host images runs the same function in batches on the default device (the real
reference images). `.fingerprint` is a JSON-able description of the network and
its weights (reference_cache.py and the statistics files' provenance key on it).
"""
from __future__ import annotations

import functools
import hashlib
import os

import jax
import jax.numpy as jnp
import numpy as np

from lct_jax.cache_dirs import cache_root, cached_arrays, file_fingerprint
from lct_jax.evaluation.feature_net import FeatureNet
from lct_jax.evaluation.vgg16_features import vgg16_features
from lct_jax.models.convert import inception_params_from_torch, load_state_dict
from lct_jax.models.inception import InceptionV3
from lct_jax.weights import inception_weights_file, vgg16_weights_file


def unit_rgb(images):
    """uint8 NHWC -> float32 in [0, 1], grey repeated to 3 channels (what Inception takes)."""
    x = jnp.asarray(images).astype(jnp.float32) / 255.0
    return jnp.repeat(x, 3, axis=-1) if x.shape[-1] == 1 else x


def inception_features(weights_path: str, batch_size: int = 100) -> FeatureNet:
    """images uint8 NHWC (3 channels; grey is repeated) -> (N, 2048) pool3 features."""
    weights_path = inception_weights_file(weights_path)  # a local file, or pytorch-fid's URL via the cache
    model = InceptionV3()
    variables = inception_params_from_torch(load_state_dict(weights_path), model)
    return FeatureNet(lambda v, images: model.apply(v, unit_rgb(images)), variables, 2048,
                      {'kind': 'inception', **file_fingerprint(weights_path)}, batch_size)


@functools.lru_cache(maxsize=None)
def _digits_mlp(resolution: int) -> tuple[np.ndarray, np.ndarray]:
    """(w, b) of the MLP's hidden layer: from the on-disk cache, else trained and cached."""
    import sklearn

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


def digits_mlp_hidden(params, images):
    """The digits MLP's hidden layer: one matmul and a ReLU, in float32 at full precision (a TPU's
    default would round the matmul's inputs to bfloat16)."""
    x = jnp.asarray(images).reshape(images.shape[0], -1).astype(jnp.float32) / 255.0
    h = jnp.dot(x, params['w'], precision=jax.lax.Precision.HIGHEST) + params['b']
    return jnp.maximum(h, 0.0)


def digits_mlp_features(resolution: int = 8) -> FeatureNet:
    """images uint8 (N, r, r, 1) -> (N, 64) hidden ReLU activations of the digits MLP."""
    w, b = _digits_mlp(resolution)
    params = {'w': np.asarray(w, np.float32), 'b': np.asarray(b, np.float32)}
    # 'compute' is in the fingerprint: features cached by the float64 numpy version are not reused.
    return FeatureNet(digits_mlp_hidden, params, int(w.shape[1]),
                      {'kind': 'digits_mlp', 'resolution': resolution, 'compute': 'jax-float32',
                       'weights_sha256': hashlib.sha256(w.tobytes() + b.tobytes()).hexdigest()}, batch_size=1024)


FEATURES = ('inception', 'vgg16', 'digits_mlp')


def make_features(config, kind: str | None = None):
    """The feature function named `kind` (default: evaluation.features, the FID features)."""
    field = 'evaluation.features' if kind is None else 'evaluation.pr_features'
    kind = config.evaluation.features if kind is None else kind
    if kind == 'inception':
        return inception_features(config.evaluation.inception_weights)
    if kind == 'vgg16':
        ev = config.evaluation
        # a local file, or torchvision's URL via the cache
        return vgg16_features(vgg16_weights_file(ev.vgg16_weights), ev.vgg16_input, ev.vgg16_fc2_relu)
    if kind == 'digits_mlp':
        return digits_mlp_features(config.data.resolution)
    raise ValueError(f'{field} {kind!r}; valid: {FEATURES}')
