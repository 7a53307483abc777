"""Autoencoders that map images to the latents sLCT trains on.

`AutoencoderKL` is the Stable Diffusion f8 KL-VAE (diffusers' `AutoencoderKL`,
weights of `stabilityai/sd-vae-ft-ema`) in Flax Linen, NHWC, with diffusers'
config field names and parameter layout (see `convert.vae_params_from_torch`).
`IdentityAutoencoder` stands in for it in pixel-space runs and the embedded
default. `Codec` wraps either behind one interface for encoding and decoding.
"""
from __future__ import annotations

import dataclasses
import functools
import hashlib
import math
import sys
from typing import Any, Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from lct_jax.models.convert import load_state_dict, vae_params_from_torch
from lct_jax.weights import resolve_diffusers

SD_SCALE_FACTOR = 0.18215


class Conv(nn.Module):
    features: int
    kernel: int = 3
    stride: int = 1
    padding: object = 'SAME'

    @nn.compact
    def __call__(self, x):
        return nn.Conv(self.features, (self.kernel, self.kernel), (self.stride, self.stride),
                       padding=self.padding, name='conv')(x)


def _group_norm(groups, name):
    return nn.GroupNorm(num_groups=groups, epsilon=1e-6, use_fast_variance=False, name=name)


class ResnetBlock(nn.Module):
    out_channels: int
    groups: int

    @nn.compact
    def __call__(self, x):
        h = nn.silu(_group_norm(self.groups, 'norm1')(x))
        h = nn.Conv(self.out_channels, (3, 3), padding='SAME', name='conv1')(h)
        h = nn.silu(_group_norm(self.groups, 'norm2')(h))
        h = nn.Conv(self.out_channels, (3, 3), padding='SAME', name='conv2')(h)
        if x.shape[-1] != self.out_channels:
            x = nn.Conv(self.out_channels, (1, 1), name='conv_shortcut')(x)
        return x + h


class Attention(nn.Module):
    """Single-head self-attention over positions, with a residual (diffusers' VAE mid block)."""
    groups: int

    @nn.compact
    def __call__(self, x):
        n, h, w, c = x.shape
        t = _group_norm(self.groups, 'group_norm')(x).reshape(n, h * w, c)
        q = nn.Dense(c, name='to_q')(t)
        k = nn.Dense(c, name='to_k')(t)
        v = nn.Dense(c, name='to_v')(t)
        weights = jax.nn.softmax(jnp.einsum('nqc,nkc->nqk', q, k) / math.sqrt(c), axis=-1)
        out = nn.Dense(c, name='to_out_0')(jnp.einsum('nqk,nkc->nqc', weights, v))
        return x + out.reshape(n, h, w, c)


class MidBlock(nn.Module):
    groups: int

    @nn.compact
    def __call__(self, x):
        c = x.shape[-1]
        x = ResnetBlock(c, self.groups, name='resnets_0')(x)
        x = Attention(self.groups, name='attentions_0')(x)
        return ResnetBlock(c, self.groups, name='resnets_1')(x)


class Encoder(nn.Module):
    block_out_channels: Sequence[int]
    layers_per_block: int
    groups: int
    latent_channels: int

    @nn.compact
    def __call__(self, x):
        x = nn.Conv(self.block_out_channels[0], (3, 3), padding='SAME', name='conv_in')(x)
        for i, ch in enumerate(self.block_out_channels):
            for j in range(self.layers_per_block):
                x = ResnetBlock(ch, self.groups, name=f'down_blocks_{i}_resnets_{j}')(x)
            if i < len(self.block_out_channels) - 1:
                # diffusers pads (0, 1) on both spatial axes, then a stride-2 valid conv.
                x = jnp.pad(x, ((0, 0), (0, 1), (0, 1), (0, 0)))
                x = Conv(ch, 3, 2, 'VALID', name=f'down_blocks_{i}_downsamplers_0')(x)
        x = MidBlock(self.groups, name='mid_block')(x)
        x = nn.silu(_group_norm(self.groups, 'conv_norm_out')(x))
        return nn.Conv(2 * self.latent_channels, (3, 3), padding='SAME', name='conv_out')(x)


