"""Config -> objects: the model, the objective, the latent directory and its checks."""
from __future__ import annotations

import os

import jax.numpy as jnp

from lct_jax.diffusion_objective import DiffusionObjective
from lct_jax.meanflow import MeanFlowObjective
from lct_jax.models.dit import DiT
from lct_jax.models.unet import UNet
from lct_jax.objective import Objective

_DTYPES = {'float32': jnp.float32, 'bfloat16': jnp.bfloat16}


MODEL_KINDS = ('unet', 'dit')


def build_model(config) -> UNet | DiT:
    """config.model.kind: 'unet' (the paper's ADM UNet) or 'dit' (post-paper, fields in model.dit).

    Both take (x NHWC, noise_labels) and return x's shape; the DiT also takes `labels=`.
    """
    m = config.model
    if m.dtype not in _DTYPES:
        raise ValueError(f'model.dtype {m.dtype!r}; valid: {tuple(_DTYPES)}')
    kind = m.get('kind', 'unet')
    if kind == 'dit':
        return _build_dit(m)
    if kind != 'unet':
        raise ValueError(f'model.kind {kind!r}; valid: {MODEL_KINDS}')
    down = 2 ** (len(m.channel_mult) - 1)
    if m.img_resolution % down:
        raise ValueError(f'model.img_resolution={m.img_resolution} must be divisible by '
                         f'2^(len(channel_mult)-1) = {down}')
    return UNet(img_resolution=m.img_resolution, in_channels=m.in_channels, out_channels=m.out_channels,
                model_channels=m.model_channels, channel_mult=tuple(m.channel_mult),
                num_blocks=m.num_blocks, attn_resolutions=tuple(m.attn_resolutions),
                dropout=m.dropout, block_norm=m.block_norm, out_norm=m.out_norm,
                dtype=_DTYPES[m.dtype], remat=m.remat, two_times=bool(m.get('two_times', False)))


def _build_dit(m) -> DiT:
    d = m.dit
    if d.learn_sigma:
        raise ValueError('model.dit.learn_sigma=True: consistency training predicts the sample only '
                         '(the output must have model.in_channels channels)')
    if m.out_channels != m.in_channels:
        raise ValueError(f'model.out_channels={m.out_channels} must equal model.in_channels={m.in_channels} '
                         'for the DiT')
    model = DiT(input_size=m.img_resolution, patch_size=d.patch_size, in_channels=m.in_channels,
                hidden_size=d.hidden_size, depth=d.depth, num_heads=d.num_heads, mlp_ratio=d.mlp_ratio,
                num_classes=d.num_classes, class_dropout_prob=d.class_dropout_prob, learn_sigma=False,
                dtype=_DTYPES[m.dtype], remat=m.remat, two_times=bool(m.get('two_times', False)))
    try:
        model.check()
    except ValueError as e:  # name the config's fields: input_size is model.img_resolution here
        raise ValueError(f'model.dit (with model.img_resolution={m.img_resolution}): {e}') from None
    return model


OBJECTIVES = ('slct', 'ldm', 'meanflow')


def build_objective(config) -> Objective | DiffusionObjective | MeanFlowObjective:
    """config.objective: 'slct' (the paper's consistency training), 'ldm' (the LDM-8† baseline) or
    'meanflow' (MeanFlow, lct_jax/meanflow.py: needs a two-time model, model.two_times=True)."""
    c = config.consistency
    if config.objective == 'meanflow':
        return _build_meanflow(config)
    if config.objective == 'ldm':
        # The diffusion parameterisation (sigma range, rho, sigma_data) is the one the two share (§3).
        return DiffusionObjective(num_levels=config.ldm.num_levels, c=config.ldm.c, sigma_min=c.sigma_min,
                                  sigma_max=c.sigma_max, rho=c.rho, sigma_data=c.sigma_data)
    if config.objective != 'slct':
        raise ValueError(f'objective {config.objective!r}; valid: {OBJECTIVES}')
    return Objective(total_steps=config.total_steps, start_scales=c.start_scales, end_scales=c.end_scales,
                     sigma_min=c.sigma_min, sigma_max=c.sigma_max, rho=c.rho, sigma_data=c.sigma_data,
                     p_mean=c.p_mean, p_std=c.p_std, loss_norm=c.loss_norm, c_schedule=c.c_schedule,
                     c0=c.c0, weight_schedule=c.weight_schedule, diffusion_weight=c.diffusion_weight,
                     diffusion_threshold=c.diffusion_threshold)


def _build_meanflow(config) -> MeanFlowObjective:
    if not config.model.get('two_times', False):
        raise ValueError("objective='meanflow' needs a two-time network (u(z, t, h)): set model.two_times=True "
                         '(the :meanflow variants do)')
    mf = config.meanflow
    classes = num_classes_of(config)
    return MeanFlowObjective(p_mean=mf.p_mean, p_std=mf.p_std, data_proportion=mf.data_proportion,
                             norm_p=mf.norm_p, norm_eps=mf.norm_eps, omega=mf.omega, kappa=mf.kappa,
                             t_start=mf.t_start, t_end=mf.t_end, num_classes=classes,
                             # the DiT's label dropout rate, applied by the objective (the null class)
                             class_dropout_prob=float(config.model.dit.class_dropout_prob) if classes else 0.0,
                             two_step_times=tuple(mf.two_step_times))


def num_classes_of(config) -> int:
    """Classes a config's model is conditioned on: model.dit.num_classes for a DiT, else 0."""
    m = config.model
    return int(m.dit.num_classes) if m.get('kind', 'unet') == 'dit' else 0


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
    classes = num_classes_of(config)
    if classes and not manifest.get('num_classes'):
        problems.append(f'model.dit.num_classes={classes} (class-conditional), but {latent_dir} holds no class '
                        'labels: encode a source with labels (class subfolders of data.image_dir, a tfds '
                        'dataset with a label, the digits) into a fresh data.latent_dir')
    elif classes and manifest['num_classes'] > classes:
        problems.append(f'{manifest["num_classes"]} classes in the manifest, more than model.dit.num_classes='
                        f'{classes}')
    if problems:
        raise ValueError('the encoded dataset does not fit the config:\n  ' + '\n  '.join(problems))
