"""The Diffusion Transformer (DiT, Peebles & Xie 2023) as the sLCT authors use it, in Flax Linen, NHWC.

The authors' `models/network_dit.py` (quandao10/LCT) is facebookresearch/DiT's
model: patch embedding, a fixed 2-D sin-cos position embedding, a timestep
embedder (fed our noise conditioning 250 ln sigma, as the UNet is), a label
embedder whose last row is the null class, adaLN-Zero blocks, a final layer
and unpatchify. Post-paper: the paper's numbers use the UNet (spec §12.3, §16.4).

`two_times=True` (MeanFlow, lct_jax/meanflow.py) adds a second timestep embedder for the
interval h = t - r, summed into the conditioning c = t_emb + h_emb + y_emb, as the MeanFlow
authors' DiT (Gsunshine/meanflow `models_dit.py`, module `h_embedder`); the flow time t and h,
both in [0, 1], are fed to the embedders as they are. Off, the parameter tree is the old one.

Module names follow the PyTorch state_dict with a trailing `.<index>` written
`_<index>` (`blocks.3.adaLN_modulation.1` -> `blocks_3/adaLN_modulation_1`), so
`convert.dit_params_from_torch` is a renaming plus layout transposes.
"""
from __future__ import annotations

import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

# name -> (depth, hidden_size, num_heads), facebookresearch/DiT's table; the patch size is the suffix.
SIZES = {'S': (12, 384, 6), 'B': (12, 768, 12), 'L': (24, 1024, 16), 'XL': (28, 1152, 16)}
PATCH_SIZES = (2, 4, 8)

# PyTorch nn.Linear under DiT's `_basic_init`: xavier-uniform weights, zero biases.
xavier_uniform = nn.initializers.xavier_uniform()


def preset(name: str) -> dict:
    """'B/2' -> dict(depth=12, hidden_size=768, num_heads=12, patch_size=2)."""
    size, _, patch = name.partition('/')
    if size not in SIZES or not patch.isdigit() or int(patch) not in PATCH_SIZES:
        raise ValueError(f'DiT preset {name!r}; valid: sizes {tuple(SIZES)} with patch {PATCH_SIZES}, e.g. "B/2"')
    depth, hidden, heads = SIZES[size]
    return dict(depth=depth, hidden_size=hidden, num_heads=heads, patch_size=int(patch))


