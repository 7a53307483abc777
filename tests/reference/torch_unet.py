"""A PyTorch DhariwalUNet with the authors' norm switches, for tests only.

Written for lct_jax's tests from the architecture description in
shared/spec/method.md §12 (EDM's `training/networks.py` as used by the sLCT
authors): NCHW, the same module and buffer names as their state_dicts
(`enc.16x16_down.conv0.resample_filter`, frozen NsLN `weight`s, ...), random
weights. It is the independent reference the Flax port is tested against.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


class Conv2d(nn.Module):
    def __init__(self, cin, cout, kernel, up=False, down=False):
        super().__init__()
        self.cin, self.up, self.down = cin, up, down
        self.weight = nn.Parameter(torch.randn(cout, cin, kernel, kernel) / np.sqrt(cin * kernel * kernel)) if kernel else None
        self.bias = nn.Parameter(torch.randn(cout) * 0.1) if kernel else None
        f = torch.tensor([1.0, 1.0])
        self.register_buffer('resample_filter', (torch.outer(f, f) / 4)[None, None] if up or down else None)

    def forward(self, x):
        if self.up:
            x = F.conv_transpose2d(x, (self.resample_filter * 4).tile([self.cin, 1, 1, 1]), groups=self.cin, stride=2)
        if self.down:
            x = F.conv2d(x, self.resample_filter.tile([self.cin, 1, 1, 1]), groups=self.cin, stride=2)
        if self.weight is not None:
            x = F.conv2d(x, self.weight, padding=self.weight.shape[-1] // 2) + self.bias[None, :, None, None]
        return x


class Linear(nn.Module):
    def __init__(self, cin, cout):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(cout, cin) / np.sqrt(cin))
        self.bias = nn.Parameter(torch.randn(cout) * 0.1)

    def forward(self, x):
        return x @ self.weight.t() + self.bias


class RMSNorm(nn.Module):
    def __init__(self, shape, eps=1e-5):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(1 + 0.1 * torch.randn(*shape))

    def forward(self, x):
        return x * torch.rsqrt(x.square().mean(dim=(1, 2, 3), keepdim=True) + self.eps) * self.weight


def make_norm(kind, c, res):
    """The norm named `kind` with random affine params (frozen scales stay ones)."""
    if kind in ('group-norm', 'non-scaling-group-norm'):
        m = nn.GroupNorm(min(32, c // 4), c, eps=1e-5)
    elif kind in ('layer-norm', 'non-scaling-layer-norm'):
        m = nn.LayerNorm([c, res, res], eps=1e-5)
    elif kind in ('instance-norm', 'non-scaling-instance-norm'):
        m = nn.InstanceNorm2d(c, affine=True, eps=1e-5)
    elif kind == 'rms-norm':
        return RMSNorm([c, res, res])
    else:
        raise ValueError(kind)
    with torch.no_grad():
        m.bias.normal_(0, 0.1)
        if kind.startswith('non-scaling'):
            m.weight.fill_(1.0)
            m.weight.requires_grad = False
        else:
            m.weight.normal_(1, 0.1)
    return m


class UNetBlock(nn.Module):
    def __init__(self, cin, cout, emb, res_in, res_out, norm, up=False, down=False, attention=False):
        super().__init__()
        self.in_channels = cin
        self.num_heads = cout // 64 if attention else 0
        self.norm0 = make_norm(norm, cin, res_in)
        self.conv0 = Conv2d(cin, cout, 3, up=up, down=down)
        self.affine = Linear(emb, 2 * cout)
        self.norm1 = make_norm(norm, cout, res_out)
        self.conv1 = Conv2d(cout, cout, 3)
        self.skip = None
        if cout != cin or up or down:
            self.skip = Conv2d(cin, cout, 1 if cout != cin else 0, up=up, down=down)
        if self.num_heads:
            self.norm2 = make_norm(norm, cout, res_out)
            self.qkv = Conv2d(cout, 3 * cout, 1)
            self.proj = Conv2d(cout, cout, 1)

    def forward(self, x, emb):
        orig = x
        x = self.conv0(F.silu(self.norm0(x)))
        scale, shift = self.affine(emb)[:, :, None, None].chunk(2, dim=1)
        x = F.silu(shift + self.norm1(x) * (scale + 1))
        x = self.conv1(x)
        x = x + (self.skip(orig) if self.skip is not None else orig)
        if self.num_heads:
            n, c = x.shape[:2]
            q, k, v = self.qkv(self.norm2(x)).reshape(n * self.num_heads, c // self.num_heads, 3, -1).unbind(2)
            w = torch.einsum('ncq,nck->nqk', q, k / np.sqrt(k.shape[1])).softmax(dim=2)
            a = torch.einsum('nqk,nck->ncq', w, v)
            x = self.proj(a.reshape(*x.shape)) + x
        return x


class DhariwalUNet(nn.Module):
    def __init__(self, img_resolution, in_channels, out_channels, model_channels=128,
                 channel_mult=(1, 2, 3, 4), num_blocks=4, attn_resolutions=(16, 8),
                 block_norm='non-scaling-layer-norm', out_norm='non-scaling-layer-norm'):
        super().__init__()
        emb = model_channels * 4
        self.model_channels = model_channels
        self.map_layer0 = Linear(model_channels, emb)
        self.map_layer1 = Linear(emb, emb)
        self.enc = nn.ModuleDict()
        cout = in_channels
        for level, mult in enumerate(channel_mult):
            res = img_resolution >> level
            if level == 0:
                cin, cout = cout, model_channels * mult
                self.enc[f'{res}x{res}_conv'] = Conv2d(cin, cout, 3)
            else:
                self.enc[f'{res}x{res}_down'] = UNetBlock(cout, cout, emb, 2 * res, res, block_norm, down=True)
            for idx in range(num_blocks):
                cin, cout = cout, model_channels * mult
                self.enc[f'{res}x{res}_block{idx}'] = UNetBlock(cin, cout, emb, res, res, block_norm,
                                                                attention=res in attn_resolutions)
        skips = [b.conv1.weight.shape[0] if isinstance(b, UNetBlock) else b.weight.shape[0] for b in self.enc.values()]
        self.dec = nn.ModuleDict()
        for level, mult in reversed(list(enumerate(channel_mult))):
            res = img_resolution >> level
            if level == len(channel_mult) - 1:
                self.dec[f'{res}x{res}_in0'] = UNetBlock(cout, cout, emb, res, res, block_norm, attention=True)
                self.dec[f'{res}x{res}_in1'] = UNetBlock(cout, cout, emb, res, res, block_norm)
            else:
                self.dec[f'{res}x{res}_up'] = UNetBlock(cout, cout, emb, res // 2, res, block_norm, up=True)
            for idx in range(num_blocks + 1):
                cin, cout = cout + skips.pop(), model_channels * mult
                self.dec[f'{res}x{res}_block{idx}'] = UNetBlock(cin, cout, emb, res, res, block_norm,
                                                                attention=res in attn_resolutions)
        self.out_norm = make_norm(out_norm, cout, img_resolution)
        self.out_conv = Conv2d(cout, out_channels, 3)

    def forward(self, x, noise_labels):
        half = self.model_channels // 2
        freqs = (1 / 10000) ** (torch.arange(half, dtype=torch.float32) / half)
        e = torch.outer(noise_labels, freqs)
        emb = torch.cat([e.cos(), e.sin()], dim=1)
        emb = F.silu(self.map_layer1(F.silu(self.map_layer0(emb))))
        skips = []
        for block in self.enc.values():
            x = block(x, emb) if isinstance(block, UNetBlock) else block(x)
            skips.append(x)
        for block in self.dec.values():
            if x.shape[1] != block.in_channels:
                x = torch.cat([x, skips.pop()], dim=1)
            x = block(x, emb)
        return self.out_conv(F.silu(self.out_norm(x)))