class Decoder(nn.Module):
    block_out_channels: Sequence[int]
    layers_per_block: int
    groups: int
    out_channels: int

    @nn.compact
    def __call__(self, z):
        chans = list(reversed(self.block_out_channels))
        x = nn.Conv(chans[0], (3, 3), padding='SAME', name='conv_in')(z)
        x = MidBlock(self.groups, name='mid_block')(x)
        for i, ch in enumerate(chans):
            for j in range(self.layers_per_block + 1):
                x = ResnetBlock(ch, self.groups, name=f'up_blocks_{i}_resnets_{j}')(x)
            if i < len(chans) - 1:
                x = jnp.repeat(jnp.repeat(x, 2, axis=1), 2, axis=2)
                x = Conv(ch, 3, name=f'up_blocks_{i}_upsamplers_0')(x)
        x = nn.silu(_group_norm(self.groups, 'conv_norm_out')(x))
        return nn.Conv(self.out_channels, (3, 3), padding='SAME', name='conv_out')(x)


class AutoencoderKL(nn.Module):
    """diffusers' AutoencoderKL (down/up blocks of resnets, one attention in each mid block)."""
    in_channels: int = 3
    out_channels: int = 3
    latent_channels: int = 4
    block_out_channels: Sequence[int] = (128, 256, 512, 512)
    layers_per_block: int = 2
    norm_num_groups: int = 32

    def setup(self):
        self.encoder = Encoder(tuple(self.block_out_channels), self.layers_per_block,
                               self.norm_num_groups, self.latent_channels)
        self.decoder = Decoder(tuple(self.block_out_channels), self.layers_per_block,
                               self.norm_num_groups, self.out_channels)
        self.quant_conv = nn.Conv(2 * self.latent_channels, (1, 1))
        self.post_quant_conv = nn.Conv(self.latent_channels, (1, 1))

    def encode(self, x):
        """Images in [-1, 1], NHWC -> (posterior mean, log-variance clipped to [-30, 20])."""
        moments = self.quant_conv(self.encoder(x))
        mean, logvar = jnp.split(moments, 2, axis=-1)
        return mean, jnp.clip(logvar, -30.0, 20.0)

    def decode(self, z):
        """Unscaled latents, NHWC -> images (about [-1, 1])."""
        return self.decoder(self.post_quant_conv(z))

    def __call__(self, x):
        mean, _ = self.encode(x)
        return self.decode(mean)


def posterior_sample(keys, mean, logvar):
    """mean + std * noise, with one key per example (independent of the batch it sits in)."""
    noise = jax.vmap(lambda k: jax.random.normal(k, mean.shape[1:], mean.dtype))(keys)
    return mean + jnp.exp(0.5 * logvar) * noise


@dataclasses.dataclass
class Codec:
    """What encoding and decoding need: jittable functions, scale, shapes, provenance.

    encode(keys, images in [-1, 1] NHWC) -> latents times `scale_factor` (the
    posterior sample, spec §2.2); decode(unscaled latents) -> images in [-1, 1].
    decode_with(params, unscaled latents) is `decode` with the weights an argument: the programs
    on the mesh (evaluation/sharded.py) take it with `params` replicated, so the SD-VAE's 83M
    weights are a program input, not 335 MB of constants folded into every compiled program.
    """
    name: str
    scale_factor: float
    downsample: int
    latent_channels: int
    encode: Callable
    decode: Callable
    weights_sha256: str = ''
    params: Any = dataclasses.field(default_factory=dict)
    decode_with: Callable = None

    def __post_init__(self):
        if self.decode_with is None:  # no weights: decode is the whole of it
            decode = self.decode
            self.decode_with = lambda params, z: decode(z)

    def latent_shape(self, resolution: int) -> tuple[int, int, int]:
        r = resolution // self.downsample
        return (r, r, self.latent_channels)


def identity_codec(channels: int) -> Codec:
    return Codec('identity', 1.0, 1, channels, encode=lambda keys, x: x, decode=lambda z: z)


def file_sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, 'rb') as f:
        for chunk in iter(lambda: f.read(1 << 20), b''):
            h.update(chunk)
    return h.hexdigest()


