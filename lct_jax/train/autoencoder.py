"""`--mode=train_autoencoder`: a small KL autoencoder trained on the config's images, on a CPU.

The SD-VAE recipe without its GAN and LPIPS terms (which need a discriminator
and a pretrained feature net): per example, the reconstruction error summed
over pixels (L1, L2 or both) plus `kl_weight` times the KL divergence of the
diagonal-Gaussian posterior from N(0, I) summed over latent elements, averaged
over the batch (the LDM autoencoder's `nll / batch + kl_weight * kl / batch`;
SD used kl_weight 1e-6). The decoder sees a posterior sample.

Writes to the work directory:
  ae_checkpoints/          Orbax; a re-run resumes from the latest, a finished run is not retrained
  vae/                     the trained weights as a diffusers folder (config.json +
                           diffusion_pytorch_model.safetensors): `--config.autoencoder.weights=<workdir>/vae`
                           then encodes and decodes with it through the ordinary `kind='kl'` path
  ae_reconstructions.png   originals (odd rows) over reconstructions from the posterior mean (even rows)
  ae_metrics.json          loss parts, reconstruction MSE and PSNR over every image, latent statistics
"""
from __future__ import annotations

import json
import os
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

from lct_jax import writer
from lct_jax.data.sources import make_source
from lct_jax.images import save_grid
from lct_jax.models.autoencoder import AutoencoderKL, posterior_sample, to_uint8
from lct_jax.models.convert import _torch_vae_module  # noqa: PLC2701 - the one place names are mapped

EXPORT_DIR = 'vae'
CHECKPOINT_DIR = 'ae_checkpoints'


def build_autoencoder(cfg, image_channels: int) -> AutoencoderKL:
    return AutoencoderKL(in_channels=image_channels, out_channels=image_channels,
                         latent_channels=cfg.latent_channels, block_out_channels=tuple(cfg.block_out_channels),
                         layers_per_block=cfg.layers_per_block, norm_num_groups=cfg.norm_num_groups)


def kl_to_standard_normal(mean, logvar):
    """Per example: KL(N(mean, exp(logvar)) || N(0, I)) summed over the latent elements."""
    return 0.5 * jnp.sum(mean**2 + jnp.exp(logvar) - 1.0 - logvar, axis=(1, 2, 3))


def reconstruction_error(x, x_hat, kind: str):
    """Per example, summed over pixels: 'l1', 'l2' or 'l1+l2'."""
    d = x_hat - x
    parts = {'l1': jnp.abs(d), 'l2': d**2}
    if kind not in ('l1', 'l2', 'l1+l2'):
        raise ValueError(f"autoencoder_training.reconstruction {kind!r}; valid: ('l1', 'l2', 'l1+l2')")
    return sum(jnp.sum(parts[k], axis=(1, 2, 3)) for k in kind.split('+'))


def autoencoder_loss(params, model, x, key, kind: str, kl_weight: float):
    """(loss, metrics) for a batch of images in [-1, 1], NHWC."""
    mean, logvar = model.apply({'params': params}, x, method=model.encode)
    z = posterior_sample(jax.random.split(key, x.shape[0]), mean, logvar)
    x_hat = model.apply({'params': params}, z, method=model.decode)
    rec, kl = reconstruction_error(x, x_hat, kind), kl_to_standard_normal(mean, logvar)
    loss = jnp.mean(rec) + kl_weight * jnp.mean(kl)
    return loss, {'loss': loss, 'reconstruction': jnp.mean(rec), 'kl': jnp.mean(kl),
                  'mse': jnp.mean((x_hat - x) ** 2)}


def make_train_step(model, optimizer, kind: str, kl_weight: float):
    @jax.jit
    def step(params, opt_state, x, key):
        grads, metrics = jax.grad(autoencoder_loss, has_aux=True)(params, model, x, key, kind, kl_weight)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, metrics
    return step


def psnr(mse_per_image: np.ndarray, peak: float = 255.0) -> float:
    """Mean over images of 10 log10(peak^2 / MSE), on uint8 images (an exact copy counts as 100 dB)."""
    mse = np.maximum(np.asarray(mse_per_image, np.float64), peak**2 * 1e-10)
    return float(np.mean(10.0 * np.log10(peak**2 / mse)))


# --- diffusers export: the trained weights as a folder the ordinary 'kl' codec loads -------------------

def diffusers_config(model: AutoencoderKL, resolution: int, scale_factor: float) -> dict:
    n = len(model.block_out_channels)
    return {'_class_name': 'AutoencoderKL', 'in_channels': model.in_channels, 'out_channels': model.out_channels,
            'latent_channels': model.latent_channels, 'block_out_channels': list(model.block_out_channels),
            'layers_per_block': model.layers_per_block, 'norm_num_groups': model.norm_num_groups,
            'down_block_types': ['DownEncoderBlock2D'] * n, 'up_block_types': ['UpDecoderBlock2D'] * n,
            'act_fn': 'silu', 'sample_size': resolution, 'scaling_factor': scale_factor}