def sincos_1d(dim: int, positions: np.ndarray) -> np.ndarray:
    """(M, dim): [sin(p w_k), cos(p w_k)], w_k = 10000^(-k / (dim/2)) (MAE's 1-D table)."""
    omega = 1.0 / 10000 ** (np.arange(dim // 2, dtype=np.float64) / (dim / 2))
    angles = np.outer(positions.reshape(-1).astype(np.float64), omega)
    return np.concatenate([np.sin(angles), np.cos(angles)], axis=1)


def sincos_2d(dim: int, grid_size: int) -> np.ndarray:
    """(grid_size**2, dim), tokens in row-major (row, column) order.

    As MAE / DiT: the first half of the channels encodes the column, the second
    half the row (their meshgrid puts the width coordinate first).
    """
    if dim % 4:
        raise ValueError(f'hidden_size={dim} must be divisible by 4 for the 2-D sin-cos embedding')
    rows, cols = np.meshgrid(np.arange(grid_size), np.arange(grid_size), indexing='ij')
    return np.concatenate([sincos_1d(dim // 2, cols), sincos_1d(dim // 2, rows)], axis=1).astype(np.float32)


def timestep_frequencies(t, dim: int = 256, max_period: float = 10000.0):
    """GLIDE's embedding: [cos(t f_k), sin(t f_k)], f_k = max_period^(-k / (dim/2)); float32."""
    half = dim // 2
    freqs = jnp.exp(-math.log(max_period) * jnp.arange(half, dtype=jnp.float32) / half)
    args = t.astype(jnp.float32)[:, None] * freqs[None, :]
    emb = jnp.concatenate([jnp.cos(args), jnp.sin(args)], axis=-1)
    return jnp.pad(emb, ((0, 0), (0, dim % 2)))


def modulate(x, shift, scale):
    return x * (1 + scale[:, None, :]) + shift[:, None, :]


def layer_norm(x):
    """LayerNorm without affine parameters (eps 1e-6), statistics in float32."""
    return nn.LayerNorm(epsilon=1e-6, use_bias=False, use_scale=False, dtype=jnp.float32)(x.astype(jnp.float32))


def dense(features, name, dtype, zero=False):
    init = nn.initializers.zeros if zero else xavier_uniform
    return nn.Dense(features, kernel_init=init, bias_init=nn.initializers.zeros, dtype=dtype, name=name)


class PatchEmbed(nn.Module):
    """p x p patches, stride p, to hidden_size channels; (N, H/p * W/p, hidden) in row-major order."""
    hidden_size: int
    patch_size: int
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x):
        p = self.patch_size
        # DiT initialises the conv like a Linear over the flattened patch (xavier on (D, C p p)).
        init = nn.initializers.variance_scaling(1.0, 'fan_avg', 'uniform', in_axis=(0, 1, 2), out_axis=3)
        x = nn.Conv(self.hidden_size, (p, p), strides=(p, p), padding='VALID', kernel_init=init,
                    dtype=self.dtype, name='proj')(x)
        return x.reshape(x.shape[0], -1, self.hidden_size)


class TimestepEmbedder(nn.Module):
    hidden_size: int
    frequency_size: int = 256

    @nn.compact
    def __call__(self, t):
        # Kept float32 whatever the compute dtype: a few KFLOPs per sample, and 250 ln sigma spans
        # about +-1,100, where bf16 angles would be off by whole periods.
        init = nn.initializers.normal(0.02)
        h = nn.Dense(self.hidden_size, kernel_init=init, name='mlp_0')(timestep_frequencies(t, self.frequency_size))
        return nn.Dense(self.hidden_size, kernel_init=init, name='mlp_2')(nn.silu(h))


class LabelEmbedder(nn.Module):
    """A table of num_classes rows, plus the null class as the last row when labels can be dropped.

    labels None means the null class for every sample (the authors' forward: the last row).
    In training, labels are replaced by the null class with probability dropout_prob
    (classifier-free guidance), with the 'dropout' RNG stream, which the objective gives the
    student and the target alike.
    """
    num_classes: int
    hidden_size: int
    dropout_prob: float

    @property
    def num_rows(self) -> int:
        return self.num_classes + int(self.dropout_prob > 0)

    @nn.compact
    def __call__(self, labels, batch: int, train: bool):
        table = nn.Embed(self.num_rows, self.hidden_size, embedding_init=nn.initializers.normal(0.02),
                         name='embedding_table')
        if labels is None:
            return table(jnp.full((batch,), self.num_rows - 1, jnp.int32))
        labels = jnp.asarray(labels, jnp.int32)
        if train and self.dropout_prob > 0:
            drop = jax.random.uniform(self.make_rng('dropout'), labels.shape) < self.dropout_prob
            labels = jnp.where(drop, self.num_classes, labels)
        return table(labels)


class Attention(nn.Module):
    """Multi-head self-attention with one qkv projection (timm's, qkv_bias=True); softmax in float32."""
    num_heads: int
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x):
        n, t, d = x.shape
        head = d // self.num_heads
        # timm orders the qkv features as ({q,k,v}, head, channel).
        qkv = dense(3 * d, 'qkv', self.dtype)(x).reshape(n, t, 3, self.num_heads, head)
        q, k, v = (qkv[:, :, i].astype(jnp.float32) for i in range(3))
        weights = jax.nn.softmax(jnp.einsum('nqhc,nkhc->nhqk', q * head ** -0.5, k), axis=-1)
        out = jnp.einsum('nhqk,nkhc->nqhc', weights, v).reshape(n, t, d)
        return dense(d, 'proj', self.dtype)(out.astype(self.dtype))


class Mlp(nn.Module):
    hidden: int
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x):
        d = x.shape[-1]
        h = nn.gelu(dense(self.hidden, 'fc1', self.dtype)(x), approximate=True)  # DiT: GELU(approximate='tanh')
        return dense(d, 'fc2', self.dtype)(h)


class DiTBlock(nn.Module):
    """adaLN-Zero: shift, scale and gate of both sub-layers regressed from the conditioning, zero-initialised."""
    num_heads: int
    mlp_ratio: float
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, c):
        d = x.shape[-1]
        mod = dense(6 * d, 'adaLN_modulation_1', self.dtype, zero=True)(nn.silu(c)).astype(jnp.float32)
        shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = jnp.split(mod, 6, axis=-1)
        h = Attention(self.num_heads, self.dtype, name='attn')(modulate(layer_norm(x), shift_msa, scale_msa))
        x = x + gate_msa[:, None, :] * h.astype(jnp.float32)
        h = Mlp(int(d * self.mlp_ratio), self.dtype, name='mlp')(modulate(layer_norm(x), shift_mlp, scale_mlp))
        return x + gate_mlp[:, None, :] * h.astype(jnp.float32)


class FinalLayer(nn.Module):
    patch_size: int
    out_channels: int
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, c):
        d = x.shape[-1]
        mod = dense(2 * d, 'adaLN_modulation_1', self.dtype, zero=True)(nn.silu(c)).astype(jnp.float32)
        shift, scale = jnp.split(mod, 2, axis=-1)
        x = modulate(layer_norm(x), shift, scale)
        return dense(self.patch_size ** 2 * self.out_channels, 'linear', self.dtype, zero=True)(x)


