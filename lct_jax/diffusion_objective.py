"""The LDM-8† baseline's objective: the same UNet trained as an EDM-style latent diffusion model.

Spec §16.5 (the authors' `train_diff_latent.py` + `KarrasDenoiser.diffusion_losses`):
noise level index i ~ Uniform{0..L-1} on the L = 1000-level Karras grid, the
denoiser D = c_skip x + c_out F(c_in x, 250 ln sigma) with the consistency
boundary scalings (sigma_min-shifted, as the authors call the same `denoise`),
and the per-sample loss w(sigma) * ln(1 + m / (2c^2)) with c = 3.45, batch mean.
The train step differentiates `DiffusionObjective.loss` exactly as it does the
sLCT objective; samplers use `denoise` through `objective.consistency_fn`.
"""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from lct_jax import losses, schedules
from lct_jax.objective import consistency_fn


@dataclasses.dataclass(frozen=True)
class DiffusionObjective:
    """Hyper-parameters of the diffusion baseline; defaults are the authors' (spec §16.5)."""
    num_levels: int = 1000           # the Karras grid the noise levels are drawn from
    c: float = 3.45                  # the `KarrasDenoiser` default c of that branch
    sigma_min: float = schedules.SIGMA_MIN
    sigma_max: float = schedules.SIGMA_MAX
    rho: float = schedules.RHO
    sigma_data: float = schedules.SIGMA_DATA

    def __post_init__(self):
        if self.num_levels < 2:
            raise ValueError(f'ldm.num_levels={self.num_levels} must be at least 2')
        if not self.c > 0:
            raise ValueError(f'ldm.c={self.c} must be positive')

    def sigma(self, index):
        return schedules.karras_sigma(index, self.num_levels, self.sigma_min, self.sigma_max, self.rho)

    def noise_levels(self, key, batch: int):
        """(index, sigma) per sample: index ~ Uniform{0..num_levels-1}, sigma on the Karras grid."""
        idx = jax.random.randint(key, (batch,), 0, self.num_levels)
        return idx, self.sigma(idx)

    def loss(self, params, apply_fn, x, z, key, step):
        """(loss, metrics), the signature the train step differentiates (see `Objective.loss`)."""
        del step  # no curriculum: every step draws from the same 1000 levels
        return ldm_loss(params, apply_fn, x, z, key, self)


def ldm_loss(params, apply_fn, x, z, key, obj: DiffusionObjective, train: bool = True):
    """Mean over the batch of w(sigma_i) * ln(1 + mse(D(x + sigma_i z), x) / (2c^2))."""
    level_key, dropout_key = jax.random.split(key)
    _, sigma = obj.noise_levels(level_key, x.shape[0])
    denoised = consistency_fn(apply_fn, params, x + sigma.reshape(-1, 1, 1, 1) * z, sigma, obj, train,
                              {'dropout': dropout_key})
    per_sample = losses.edm_diffusion_loss(denoised, x, sigma, obj.c, obj.sigma_data)
    loss = jnp.mean(per_sample)
    mse = jnp.mean(jnp.square(denoised - x))
    # num_scales and c keep the loop's log line and metric columns the same for every objective.
    metrics = {'loss': loss, 'diffusion_loss': loss, 'denoised_mse': mse,
               'num_scales': jnp.int32(obj.num_levels), 'c': jnp.float32(obj.c)}
    return loss, metrics
