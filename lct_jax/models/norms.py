"""The normalisation layers of the paper's ablation (spec §12.2), NHWC.

Names are the authors' `--block-norm-type` / `--last-norm-type` values.
Statistics are always computed in float32 (whatever the compute dtype) and
the variance is the biased one, as in PyTorch.

  group-norm                 EDM GroupNorm: min(32, C // 4) groups, scale and bias per channel
  non-scaling-group-norm     the same, no scale (the authors freeze it at 1)
  layer-norm                 statistics over (H, W, C) of a sample, scale and bias of shape (H, W, C)
  non-scaling-layer-norm     NsLN: the same, no scale; a bias per channel and position
  rms-norm                   x / rms over (H, W, C), scale of shape (H, W, C), no bias
  instance-norm              statistics over (H, W) per channel, scale and bias per channel
  non-scaling-instance-norm  the same, no scale
"""
from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp

NORM_TYPES = ('group-norm', 'non-scaling-group-norm', 'layer-norm', 'non-scaling-layer-norm',
              'rms-norm', 'instance-norm', 'non-scaling-instance-norm')


def has_scale(kind: str) -> bool:
    return kind in ('group-norm', 'layer-norm', 'rms-norm', 'instance-norm')


def param_shape(kind: str, hwc: tuple[int, int, int]) -> tuple[int, ...]:
    """Shape of the scale / bias of this norm for an input of shape (H, W, C)."""
    return tuple(hwc) if 'layer-norm' in kind or kind == 'rms-norm' else (hwc[-1],)


def num_groups(channels: int) -> int:
    return min(32, channels // 4)


class Norm(nn.Module):
    kind: str = 'group-norm'
    epsilon: float = 1e-5

    @nn.compact
    def __call__(self, x):
        if self.kind not in NORM_TYPES:
            raise ValueError(f'unknown norm {self.kind!r}; valid: {NORM_TYPES}')
        dtype = x.dtype
        h = x.astype(jnp.float32)
        n, height, width, c = h.shape
        shape = param_shape(self.kind, (height, width, c))
        if self.kind == 'rms-norm':
            h = h * jnp.reciprocal(jnp.sqrt(jnp.mean(h**2, axis=(1, 2, 3), keepdims=True) + self.epsilon))
        else:
            if 'group-norm' in self.kind:
                g = num_groups(c)
                grouped = h.reshape(n, height, width, g, c // g)
                mean = grouped.mean(axis=(1, 2, 4), keepdims=True)
                var = jnp.square(grouped - mean).mean(axis=(1, 2, 4), keepdims=True)
                h = ((grouped - mean) / jnp.sqrt(var + self.epsilon)).reshape(h.shape)
            else:
                axes = (1, 2, 3) if 'layer-norm' in self.kind else (1, 2)
                mean = h.mean(axis=axes, keepdims=True)
                var = jnp.square(h - mean).mean(axis=axes, keepdims=True)
                h = (h - mean) / jnp.sqrt(var + self.epsilon)
        if has_scale(self.kind):
            h = h * self.param('scale', nn.initializers.ones, shape)
        if self.kind != 'rms-norm':
            h = h + self.param('bias', nn.initializers.zeros, shape)
        return h.astype(dtype)
