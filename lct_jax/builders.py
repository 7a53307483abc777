"""Config -> objects: the model, the objective, the latent directory and its checks."""
from __future__ import annotations

import os

import jax.numpy as jnp

from lct_jax.models.unet import UNet
from lct_jax.objective import Objective

_DTYPES = {'float32': jnp.float32, 'bfloat16': jnp.bfloat16}


def build_model(config) -> UNet:
    m = config.model
    if m.dtype not in _DTYPES:
        raise ValueError(f'model.dtype {m.dtype!r}; valid: {tuple(_DTYPES)}')
    down = 2 ** (len(m.channel_mult) - 1)
    if m.img_resolution % down:
        raise ValueError(f'model.img_resolution={m.img_resolution} must be divisible by '
                         f'2^(len(channel_mult)-1) = {down}')
    return UNet(img_resolution=m.img_resolution, in_channels=m.in_channels, out_channels=m.out_channels,
                model_channels=m.model_channels, channel_mult=tuple(m.channel_mult),
                num_blocks=m.num_blocks, attn_resolutions=tuple(m.attn_resolutions),
                dropout=m.dropout, block_norm=m.block_norm, out_norm=m.out_norm,
                dtype=_DTYPES[m.dtype], remat=m.remat)


def build_objective(config) -> Objective:
    c = config.consistency
    return Objective(total_steps=config.total_steps, start_scales=c.start_scales, end_scales=c.end_scales,
                     sigma_min=c.sigma_min, sigma_max=c.sigma_max, rho=c.rho, sigma_data=c.sigma_data,
                     p_mean=c.p_mean, p_std=c.p_std, loss_norm=c.loss_norm, c_schedule=c.c_schedule,
                     c0=c.c0, weight_schedule=c.weight_schedule, diffusion_weight=c.diffusion_weight,
                     diffusion_threshold=c.diffusion_threshold)


def latent_dir_of(config, workdir: str) -> str:
    return config.data.latent_dir or os.path.join(workdir, 'latents')


def check_dataset(config, manifest: dict, latent_dir: str) -> None:
    """Stop before compiling if the encoded data do not fit the config."""
    m = config.model
    want = [m.img_resolution, m.img_resolution, m.in_channels]
    problems = []
    if list(manifest['shape']) != want:
        problems.append(f'latent shape {manifest["shape"]} in {latent_dir}/manifest.json, but the '
                        f'config says (model.img_resolution, model.img_resolution, model.in_channels) = {want}')
    if manifest.get('dtype') != 'float32':
        problems.append(f'dtype {manifest.get("dtype")!r} in the manifest, expected float32')
    if config.data.expected_count and manifest['count'] != config.data.expected_count:
        problems.append(f'{manifest["count"]} examples in the manifest, but data.expected_count='
                        f'{config.data.expected_count}')
    if manifest['count'] < config.batch_size:
        problems.append(f'{manifest["count"]} examples, fewer than batch_size={config.batch_size}')
    if problems:
        raise ValueError('the encoded dataset does not fit the config:\n  ' + '\n  '.join(problems))
