"""Part 6: sampling throughput at 256x256 on random weights of the real architectures: 1- and
2-step sampling of the paper UNet, SD-VAE decoding, Inception features; images/s of each and the
wall time of one FID-50k evaluation built from them."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from device_check.basics import Budget, Sizes, median_seconds, random_params
from device_check.steps import paper_config
from lct_jax import parallel, sampling
from lct_jax.builders import build_model, build_objective
from lct_jax.models.autoencoder import AutoencoderKL
from lct_jax.models.inception import InceptionV3


def sampling_rate(mesh, sizes: Sizes, budget: Budget, ctx: dict) -> dict:
    config = paper_config(sizes, 1)
    model, obj = build_model(config), build_objective(config)
    m = config.model
    shape = (m.img_resolution, m.img_resolution, m.in_channels)
    params = random_params(model.init, jax.random.key(0), jnp.zeros((1, *shape)), jnp.zeros((1,)))['params']
    params = parallel.replicate(params, mesh)
    n = sizes.sample_batch
    indices = parallel.shard_host_array(np.arange(n, dtype=np.int32), mesh)
    repeats = 1 if sizes.smoke else 3
    out, per_image = {}, {}
    latents = None
    for spec in sampling.configured_samplers(config.sampling, obj):
        sampler = sampling.make_spec_sampler(spec, model.apply, obj, shape, 0, mesh)
        seconds, _ = median_seconds(lambda: sampler(params, indices), repeats)
        out[f'sampler_{spec.label}'] = {'nfe': spec.nfe, 'batch': n, 'seconds': seconds, 'images_per_s': n / seconds}
        per_image[spec.label] = 1.0 / out[f'sampler_{spec.label}']['images_per_s']
        latents = sampler(params, indices)
    # The SD-VAE (diffusers' AutoencoderKL, the real block widths; toy widths in the smoke run).
    vae = AutoencoderKL() if not sizes.smoke else AutoencoderKL(block_out_channels=(8, 8), layers_per_block=1,
                                                                 norm_num_groups=4)
    d = sizes.decode_batch
    image_side = m.img_resolution * 2 ** (len(vae.block_out_channels) - 1)
    vae_vars = random_params(vae.init, jax.random.key(1), jnp.zeros((1, image_side, image_side, 3)))
    decode = jax.jit(lambda v, z: vae.apply(v, z, method=AutoencoderKL.decode))
    z = jnp.asarray(np.asarray(latents)[:d])
    dec_s, _ = median_seconds(lambda: decode(vae_vars, z), repeats)
    images = jnp.clip((decode(vae_vars, z) + 1) / 2, 0, 1)
    out['vae_decode'] = {'batch': d, 'image_size': image_side, 'seconds': dec_s, 'images_per_s': d / dec_s}
    inception = InceptionV3()
    inc_vars = random_params(inception.init, jax.random.key(2), jnp.zeros((1, image_side, image_side, 3)))
    features = jax.jit(inception.apply)
    inc_s, _ = median_seconds(lambda: features(inc_vars, images), repeats)
    out['inception_features'] = {'batch': d, 'seconds': inc_s, 'images_per_s': d / inc_s}
    tail = dec_s / d + inc_s / d
    out['fid_50k_wall_seconds'] = {label: sizes.fid_samples * (t + tail) for label, t in per_image.items()}
    out['note'] = (f'FID-{sizes.fid_samples // 1000}k wall = samples x (sampling + decoding + features) per image, '
                   'each stage at the batch above; JPEG encoding and the reference statistics not included')
    return out
