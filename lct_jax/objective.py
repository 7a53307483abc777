"""The consistency function and the sLCT training objective (spec §3, §6-§8, §11).

`slct_loss` is a pure function of (params, clean batch, paired noise, key,
step): every schedule is evaluated from the traced `step`, so one compiled
loss serves all curriculum stages.
"""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from lct_jax import losses, schedules


C_SCHEDULES = ('scaling', 'fixed', 'scaling_rescaled')


@dataclasses.dataclass(frozen=True)
class Objective:
    """Hyper-parameters of the objective; defaults are the paper's recipe."""
    total_steps: int
    start_scales: int = 10           # s0
    end_scales: int = 640            # s1
    sigma_min: float = schedules.SIGMA_MIN
    sigma_max: float = schedules.SIGMA_MAX
    rho: float = schedules.RHO
    sigma_data: float = schedules.SIGMA_DATA
    p_mean: float = schedules.P_MEAN
    p_std: float = schedules.P_STD
    loss_norm: str = 'cauchy'
    c_schedule: str = 'scaling'      # 'scaling' (c0, then c(N)), 'fixed' (c0 throughout), or
                                     # 'scaling_rescaled' (c0, then c(N) * c0 / 0.03456)
    c0: float = 0.03456              # first-stage / fixed c; iCT's 0.00054 * sqrt(d)
    weight_schedule: str = 'ict'     # 'ict': 1 / (sigma_i - sigma_{i+1}); 'uniform': 1
    diffusion_weight: float = 5.0    # 0 disables the early-timestep diffusion loss
    diffusion_threshold: float = 0.75

    def __post_init__(self):
        if self.loss_norm not in losses.LOSS_NORMS:
            raise ValueError(f'loss_norm {self.loss_norm!r}; valid: {losses.LOSS_NORMS}')
        if self.c_schedule not in C_SCHEDULES:
            raise ValueError(f"c_schedule {self.c_schedule!r}; valid: {C_SCHEDULES}")
        if self.weight_schedule not in ('ict', 'uniform'):
            raise ValueError(f"weight_schedule {self.weight_schedule!r}; valid: ('ict', 'uniform')")

    def num_scales(self, step):
        return schedules.num_scales(step, self.total_steps, self.start_scales, self.end_scales)

    def sigma(self, index, n):
        return schedules.karras_sigma(index, n, self.sigma_min, self.sigma_max, self.rho)

    def robust_c(self, n):
        if self.c_schedule == 'fixed':
            return jnp.float32(self.c0)
        if self.c_schedule == 'scaling_rescaled':
            # c(N) was fitted on 4,096-d latents whose c0 is 0.03456 = 0.00054 sqrt(4096): move the
            # fitted line by the factor c0 / 0.03456 (sqrt(d / 4096) under iCT's rule), so c keeps
            # the paper's ratio to c0 at every stage.
            factor = self.c0 / schedules.ict_c(4096)
            return factor * schedules.robust_c(n, self.start_scales, self.c0 / factor)
        return schedules.robust_c(n, self.start_scales, self.c0)

    def loss(self, params, apply_fn, x, z, key, step):
        """The training loss the step differentiates: (loss, metrics). Any objective the step
        trains (e.g. a diffusion baseline) provides this method with this signature."""
        return slct_loss(params, apply_fn, x, z, key, step, self)


def consistency_fn(apply_fn, params, x, sigma, obj: Objective, train=False, rngs=None):
    """f_theta(x, sigma) = c_skip x + c_out F_theta(c_in x, 250 ln sigma)."""
    c_skip, c_out, c_in = schedules.boundary_scalings(sigma, obj.sigma_data, obj.sigma_min)
    bcast = lambda a: a.reshape(-1, 1, 1, 1)
    out = apply_fn({'params': params}, bcast(c_in) * x, schedules.noise_conditioning(sigma),
                   train=train, rngs=rngs)
    return bcast(c_skip) * x + bcast(c_out) * out


def slct_loss(params, apply_fn, x, z, key, step, obj: Objective, train: bool = True):
    """Consistency loss + weighted early-timestep diffusion loss; returns (loss, metrics)."""
    interval_key, dropout_key = jax.random.split(key)
    n = obj.num_scales(step)
    idx = schedules.sample_intervals(interval_key, n, obj.end_scales + 1, (x.shape[0],),
                                     obj.p_mean, obj.p_std)
    sigma, sigma_next = obj.sigma(idx, n), obj.sigma(idx + 1, n)
    bcast = lambda a: a.reshape(-1, 1, 1, 1)
    rngs = {'dropout': dropout_key}  # the same dropout mask for student and target, as the authors
    student = consistency_fn(apply_fn, params, x + bcast(sigma) * z, sigma, obj, train, rngs)
    target = jax.lax.stop_gradient(
        consistency_fn(apply_fn, params, x + bcast(sigma_next) * z, sigma_next, obj, train, rngs))
    weights = 1.0 / (sigma - sigma_next) if obj.weight_schedule == 'ict' else jnp.ones_like(sigma)
    c = obj.robust_c(n)
    ct = losses.consistency_loss(student, target, weights, c, obj.loss_norm)
    mask = losses.early_diffusion_mask(idx, n, obj.diffusion_threshold)
    if obj.diffusion_weight:
        diff = losses.diffusion_loss(student, x, sigma, mask, obj.sigma_data)
    else:
        diff = jnp.float32(0.0)
    loss = ct + obj.diffusion_weight * diff
    # ct over the batch's mean weight: the weights grow with N (a finer grid, smaller steps), so
    # the raw loss rises through the curriculum while this stays comparable across stages.
    metrics = {'loss': loss, 'ct_loss': ct, 'ct_loss_per_weight': ct / jnp.mean(weights),
               'diffusion_loss': diff, 'num_scales': n, 'c': c, 'early_fraction': mask.mean()}
    return loss, metrics
