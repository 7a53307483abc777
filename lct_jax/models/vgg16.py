"""VGG16 (configuration D) up to fc2: the 4,096-d features of StyleGAN2-ADA's precision / recall.

Layer for layer torchvision's `vgg16` (13 3x3 convs with ReLU, 5 max-pools,
adaptive average pool to 7x7, fc1 + ReLU, fc2 [+ ReLU]); weights come from
torchvision's `vgg16-397923af.pth` through `convert.vgg16_params_from_torch`.
Input: float NHWC, already normalised (see `preprocess`). Dropout is the
identity at evaluation and is left out.
"""
from __future__ import annotations

import math

import flax.linen as nn
import jax.numpy as jnp
import numpy as np

BLOCKS = ((2, 64), (2, 128), (3, 256), (3, 512), (3, 512))   # (convs, channels) per stage

# torchvision's ImageNet input normalisation (on [0, 1] RGB) ...
TORCHVISION_MEAN, TORCHVISION_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
# ... and the original (Caffe) VGG release's: BGR on [0, 255], mean subtracted, no scaling.
CAFFE_BGR_MEAN = (103.939, 116.779, 123.68)
INPUT_CONVENTIONS = ('torchvision', 'caffe')


def _averaging_matrix(n_in: int, n_out: int) -> np.ndarray:
    """Row i averages input cells [floor(i n_in / n_out), ceil((i+1) n_in / n_out)): PyTorch's bins."""
    m = np.zeros((n_out, n_in), np.float32)
    for i in range(n_out):
        lo, hi = (i * n_in) // n_out, math.ceil((i + 1) * n_in / n_out)
        m[i, lo:hi] = 1.0 / (hi - lo)
    return m


def adaptive_avg_pool(x, out_hw: tuple[int, int]):
    """`torch.nn.functional.adaptive_avg_pool2d` (= `interpolate(mode='area')`) on NHWC.

    Each output cell is the mean over a rectangle of input cells, so the pooling
    separates into one averaging matrix per axis. Shrinks or enlarges (torch
    repeats cells when the output is larger, as VGG's pool does below 224x224).
    """
    ph = jnp.asarray(_averaging_matrix(x.shape[1], out_hw[0]))
    pw = jnp.asarray(_averaging_matrix(x.shape[2], out_hw[1]))
    return jnp.einsum('oh,bhwc,pw->bopc', ph, x.astype(jnp.float32), pw,
                      precision='highest')


def preprocess(images_uint8, convention: str = 'torchvision', size: int = 224):
    """uint8 NHWC RGB -> the network's float input: area-resized to size x size (what StyleGAN2-ADA's
    detector is believed to do, not verified: see README) and normalised by `convention`."""
    if convention not in INPUT_CONVENTIONS:
        raise ValueError(f'VGG16 input convention {convention!r}; valid: {INPUT_CONVENTIONS}')
    x = jnp.asarray(images_uint8, jnp.float32)
    if x.shape[-1] == 1:
        x = jnp.repeat(x, 3, axis=-1)
    if x.shape[1:3] != (size, size):
        x = adaptive_avg_pool(x, (size, size))
    if convention == 'torchvision':
        return (x / 255.0 - jnp.asarray(TORCHVISION_MEAN)) / jnp.asarray(TORCHVISION_STD)
    return x[..., ::-1] - jnp.asarray(CAFFE_BGR_MEAN)


class VGG16(nn.Module):
    """Normalised NHWC images (any size >= 32) -> (N, 4096) fc2 features."""
    fc2_relu: bool = True       # fc2's ReLU (Keras' 'fc2' layer includes it; torchvision's classifier[4])

    @nn.compact
    def __call__(self, x):
        for stage, (convs, channels) in enumerate(BLOCKS, start=1):
            for i in range(1, convs + 1):
                x = nn.relu(nn.Conv(channels, (3, 3), padding=1, name=f'conv{stage}_{i}')(x))
            x = nn.max_pool(x, (2, 2), strides=(2, 2))
        x = adaptive_avg_pool(x, (7, 7))
        # torch flattens (C, H, W): keep that order so fc1's weight is a plain transpose.
        x = jnp.transpose(x, (0, 3, 1, 2)).reshape(x.shape[0], -1)
        x = nn.relu(nn.Dense(4096, name='fc1')(x))
        x = nn.Dense(4096, name='fc2')(x)
        return nn.relu(x) if self.fc2_relu else x