def unpatchify(x, patch_size: int, channels: int):
    """(N, h*w, p*p*C) tokens -> (N, h*p, w*p, C) NHWC; each token's features are (p, p, C) row-major."""
    n, t, _ = x.shape
    g = int(round(math.sqrt(t)))
    x = x.reshape(n, g, g, patch_size, patch_size, channels)
    return jnp.einsum('nhwpqc->nhpwqc', x).reshape(n, g * patch_size, g * patch_size, channels)


class DiT(nn.Module):
    """DiT on NHWC latents: apply(params, x, noise_labels, labels=None, train=False).

    Defaults: DiT-XL/2 on 32x32x4 latents, unconditional, no learned sigma
    (consistency training predicts the sample only).
    """
    input_size: int = 32
    patch_size: int = 2
    in_channels: int = 4
    hidden_size: int = 1152
    depth: int = 28
    num_heads: int = 16
    mlp_ratio: float = 4.0
    num_classes: int = 0             # 0 = unconditional (the table holds the null class only)
    class_dropout_prob: float = 0.1  # label dropout to the null class in training (CFG)
    learn_sigma: bool = False
    dtype: Any = jnp.float32         # compute dtype of the dense layers and the patch conv (bf16 on
                                     # accelerators); norms, softmax, the timestep embedding, the
                                     # residual stream and the output stay float32
    remat: bool = False              # rematerialise each block in the backward pass
    two_times: bool = False          # MeanFlow: a second timestep embedder for h = t - r
    logvar_head: bool = False        # sCT: a logvar(t) head (return_logvar=True)
    v_head: bool = False             # improved MeanFlow: a second final layer for v; returns (u, v)
    guidance_inputs: bool = False    # improved MeanFlow, class-conditional: the CFG scale omega (as
                                     # 1 - 1/omega) and the interval [t_min, t_max] are embedded into the
                                     # conditioning, as the iMF authors' in-context tokens carry them

    @property
    def out_channels(self) -> int:
        return 2 * self.in_channels if self.learn_sigma else self.in_channels

    def check(self):
        """Raise a ValueError naming the field if the configuration cannot be built."""
        problems = []
        if self.input_size % self.patch_size:
            problems.append(f'input_size={self.input_size} must be divisible by patch_size={self.patch_size}')
        if self.hidden_size % self.num_heads:
            problems.append(f'hidden_size={self.hidden_size} must be divisible by num_heads={self.num_heads}')
        if self.hidden_size % 4:
            problems.append(f'hidden_size={self.hidden_size} must be divisible by 4 (2-D sin-cos embedding)')
        if self.num_classes == 0 and self.class_dropout_prob <= 0:
            problems.append('an unconditional DiT (num_classes=0) needs class_dropout_prob > 0: '
                            'the null class is the label table\'s only row')
        if problems:
            raise ValueError('DiT: ' + '; '.join(problems))

    @nn.compact
    def __call__(self, x, noise_labels, labels=None, train: bool = False, h=None, drop_labels: bool = True,
                 omega=None, t_min=None, t_max=None, return_logvar: bool = False):
        """h: the interval t - r of a two-time model (None there: 0, e.g. at init); drop_labels=False
        keeps the labels as given in training (MeanFlow drops them itself, in its objective);
        omega, t_min, t_max: the guidance inputs of a model with guidance_inputs (None: no guidance,
        1, 0, 1); return_logvar: also the logvar head's (B,) output."""
        self.check()
        if return_logvar and not self.logvar_head:
            raise ValueError('DiT: return_logvar=True needs logvar_head=True')
        if (omega is not None or t_min is not None or t_max is not None) and not self.guidance_inputs:
            raise ValueError('DiT: guidance inputs given to a model without guidance_inputs')
        if h is not None and not self.two_times:
            raise ValueError('DiT: h (a second time) given to a single-time model (two_times=False)')
        r, ch = self.input_size, self.in_channels
        if x.ndim != 4 or x.shape[1:] != (r, r, ch):
            raise ValueError(f'DiT expects NHWC input of shape (batch, {r}, {r}, {ch}); got {x.shape}')
        pos = jnp.asarray(sincos_2d(self.hidden_size, r // self.patch_size))
        tokens = PatchEmbed(self.hidden_size, self.patch_size, self.dtype, name='x_embedder')(x)
        tokens = tokens.astype(jnp.float32) + pos[None]
        c = TimestepEmbedder(self.hidden_size, name='t_embedder')(noise_labels)
        if self.two_times:
            c = c + TimestepEmbedder(self.hidden_size, name='h_embedder')(
                jnp.zeros_like(noise_labels) if h is None else h)
        c = c + LabelEmbedder(self.num_classes, self.hidden_size, self.class_dropout_prob,
                              name='y_embedder')(labels, x.shape[0], train and drop_labels)
        if self.guidance_inputs:
            ones = jnp.ones_like(noise_labels, jnp.float32)
            omega = ones if omega is None else jnp.asarray(omega, jnp.float32)
            c = c + TimestepEmbedder(self.hidden_size, name='omega_embedder')(1.0 - 1.0 / omega)
            c = c + TimestepEmbedder(self.hidden_size, name='t_min_embedder')(0 * ones if t_min is None else t_min)
            c = c + TimestepEmbedder(self.hidden_size, name='t_max_embedder')(ones if t_max is None else t_max)
        block_cls = nn.remat(DiTBlock) if self.remat else DiTBlock
        for i in range(self.depth):
            tokens = block_cls(self.num_heads, self.mlp_ratio, self.dtype, name=f'blocks_{i}')(tokens, c)
        out = FinalLayer(self.patch_size, self.out_channels, self.dtype, name='final_layer')(tokens, c)
        out = unpatchify(out.astype(jnp.float32), self.patch_size, self.out_channels)
        if self.v_head:
            v = FinalLayer(self.patch_size, self.out_channels, self.dtype, name='v_final_layer')(tokens, c)
            out = (out, unpatchify(v.astype(jnp.float32), self.patch_size, self.out_channels))
        if self.logvar_head:
            logvar = nn.Dense(1, kernel_init=nn.initializers.zeros, name='logvar_linear')(
                TimestepEmbedder(self.hidden_size, name='logvar_embedder')(noise_labels))[:, 0]
            if return_logvar:
                return out, logvar
        return out