def torch_state_dict(params, model: AutoencoderKL) -> dict[str, np.ndarray]:
    """Our params under diffusers' names and layouts: the inverse of `convert.vae_params_from_torch`."""
    from flax import traverse_util
    out = {}
    for path, value in traverse_util.flatten_dict(params).items():
        *mods, leaf = path
        name = '.'.join(_torch_vae_module(m) for m in mods)
        v = np.asarray(value, np.float32)
        if leaf == 'kernel':
            v = v.transpose(3, 2, 0, 1) if v.ndim == 4 else v.T   # (kh, kw, I, O) -> (O, I, kh, kw); (I, O) -> (O, I)
            out[f'{name}.weight'] = np.ascontiguousarray(v)
        else:
            out[f'{name}.{"weight" if leaf == "scale" else "bias"}'] = v
    return out


def export_diffusers(params, model: AutoencoderKL, folder: str, resolution: int, scale_factor: float) -> str:
    from safetensors.numpy import save
    writer.write_bytes(os.path.join(folder, 'diffusion_pytorch_model.safetensors'), save(torch_state_dict(params, model)))
    writer.write_json(os.path.join(folder, 'config.json'), diffusers_config(model, resolution, scale_factor))
    return folder


# --- the mode --------------------------------------------------------------------------------------------

def _images(config) -> np.ndarray:
    src = make_source(config.data)
    return src.images(range(len(src))).astype(np.float32) / 127.5 - 1.0


def reconstruct(params, model, images: np.ndarray, batch: int = 256) -> np.ndarray:
    """Decoded posterior means, in [-1, 1]."""
    fn = jax.jit(lambda x: model.apply({'params': params}, x))
    return np.concatenate([np.asarray(fn(images[i:i + batch])) for i in range(0, len(images), batch)])


def latent_means(params, model, images: np.ndarray, batch: int = 256) -> np.ndarray:
    fn = jax.jit(lambda x: model.apply({'params': params}, x, method=model.encode)[0])
    return np.concatenate([np.asarray(fn(images[i:i + batch])) for i in range(0, len(images), batch)])


def train_autoencoder(config, workdir: str) -> dict:
    import orbax.checkpoint as ocp
    cfg = config.autoencoder_training
    images = _images(config)
    model = build_autoencoder(cfg, images.shape[-1])
    key = jax.random.key(cfg.seed)
    params = model.init(key, jnp.asarray(images[:1]))['params']
    optimizer = optax.adam(cfg.lr)
    opt_state = optimizer.init(params)
    manager = ocp.CheckpointManager(os.path.abspath(os.path.join(workdir, CHECKPOINT_DIR)),
                                    options=ocp.CheckpointManagerOptions(max_to_keep=2, create=True))
    start = manager.latest_step() or 0
    if start:
        restored = manager.restore(start, args=ocp.args.StandardRestore(
            {'params': params, 'opt_state': opt_state}))
        params, opt_state = restored['params'], restored['opt_state']
        print(f'autoencoder: resuming from step {start}', flush=True)
    step_fn = make_train_step(model, optimizer, cfg.reconstruction, cfg.kl_weight)
    t0, metrics = time.time(), {}
    for step in range(start + 1, cfg.steps + 1):
        # The batch of a step depends only on (seed, step): a resumed run sees the same batches.
        idx = np.random.default_rng([cfg.seed, step]).choice(len(images), cfg.batch_size, replace=False)
        params, opt_state, metrics = step_fn(params, opt_state, jnp.asarray(images[idx]),
                                             jax.random.fold_in(key, step))
        if step % cfg.log_every == 0 or step == cfg.steps:
            m = {k: float(v) for k, v in metrics.items()}
            print(f'autoencoder step {step}/{cfg.steps}: ' + ', '.join(f'{k} {v:.4g}' for k, v in m.items())
                  + f' ({(step - start) / (time.time() - t0):.1f} steps/s)', flush=True)
        if step % cfg.checkpoint_every == 0 or step == cfg.steps:
            manager.save(step, args=ocp.args.StandardSave({'params': params, 'opt_state': opt_state}))
    manager.wait_until_finished()
    manager.close()
    recon = reconstruct(params, model, images)
    real_u8, recon_u8 = to_uint8(images), to_uint8(recon)
    mse_u8 = np.mean((real_u8.astype(np.float64) - recon_u8) ** 2, axis=(1, 2, 3))
    lat = latent_means(params, model, images)
    summary = {'steps': cfg.steps, 'kl_weight': cfg.kl_weight, 'reconstruction': cfg.reconstruction,
               'num_images': len(images), 'latent_shape': list(lat.shape[1:]),
               'mse_[-1,1]': float(np.mean((recon - images) ** 2)), 'mse_uint8': float(mse_u8.mean()),
               'psnr_db': psnr(mse_u8), 'latent_mean_std': float(lat.std()),
               'latent_abs_max': float(np.abs(lat).max()),
               'last_batch': {k: float(v) for k, v in metrics.items()}}
    n = min(32, len(images)) // 8 * 8
    # 8 columns: a row of originals, then their reconstructions underneath
    rows = np.concatenate([np.concatenate([real_u8[i:i + 8], recon_u8[i:i + 8]]) for i in range(0, n, 8)])
    save_grid(os.path.join(workdir, 'ae_reconstructions.png'), rows)
    export_diffusers(params, model, os.path.join(workdir, EXPORT_DIR), images.shape[1], config.autoencoder.scale_factor)
    writer.write_json(os.path.join(workdir, 'ae_metrics.json'), summary)
    print(json.dumps(summary), flush=True)
    print(f'autoencoder: weights {os.path.join(workdir, EXPORT_DIR)} (diffusers folder); '
          f'reconstructions {os.path.join(workdir, "ae_reconstructions.png")}', flush=True)
    return summary
