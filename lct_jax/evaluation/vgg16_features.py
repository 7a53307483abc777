"""The VGG16 fc2 features of StyleGAN2-ADA's `pr50k3` (the paper's recall, spec §15), in Flax.

What is verified (tests/test_vgg16.py): our VGG16 equals torchvision's `vgg16` on
the same weights (fc2 features), our area resize equals PyTorch's
`interpolate(mode='area')`, and the converter rejects files that do not fit.
What is not: NVIDIA's detector (`vgg16.pt`, a TorchScript file) could not be
downloaded here, so its exact preprocessing (resize method, input range,
channel order, mean) and whether its features are taken before or after
fc2's ReLU are assumptions (README, "Recall"); with torchvision's ImageNet
weights the features are VGG16's but not NVIDIA's network's.
"""
from __future__ import annotations

from lct_jax.cache_dirs import file_fingerprint
from lct_jax.evaluation.feature_net import FeatureNet
from lct_jax.models.convert import load_state_dict, vgg16_params_from_torch
from lct_jax.models.vgg16 import VGG16, preprocess


def vgg16_features(weights_path: str, convention: str = 'torchvision', fc2_relu: bool = True,
                   batch_size: int = 50):
    """A FeatureNet: images uint8 NHWC (grey is repeated to RGB) -> (N, 4096) fc2 features."""
    if not weights_path:
        raise ValueError('evaluation.vgg16_weights must name a local VGG16 file: torchvision\'s '
                         'vgg16-397923af.pth, or the .npz that python -m lct_jax.evaluation.nvidia_vgg16 writes')
    model = VGG16(fc2_relu=fc2_relu)
    params = vgg16_params_from_torch(load_state_dict(weights_path), model)
    return FeatureNet(lambda p, images: model.apply({'params': p}, preprocess(images, convention)), params, 4096,
                      {'kind': 'vgg16', 'input': convention, 'fc2_relu': fc2_relu, **file_fingerprint(weights_path)},
                      batch_size)
