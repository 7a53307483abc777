"""pytorch-fid's FID InceptionV3 (pool3 features, 2048-d) in Flax Linen, NHWC.

The network of `pytorch_fid.inception.fid_inception_v3` (TF's 2015 FID
Inception: FIDInceptionA/C/E_1/E_2 blocks, average pools that exclude the
padding), with its input handling: bilinear resize to 299x299
(align_corners=False, no antialiasing, as `F.interpolate`) and [0, 1] -> [-1, 1].
Parameter names follow torchvision's Inception3 (the `pt_inception-2015-12-05`
file); batch-norm statistics live in the 'batch_stats' collection.
"""
from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp


class BasicConv(nn.Module):
    """conv (no bias) -> batch norm (eps 1e-3, inference) -> relu."""
    features: int
    kernel: Sequence[int] = (1, 1)
    stride: int = 1
    padding: Sequence[int] = (0, 0)

    @nn.compact
    def __call__(self, x):
        ph, pw = self.padding
        x = nn.Conv(self.features, tuple(self.kernel), (self.stride, self.stride),
                    padding=((ph, ph), (pw, pw)), use_bias=False, name='conv')(x)
        c = self.features
        scale = self.param('bn_scale', nn.initializers.ones, (c,))
        bias = self.param('bn_bias', nn.initializers.zeros, (c,))
        mean = self.variable('batch_stats', 'mean', jnp.zeros, (c,)).value
        var = self.variable('batch_stats', 'var', jnp.ones, (c,)).value
        return nn.relu((x - mean) * jax.lax.rsqrt(var + 1e-3) * scale + bias)


def avg_pool_3x3_exclude_pad(x):
    """3x3 stride-1 average pool, padding 1, not counting the padded zeros."""
    window, pad = (1, 3, 3, 1), ((0, 0), (1, 1), (1, 1), (0, 0))
    total = jax.lax.reduce_window(x, 0.0, jax.lax.add, window, (1, 1, 1, 1), pad)
    count = jax.lax.reduce_window(jnp.ones_like(x[:1, ..., :1]), 0.0, jax.lax.add, window, (1, 1, 1, 1), pad)
    return total / count


def max_pool(x, stride=2, pad=0):
    padding = ((0, 0), (pad, pad), (pad, pad), (0, 0))
    return jax.lax.reduce_window(x, -jnp.inf, jax.lax.max, (1, 3, 3, 1), (1, stride, stride, 1), padding)


class InceptionA(nn.Module):
    pool_features: int

    @nn.compact
    def __call__(self, x):
        b1 = BasicConv(64, name='branch1x1')(x)
        b5 = BasicConv(64, (5, 5), padding=(2, 2), name='branch5x5_2')(BasicConv(48, name='branch5x5_1')(x))
        b3 = BasicConv(64, name='branch3x3dbl_1')(x)
        b3 = BasicConv(96, (3, 3), padding=(1, 1), name='branch3x3dbl_2')(b3)
        b3 = BasicConv(96, (3, 3), padding=(1, 1), name='branch3x3dbl_3')(b3)
        bp = BasicConv(self.pool_features, name='branch_pool')(avg_pool_3x3_exclude_pad(x))
        return jnp.concatenate([b1, b5, b3, bp], axis=-1)


class InceptionB(nn.Module):
    @nn.compact
    def __call__(self, x):
        b3 = BasicConv(384, (3, 3), stride=2, name='branch3x3')(x)
        bd = BasicConv(64, name='branch3x3dbl_1')(x)
        bd = BasicConv(96, (3, 3), padding=(1, 1), name='branch3x3dbl_2')(bd)
        bd = BasicConv(96, (3, 3), stride=2, name='branch3x3dbl_3')(bd)
        return jnp.concatenate([b3, bd, max_pool(x)], axis=-1)


