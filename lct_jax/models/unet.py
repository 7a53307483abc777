"""EDM's re-implementation of the ADM UNet (`DhariwalUNet`), in Flax Linen, NHWC.

Structure, initialisation and parameter names follow EDM's
`training/networks.py` as the sLCT authors use it (spec §12.1), plus their
switchable block and output norms. Module names are the PyTorch names with
'.' replaced by '_' (`enc.32x32_block0` -> `enc_32x32_block0`), so
`convert.unet_params_from_torch` is a renaming plus layout transposes.

`logvar_head=True` (sCT, objectives/sct.py) adds the adaptive weighting's logvar(t): a linear
map (zero-initialised) of the noise label's positional embedding, returned with `return_logvar=True`
as EDM2's logvar head is. `v_head=True` (improved MeanFlow, objectives/imf.py) adds a second output
layer (its own norm and conv) on the decoder's last features for the instantaneous velocity v:
the network then returns (u, v). The iMF authors' DiT branches its last 8 blocks into the two heads;
here only the output layer branches (cheaper; documented in docs/sct_imf.md). Each flag off, the
parameter tree is the old one.

`two_times=True` (MeanFlow, objectives/meanflow.py) gives the noise embedding a second input, the
interval h = t - r: as the MeanFlow authors' EDM UNet (Gsunshine/py-meanflow `unet.py`), the
positional embeddings of t and h are concatenated before `map_layer0` (so its kernel has
2 * model_channels rows), t and h in [0, 1] as they are. Off, the parameter tree is the old one.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from lct_jax.models.norms import Norm


def edm_uniform(fan_in: int, gain: float = math.sqrt(1.0 / 3.0)):
    """EDM 'kaiming_uniform' init times `gain`: U(-a, a), a = gain * sqrt(3 / fan_in)."""
    bound = gain * math.sqrt(3.0 / fan_in)

    def init(key, shape, dtype=jnp.float32):
        return jax.random.uniform(key, shape, dtype, -bound, bound)

    return init


class Conv(nn.Module):
    """k x k 'same' convolution with EDM init (zero init when `zero`)."""
    features: int
    kernel: int
    zero: bool = False
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x):
        fan_in = x.shape[-1] * self.kernel * self.kernel
        init = nn.initializers.zeros if self.zero else edm_uniform(fan_in)
        w = self.param('kernel', init, (self.kernel, self.kernel, x.shape[-1], self.features))
        b = self.param('bias', init, (self.features,))
        pad = self.kernel // 2
        y = jax.lax.conv_general_dilated(
            x.astype(self.dtype), w.astype(self.dtype), (1, 1), [(pad, pad), (pad, pad)],
            dimension_numbers=('NHWC', 'HWIO', 'NHWC'))
        return y + b.astype(self.dtype)


class Dense(nn.Module):
    features: int
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x):
        init = edm_uniform(x.shape[-1])
        w = self.param('kernel', init, (x.shape[-1], self.features))
        b = self.param('bias', init, (self.features,))
        return x.astype(self.dtype) @ w.astype(self.dtype) + b.astype(self.dtype)


def downsample(x):
    """EDM's [1,1] box filter with stride 2 = 2x2 average pooling."""
    n, h, w, c = x.shape
    return x.reshape(n, h // 2, 2, w // 2, 2, c).mean(axis=(2, 4))


def upsample(x):
    """EDM's transposed [1,1] filter x4 with stride 2 = nearest-neighbour doubling."""
    return jnp.repeat(jnp.repeat(x, 2, axis=1), 2, axis=2)


@dataclasses.dataclass(frozen=True)
class BlockSpec:
    name: str            # PyTorch name, e.g. 'enc.16x16_block0'
    in_channels: int
    out_channels: int
    resolution: int      # of the block's output
    attention: bool = False
    up: bool = False
    down: bool = False


def unet_layout(img_resolution, in_channels, model_channels, channel_mult, num_blocks,
                attn_resolutions) -> tuple[int, list[BlockSpec], list[BlockSpec]]:
    """The encoder and decoder blocks of DhariwalUNet, in execution order.

    Returns (channels of the input conv, encoder blocks, decoder blocks); the
    encoder's first entry (the input conv) is represented by that count.
    """
    enc, skips = [], []
    cout = model_channels * channel_mult[0]
    skips.append(cout)  # the input conv's output
    for level, mult in enumerate(channel_mult):
        res = img_resolution >> level
        if level > 0:
            enc.append(BlockSpec(f'enc.{res}x{res}_down', cout, cout, res, down=True))
            skips.append(cout)
        for idx in range(num_blocks):
            cin, cout = cout, model_channels * mult
            enc.append(BlockSpec(f'enc.{res}x{res}_block{idx}', cin, cout, res,
                                 attention=res in attn_resolutions))
            skips.append(cout)
    dec = []
    for level, mult in reversed(list(enumerate(channel_mult))):
        res = img_resolution >> level
        if level == len(channel_mult) - 1:
            dec.append(BlockSpec(f'dec.{res}x{res}_in0', cout, cout, res, attention=True))
            dec.append(BlockSpec(f'dec.{res}x{res}_in1', cout, cout, res))
        else:
            dec.append(BlockSpec(f'dec.{res}x{res}_up', cout, cout, res, up=True))
        for idx in range(num_blocks + 1):
            cin, cout = cout + skips.pop(), model_channels * mult
            dec.append(BlockSpec(f'dec.{res}x{res}_block{idx}', cin, cout, res,
                                 attention=res in attn_resolutions))
    return model_channels * channel_mult[0], enc, dec


def flax_name(torch_name: str) -> str:
    return torch_name.replace('.', '_')


class UNetBlock(nn.Module):
    spec: BlockSpec
    norm: str
    dropout: float = 0.0
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, emb, train: bool = False):
        s = self.spec
        resample = downsample if s.down else upsample if s.up else (lambda a: a)
        orig = x
        h = Conv(s.out_channels, 3, dtype=self.dtype, name='conv0')(
            resample(nn.silu(Norm(self.norm, name='norm0')(x))))
        scale, shift = jnp.split(Dense(2 * s.out_channels, dtype=self.dtype, name='affine')(emb), 2, axis=-1)
        h = nn.silu(shift[:, None, None, :] + Norm(self.norm, name='norm1')(h) * (scale[:, None, None, :] + 1))
        h = nn.Dropout(self.dropout, deterministic=not train)(h)
        h = Conv(s.out_channels, 3, zero=True, dtype=self.dtype, name='conv1')(h)
        if s.out_channels != s.in_channels:
            orig = Conv(s.out_channels, 1, dtype=self.dtype, name='skip')(resample(orig))
        else:
            orig = resample(orig)
        x = h + orig
        if s.attention:
            n, height, width, c = x.shape
            heads = c // 64
            qkv = Conv(3 * c, 1, dtype=self.dtype, name='qkv')(Norm(self.norm, name='norm2')(x))
            # PyTorch orders the qkv channels as (head, channel, {q,k,v}).
            qkv = qkv.reshape(n, height * width, heads, c // heads, 3).astype(jnp.float32)
            q, k, v = qkv[..., 0], qkv[..., 1], qkv[..., 2]
            logits = jnp.einsum('nqhc,nkhc->nhqk', q, k / math.sqrt(c // heads))
            weights = jax.nn.softmax(logits, axis=-1)
            a = jnp.einsum('nhqk,nkhc->nqhc', weights, v).reshape(n, height, width, c)
            x = x + Conv(c, 1, zero=True, dtype=self.dtype, name='proj')(a.astype(self.dtype))
        return x


def positional_embedding(noise_labels, num_channels: int, max_positions: int = 10000):
    """EDM's PositionalEmbedding: [cos(x f_k), sin(x f_k)], f_k = (1/max_positions)^(k / (C/2))."""
    half = num_channels // 2
    freqs = (1.0 / max_positions) ** (jnp.arange(half, dtype=jnp.float32) / half)
    x = noise_labels.astype(jnp.float32)[:, None] * freqs[None, :]
    return jnp.concatenate([jnp.cos(x), jnp.sin(x)], axis=1)


class UNet(nn.Module):
    """DhariwalUNet (unconditional) with the authors' block / output norm switches."""
    img_resolution: int = 32
    in_channels: int = 4
    out_channels: int = 4
    model_channels: int = 128
    channel_mult: Sequence[int] = (1, 2, 3, 4)
    channel_mult_emb: int = 4
    num_blocks: int = 4
    attn_resolutions: Sequence[int] = (16, 8)
    dropout: float = 0.0
    block_norm: str = 'non-scaling-layer-norm'
    out_norm: str = 'non-scaling-layer-norm'
    dtype: Any = jnp.float32     # compute dtype of convs, block dense layers and attention's qkv/proj
                                 # (bf16 on accelerators); norms, softmax, time embedding stay f32
    remat: bool = False          # rematerialise each block in the backward pass
    two_times: bool = False      # MeanFlow: the noise embedding also takes h = t - r
    logvar_head: bool = False    # sCT: a logvar(t) head for the adaptive weighting (return_logvar=True)
    v_head: bool = False         # improved MeanFlow: a second output layer for v; returns (u, v)

    def layout(self):
        return unet_layout(self.img_resolution, self.in_channels, self.model_channels,
                           tuple(self.channel_mult), self.num_blocks, tuple(self.attn_resolutions))

    @nn.compact
    def __call__(self, x, noise_labels, train: bool = False, h=None, return_logvar: bool = False):
        """h: the interval t - r of a two-time model (None there: 0, e.g. at init). return_logvar:
        also the logvar head's (B,) output (a model with logvar_head)."""
        if return_logvar and not self.logvar_head:
            raise ValueError('UNet: return_logvar=True needs logvar_head=True')
        if h is not None and not self.two_times:
            raise ValueError('UNet: h (a second time) given to a single-time model (two_times=False)')
        if x.ndim != 4 or x.shape[1:] != (self.img_resolution, self.img_resolution, self.in_channels):
            raise ValueError(f'UNet expects NHWC input of shape (batch, {self.img_resolution}, '
                             f'{self.img_resolution}, {self.in_channels}); got {x.shape}')
        emb_channels = self.model_channels * self.channel_mult_emb
        emb = positional_embedding(noise_labels, self.model_channels)
        if self.two_times:
            emb = jnp.concatenate(
                [emb, positional_embedding(jnp.zeros_like(noise_labels) if h is None else h, self.model_channels)],
                axis=1)
        # The time embedding stays float32 whatever the compute dtype (a few KFLOPs per sample).
        emb = nn.silu(Dense(emb_channels, name='map_layer0')(emb))
        emb = nn.silu(Dense(emb_channels, name='map_layer1')(emb))

        block_cls = nn.remat(UNetBlock, static_argnums=(3,)) if self.remat else UNetBlock
        conv_channels, enc, dec = self.layout()
        res = self.img_resolution
        x = Conv(conv_channels, 3, dtype=self.dtype, name=f'enc_{res}x{res}_conv')(x)
        skips = [x]
        for spec in enc:
            x = block_cls(spec, self.block_norm, self.dropout, self.dtype, name=flax_name(spec.name))(x, emb, train)
            skips.append(x)
        for spec in dec:
            if x.shape[-1] != spec.in_channels:
                x = jnp.concatenate([x, skips.pop()], axis=-1)
            x = block_cls(spec, self.block_norm, self.dropout, self.dtype, name=flax_name(spec.name))(x, emb, train)
        features = x
        x = nn.silu(Norm(self.out_norm, name='out_norm')(features))
        out = Conv(self.out_channels, 3, zero=True, dtype=self.dtype, name='out_conv')(x).astype(jnp.float32)
        if self.v_head:
            v = nn.silu(Norm(self.out_norm, name='v_out_norm')(features))
            out = (out, Conv(self.out_channels, 3, zero=True, dtype=self.dtype, name='v_out_conv')(v).astype(jnp.float32))
        if self.logvar_head:
            logvar = nn.Dense(1, kernel_init=nn.initializers.zeros, name='logvar_linear')(
                positional_embedding(noise_labels, self.model_channels))[:, 0]
            if return_logvar:
                return out, logvar
        return out


def count_params(params) -> int:
    return sum(int(p.size) for p in jax.tree_util.tree_leaves(params))
