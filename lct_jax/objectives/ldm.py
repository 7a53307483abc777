"""The LDM-8† baseline of the paper's Table 1: the same UNet trained as an EDM-style latent
diffusion model (spec §16.5, the authors' `train_diff_latent.py` + `KarrasDenoiser.diffusion_losses`).

Noise level index i ~ Uniform{0..L-1} on the L = 1000-level Karras grid, the denoiser
D = c_skip x + c_out F(c_in x, 250 ln sigma) with the consistency boundary scalings
(sigma_min-shifted, as the authors call the same `denoise`; objectives/edm.py), and the
per-sample loss w(sigma) * ln(1 + m / (2c^2)) with c = 3.45, batch mean. No pairing (plain
Gaussian noise) and no curriculum. Sampled with the EDM ODE (Euler, 250 NFE in the paper).
"""
from __future__ import annotations

import dataclasses
from typing import ClassVar

import jax
import jax.numpy as jnp

from lct_jax.objectives import edm, robust
from lct_jax.objectives.base import Batch, Objective, network


def edm_diffusion_loss(denoised, x, sigma, c, sigma_data: float = 0.5):
    """Per-sample (B,) loss: w(sigma) * rho_cauchy(m).

    m = mean((D(x + sigma z, sigma) - x)^2) per sample, w = 1/sigma^2 + 1/sigma_data^2.
    The authors write ln(0.5 m + c^2) - 2 ln c; at c = 3.45 that difference of two
    large logarithms loses most of float32's digits (m is ~1e-3..1), while
    ln(1 + m / (2c^2)) is the same number computed without the cancellation.
    """
    m = robust.mean_over_sample(jnp.square(denoised - x))
    weight = 1.0 / sigma**2 + 1.0 / sigma_data**2
    return weight * robust.cauchy(m, c)


@dataclasses.dataclass(frozen=True)
class DiffusionObjective(Objective):
    """Hyper-parameters of the diffusion baseline (config.ldm); defaults are the authors' (spec §16.5)."""
    num_levels: int = 1000           # the Karras grid the noise levels are drawn from
    c: float = 3.45                  # the `KarrasDenoiser` default c of that branch
    sigma_min: float = edm.SIGMA_MIN
    sigma_max: float = edm.SIGMA_MAX
    rho: float = edm.RHO
    sigma_data: float = edm.SIGMA_DATA

    name: ClassVar[str] = 'ldm'
    config_section: ClassVar[str] = 'ldm'
    samplers: ClassVar[tuple] = ('euler', 'heun', 'consistency')
    metric_names: ClassVar[tuple] = ('diffusion_loss', 'denoised_mse')

    def __post_init__(self):
        if self.num_levels < 2:
            raise ValueError(f'ldm.num_levels={self.num_levels} must be at least 2')
        if not self.c > 0:
            raise ValueError(f'ldm.c={self.c} must be positive')

    @classmethod
    def run_fields(cls, config) -> dict:
        # The diffusion parameterisation (sigma range, rho, sigma_data) is the one sLCT uses (§3).
        return edm.edm_fields(config)

    def sigma(self, index):
        return edm.karras_sigma(index, self.num_levels, self.sigma_min, self.sigma_max, self.rho)

    def noise_levels(self, key, batch: int):
        """(index, sigma) per sample: index ~ Uniform{0..num_levels-1}, sigma on the Karras grid."""
        idx = jax.random.randint(key, (batch,), 0, self.num_levels)
        return idx, self.sigma(idx)

    def loss(self, params, model, batch: Batch, key, step):
        del step  # no curriculum: every step draws from the same 1000 levels
        return ldm_loss(params, network(model, batch.labels), batch.x, batch.z, key, self)


def ldm_loss(params, apply_fn, x, z, key, obj: DiffusionObjective, train: bool = True):
    """Mean over the batch of w(sigma_i) * ln(1 + mse(D(x + sigma_i z), x) / (2c^2))."""
    level_key, dropout_key = jax.random.split(key)
    _, sigma = obj.noise_levels(level_key, x.shape[0])
    denoised = edm.consistency_fn(apply_fn, params, x + sigma.reshape(-1, 1, 1, 1) * z, sigma, obj, train,
                                  {'dropout': dropout_key})
    per_sample = edm_diffusion_loss(denoised, x, sigma, obj.c, obj.sigma_data)
    loss = jnp.mean(per_sample)
    mse = jnp.mean(jnp.square(denoised - x))
    return loss, {'loss': loss, 'diffusion_loss': loss, 'denoised_mse': mse}