class InceptionC(nn.Module):
    channels_7x7: int

    @nn.compact
    def __call__(self, x):
        c7 = self.channels_7x7
        b1 = BasicConv(192, name='branch1x1')(x)
        b7 = BasicConv(c7, name='branch7x7_1')(x)
        b7 = BasicConv(c7, (1, 7), padding=(0, 3), name='branch7x7_2')(b7)
        b7 = BasicConv(192, (7, 1), padding=(3, 0), name='branch7x7_3')(b7)
        bd = BasicConv(c7, name='branch7x7dbl_1')(x)
        bd = BasicConv(c7, (7, 1), padding=(3, 0), name='branch7x7dbl_2')(bd)
        bd = BasicConv(c7, (1, 7), padding=(0, 3), name='branch7x7dbl_3')(bd)
        bd = BasicConv(c7, (7, 1), padding=(3, 0), name='branch7x7dbl_4')(bd)
        bd = BasicConv(192, (1, 7), padding=(0, 3), name='branch7x7dbl_5')(bd)
        bp = BasicConv(192, name='branch_pool')(avg_pool_3x3_exclude_pad(x))
        return jnp.concatenate([b1, b7, bd, bp], axis=-1)


class InceptionD(nn.Module):
    @nn.compact
    def __call__(self, x):
        b3 = BasicConv(320, (3, 3), stride=2, name='branch3x3_2')(BasicConv(192, name='branch3x3_1')(x))
        b7 = BasicConv(192, name='branch7x7x3_1')(x)
        b7 = BasicConv(192, (1, 7), padding=(0, 3), name='branch7x7x3_2')(b7)
        b7 = BasicConv(192, (7, 1), padding=(3, 0), name='branch7x7x3_3')(b7)
        b7 = BasicConv(192, (3, 3), stride=2, name='branch7x7x3_4')(b7)
        return jnp.concatenate([b3, b7, max_pool(x)], axis=-1)


class InceptionE(nn.Module):
    pool: str  # 'avg' in FIDInceptionE_1, 'max' in FIDInceptionE_2

    @nn.compact
    def __call__(self, x):
        b1 = BasicConv(320, name='branch1x1')(x)
        b3 = BasicConv(384, name='branch3x3_1')(x)
        b3 = jnp.concatenate([BasicConv(384, (1, 3), padding=(0, 1), name='branch3x3_2a')(b3),
                              BasicConv(384, (3, 1), padding=(1, 0), name='branch3x3_2b')(b3)], axis=-1)
        bd = BasicConv(448, name='branch3x3dbl_1')(x)
        bd = BasicConv(384, (3, 3), padding=(1, 1), name='branch3x3dbl_2')(bd)
        bd = jnp.concatenate([BasicConv(384, (1, 3), padding=(0, 1), name='branch3x3dbl_3a')(bd),
                              BasicConv(384, (3, 1), padding=(1, 0), name='branch3x3dbl_3b')(bd)], axis=-1)
        pooled = avg_pool_3x3_exclude_pad(x) if self.pool == 'avg' else max_pool(x, stride=1, pad=1)
        bp = BasicConv(192, name='branch_pool')(pooled)
        return jnp.concatenate([b1, b3, bd, bp], axis=-1)


def resize_bilinear(images, size: int = 299):
    """F.interpolate(mode='bilinear', align_corners=False) without antialiasing."""
    n, h, w, c = images.shape
    if (h, w) == (size, size):
        return images
    return jax.image.resize(images, (n, size, size, c), 'bilinear', antialias=False)


class InceptionV3(nn.Module):
    """images NHWC float in [0, 1], any size -> (N, 2048) pool3 features."""

    @nn.compact
    def __call__(self, images):
        x = resize_bilinear(images.astype(jnp.float32)) * 2.0 - 1.0
        x = BasicConv(32, (3, 3), stride=2, name='Conv2d_1a_3x3')(x)
        x = BasicConv(32, (3, 3), name='Conv2d_2a_3x3')(x)
        x = BasicConv(64, (3, 3), padding=(1, 1), name='Conv2d_2b_3x3')(x)
        x = max_pool(x)
        x = BasicConv(80, name='Conv2d_3b_1x1')(x)
        x = BasicConv(192, (3, 3), name='Conv2d_4a_3x3')(x)
        x = max_pool(x)
        x = InceptionA(32, name='Mixed_5b')(x)
        x = InceptionA(64, name='Mixed_5c')(x)
        x = InceptionA(64, name='Mixed_5d')(x)
        x = InceptionB(name='Mixed_6a')(x)
        for name, c7 in (('Mixed_6b', 128), ('Mixed_6c', 160), ('Mixed_6d', 160), ('Mixed_6e', 192)):
            x = InceptionC(c7, name=name)(x)
        x = InceptionD(name='Mixed_7a')(x)
        x = InceptionE('avg', name='Mixed_7b')(x)
        x = InceptionE('max', name='Mixed_7c')(x)
        return x.mean(axis=(1, 2))