# diffusers AutoencoderKL config.json fields this port builds, and the values it can take for the rest.
_VAE_FIELDS = ('in_channels', 'out_channels', 'latent_channels', 'block_out_channels', 'layers_per_block',
               'norm_num_groups')
_VAE_FIXED = {'act_fn': 'silu', 'use_quant_conv': True, 'use_post_quant_conv': True,
              'mid_block_add_attention': True, 'shift_factor': None, 'latents_mean': None, 'latents_std': None}


def vae_fields_from_config(config: dict, origin: str) -> dict:
    """AutoencoderKL fields from a diffusers config.json (as diffusers builds the model from it).

    A config our port cannot build (another activation, no quant convs, a
    shifted latent space...) is an error naming the fields, never a silent mismatch.
    """
    wrong = [f'{k}={config[k]!r} (supported: {v!r})' for k, v in _VAE_FIXED.items()
             if k in config and config[k] != v]
    for key, block in (('down_block_types', 'DownEncoderBlock2D'), ('up_block_types', 'UpDecoderBlock2D')):
        if any(t != block for t in config.get(key, ())):
            wrong.append(f'{key}={config[key]!r} (supported: only {block})')
    if wrong:
        raise ValueError(f'{origin}: config.json describes an autoencoder this port does not build: '
                         + '; '.join(wrong))
    fields = {k: config[k] for k in _VAE_FIELDS if k in config}
    if 'block_out_channels' in fields:
        fields['block_out_channels'] = tuple(fields['block_out_channels'])
    return fields


def kl_codec(weights_path: str, scale_factor: float = SD_SCALE_FACTOR, **vae_fields) -> Codec:
    """A KL autoencoder from a local diffusers-format weights file; `vae_fields` set its architecture."""
    model = AutoencoderKL(**vae_fields)
    params = vae_params_from_torch(load_state_dict(weights_path), model)

    @jax.jit
    def encode_with(weights, keys, x):
        mean, logvar = model.apply({'params': weights}, x, method=model.encode)
        return posterior_sample(keys, mean, logvar) * scale_factor

    def decode_with(weights, z):
        return model.apply({'params': weights}, z, method=model.decode)

    # Both jitted with the weights an argument, not constants folded into the compiled programs.
    encode = functools.partial(encode_with, params)
    decode = functools.partial(jax.jit(decode_with), params)
    down = 2 ** (len(model.block_out_channels) - 1)
    return Codec('sd-vae', scale_factor, down, model.latent_channels, encode, decode,
                 file_sha256(weights_path), params=params, decode_with=decode_with)


def make_codec(cfg, image_channels: int) -> Codec:
    """From the config's `autoencoder` group: kind 'identity' or 'kl'.

    autoencoder.weights: a local file, a local diffusers folder, or a hub id
    (`stabilityai/sd-vae-ft-ema[@revision]`, see `lct_jax.weights`); the
    architecture is the config.json's that comes with the weights (the SD VAE's
    when there is none).
    """
    if cfg.kind == 'identity':
        return identity_codec(image_channels)
    if cfg.kind == 'kl':
        resolved = resolve_diffusers(cfg.weights, 'autoencoder.weights')
        fields = vae_fields_from_config(resolved.config, resolved.origin) if resolved.config else {}
        declared = (resolved.config or {}).get('scaling_factor')
        if declared is not None and abs(declared - cfg.scale_factor) > 1e-9:
            # The config's value wins (the paper fixes 0.18215); say so, since another VAE may need its own.
            print(f'note: autoencoder.scale_factor={cfg.scale_factor} but {resolved.origin} declares '
                  f'scaling_factor={declared}; using {cfg.scale_factor}', file=sys.stderr, flush=True)
        return kl_codec(resolved.weights_file, cfg.scale_factor, **fields)
    raise ValueError(f"autoencoder.kind {cfg.kind!r}; valid: ('identity', 'kl')")


def to_uint8(images) -> np.ndarray:
    """[-1, 1] images -> uint8, as the authors: clamp((x + 1) / 2, 0, 1) * 255, rounded."""
    return np.asarray(np.clip((np.asarray(images) + 1.0) / 2.0, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
