"""sLCT (Dao et al., ICLR 2025) and its iCT baseline: consistency training with a discrete,
doubling noise grid (spec §4-§8, §11). The file reads top to bottom as the method:

1. the curriculum: N(k) points on the Karras grid, doubling every K' steps (iCT);
2. which adjacent pair (sigma_i, sigma_{i+1}) each sample trains on: a discrete lognormal;
3. the weight 1 / (sigma_i - sigma_{i+1}) and the robustness constant c: iCT's fixed
   c0 = 0.00054 sqrt(d), or the paper's scaling-c schedule c(N), fitted on 4,096-d latents;
4. the consistency loss: rho_c(mean((f(x + sigma_i z) - sg f(x + sigma_{i+1} z))^2)) per sample,
   with the paper's Cauchy rho (iCT: Pseudo-Huber; objectives/robust.py);
5. the diffusion loss at early timesteps: the student regressed on the clean data for the
   smallest-noise quarter of the grid;
6. the objective the train step differentiates, `SLCT.loss`.

Two of the paper's techniques live outside this file by design: the minibatch OT coupling of z
to x is done in the input pipeline, on the host, steps ahead (data/coupling.py,
data/host_pairing.py), and Non-scaling LayerNorm is a norm of the network (models/norms.py).
iCT is this objective with Pseudo-Huber, fixed c, no diffusion loss, no OT and GroupNorm
(configs/variants.py:apply_ilct). Every schedule is a `jnp` function of the traced step, so one
compiled step serves every stage of the curriculum.
"""
from __future__ import annotations

import dataclasses
import math
from typing import ClassVar

import jax
import jax.numpy as jnp

from lct_jax.objectives import edm, robust
from lct_jax.objectives.base import Batch, Objective, network

P_MEAN = -1.1
P_STD = 2.0
C0_ICT = 0.00054
C_SCHEDULES = ('scaling', 'fixed', 'scaling_rescaled')


# --- 1. the curriculum N(k) (iCT's doubling; spec §4) ---------------------------------------

def stage_length(total_steps: int, s0: int = 10, s1: int = 640) -> int:
    """K' of the iCT doubling curriculum: the number of steps per stage."""
    num_stages = math.log2(s1 // s0) + 1
    return max(int(math.floor(total_steps / num_stages)), 1)


def num_scales(step, total_steps: int, s0: int = 10, s1: int = 640):
    """N(k) = min(s0 * 2^floor(k / K'), s1) + 1, as an int32 (traceable in `step`)."""
    # Past the last doubling N stays at s1 + 1; clamp so s0 * 2^stage cannot overflow int32.
    last_stage = math.ceil(math.log2(max(s1 / s0, 1))) + 1
    stage = jnp.minimum(jnp.asarray(step) // stage_length(total_steps, s0, s1), last_stage)
    return (jnp.minimum(s0 * jnp.left_shift(1, stage.astype(jnp.int32)), s1) + 1).astype(jnp.int32)


# --- 2. the interval each sample trains on (discrete lognormal; spec §5) ----------------------

def interval_probs(sigmas, p_mean=P_MEAN, p_std=P_STD):
    """Discrete lognormal over the n-1 intervals [sigma_{i+1}, sigma_i] of a grid (sums to 1)."""
    cdf = jax.scipy.special.erf((jnp.log(sigmas) - p_mean) / (math.sqrt(2.0) * p_std))
    mass = cdf[:-1] - cdf[1:]
    return mass / mass.sum()


def interval_logits(n, max_n: int, p_mean=P_MEAN, p_std=P_STD, sigma_min=edm.SIGMA_MIN,
                    sigma_max=edm.SIGMA_MAX, rho=edm.RHO):
    """Log-probabilities of `interval_probs` for a traced n, padded to max_n - 1 entries.

    Entries i >= n - 1 (intervals that do not exist at this n) are -inf.
    """
    idx = jnp.arange(max_n)
    sig = edm.karras_sigma(jnp.minimum(idx, n - 1), n, sigma_min, sigma_max, rho)
    cdf = jax.scipy.special.erf((jnp.log(sig) - p_mean) / (math.sqrt(2.0) * p_std))
    mass = cdf[:-1] - cdf[1:]
    valid = idx[:-1] < n - 1
    return jnp.where(valid & (mass > 0), jnp.log(jnp.where(mass > 0, mass, 1.0)), -jnp.inf)


def sample_intervals(key, n, max_n: int, shape, p_mean=P_MEAN, p_std=P_STD):
    """Interval indices i ~ interval_probs, for a traced n (one per element of `shape`)."""
    return jax.random.categorical(key, interval_logits(n, max_n, p_mean, p_std), shape=shape)


# --- 3. the weights and the robustness constant c (spec §6-§7) --------------------------------

def interval_weights(sigmas):
    """lambda_i = 1 / (sigma_i - sigma_{i+1}), the iCT weighting (length n - 1)."""
    return 1.0 / (sigmas[:-1] - sigmas[1:])


def ict_c(data_dim: int) -> float:
    """iCT's robustness constant c0 = 0.00054 * sqrt(d) (0.03456 for 4x32x32 latents)."""
    return C0_ICT * math.sqrt(data_dim)


def robust_c(num_scales, s0: int = 10, c0: float = 0.03456):
    """The scaling-c schedule: c0 in the first stage, exp(-1.15 ln(N-1) - 0.85) after it."""
    n = jnp.asarray(num_scales, jnp.float32)
    fitted = jnp.exp(-1.15 * jnp.log(n - 1.0) - 0.85)
    return jnp.where(n > s0 + 1, fitted, jnp.float32(c0))


# --- 4-5. the two loss terms (spec §6, §8) ------------------------------------------------------

def consistency_loss(student, target, weights, c, loss_norm: str = 'cauchy'):
    """mean_b lambda_b * rho_c(mean((f_theta - f_target)^2)) over the batch."""
    per_sample = robust.per_sample_loss(student - target, c, loss_norm)
    return jnp.mean(weights * per_sample)


def early_diffusion_mask(indices, num_scales, threshold: float = 0.75):
    """Samples whose interval index is in the small-noise end: i >= floor(threshold * N)."""
    return indices >= jnp.floor(threshold * jnp.asarray(num_scales, jnp.float32))


def diffusion_loss(student, clean, sigma, mask, sigma_data: float = 0.5):
    """Masked mean over the selected samples of (1/sigma^2 + 1/sigma_data^2) * mse.

    With no sample selected it is 0 (the authors' NaN would skip the step;
    a masked sum over max(count, 1) is the same whenever the subset is not empty).
    """
    weight = 1.0 / sigma**2 + 1.0 / sigma_data**2
    per_sample = weight * robust.mean_over_sample(jnp.square(student - clean))
    mask = mask.astype(per_sample.dtype)
    return jnp.sum(mask * per_sample) / jnp.maximum(jnp.sum(mask), 1.0)


# --- 6. the objective -------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class SLCT(Objective):
    """Hyper-parameters of sLCT / iCT; defaults are the paper's recipe (config.consistency)."""
    total_steps: int
    start_scales: int = 10           # s0
    end_scales: int = 640            # s1
    sigma_min: float = edm.SIGMA_MIN
    sigma_max: float = edm.SIGMA_MAX
    rho: float = edm.RHO
    sigma_data: float = edm.SIGMA_DATA
    p_mean: float = P_MEAN
    p_std: float = P_STD
    loss_norm: str = 'cauchy'
    c_schedule: str = 'scaling'      # 'scaling' (c0, then c(N)), 'fixed' (c0 throughout), or
                                     # 'scaling_rescaled' (c0, then c(N) * c0 / 0.03456)
    c0: float = 0.03456              # first-stage / fixed c; iCT's 0.00054 * sqrt(d)
    weight_schedule: str = 'ict'     # 'ict': 1 / (sigma_i - sigma_{i+1}); 'uniform': 1
    diffusion_weight: float = 5.0    # 0 disables the early-timestep diffusion loss
    diffusion_threshold: float = 0.75

    name: ClassVar[str] = 'slct'
    config_section: ClassVar[str] = 'consistency'
    # its network is a consistency function, and (as a denoiser) drives the EDM ODE samplers too
    samplers: ClassVar[tuple] = ('consistency', 'euler', 'heun')
    metric_names: ClassVar[tuple] = ('ct_loss', 'ct_loss_per_weight', 'diffusion_loss', 'num_scales', 'c',
                                     'early_fraction')

    def __post_init__(self):
        if self.loss_norm not in robust.LOSS_NORMS:
            raise ValueError(f'loss_norm {self.loss_norm!r}; valid: {robust.LOSS_NORMS}')
        if self.c_schedule not in C_SCHEDULES:
            raise ValueError(f"c_schedule {self.c_schedule!r}; valid: {C_SCHEDULES}")
        if self.weight_schedule not in ('ict', 'uniform'):
            raise ValueError(f"weight_schedule {self.weight_schedule!r}; valid: ('ict', 'uniform')")

    @classmethod
    def run_fields(cls, config) -> dict:
        return {'total_steps': config.total_steps}

    def num_scales(self, step):
        return num_scales(step, self.total_steps, self.start_scales, self.end_scales)

    def sigma(self, index, n):
        return edm.karras_sigma(index, n, self.sigma_min, self.sigma_max, self.rho)

    def robust_c(self, n):
        if self.c_schedule == 'fixed':
            return jnp.float32(self.c0)
        if self.c_schedule == 'scaling_rescaled':
            # c(N) was fitted on 4,096-d latents whose c0 is 0.03456 = 0.00054 sqrt(4096): move the
            # fitted line by the factor c0 / 0.03456 (sqrt(d / 4096) under iCT's rule), so c keeps
            # the paper's ratio to c0 at every stage.
            factor = self.c0 / ict_c(4096)
            return factor * robust_c(n, self.start_scales, self.c0 / factor)
        return robust_c(n, self.start_scales, self.c0)

    def loss(self, params, model, batch: Batch, key, step):
        """The training loss the step differentiates: (loss, metrics)."""
        return slct_loss(params, network(model, batch.labels), batch.x, batch.z, key, step, self)


def pair_outputs(params, apply_fn, x, z, key, step, obj: SLCT, train: bool = True):
    """(student f(x + sigma_i z), stop-gradient target f(x + sigma_{i+1} z), interval indices,
    sigma_i, sigma_{i+1}, N) at the step's drawn intervals: the two consistency-function values
    whose difference is the temporal difference (TD) the loss and the paper's Fig. 1 look at."""
    interval_key, dropout_key = jax.random.split(key)
    n = obj.num_scales(step)
    idx = sample_intervals(interval_key, n, obj.end_scales + 1, (x.shape[0],), obj.p_mean, obj.p_std)
    sigma, sigma_next = obj.sigma(idx, n), obj.sigma(idx + 1, n)
    bcast = lambda a: a.reshape(-1, 1, 1, 1)
    rngs = {'dropout': dropout_key}  # the same dropout mask for student and target, as the authors
    student = edm.consistency_fn(apply_fn, params, x + bcast(sigma) * z, sigma, obj, train, rngs)
    target = jax.lax.stop_gradient(
        edm.consistency_fn(apply_fn, params, x + bcast(sigma_next) * z, sigma_next, obj, train, rngs))
    return student, target, idx, sigma, sigma_next, n


def slct_loss(params, apply_fn, x, z, key, step, obj: SLCT, train: bool = True):
    """Consistency loss + weighted early-timestep diffusion loss; returns (loss, metrics)."""
    student, target, idx, sigma, sigma_next, n = pair_outputs(params, apply_fn, x, z, key, step, obj, train)
    weights = 1.0 / (sigma - sigma_next) if obj.weight_schedule == 'ict' else jnp.ones_like(sigma)
    c = obj.robust_c(n)
    ct = consistency_loss(student, target, weights, c, obj.loss_norm)
    mask = early_diffusion_mask(idx, n, obj.diffusion_threshold)
    if obj.diffusion_weight:
        diff = diffusion_loss(student, x, sigma, mask, obj.sigma_data)
    else:
        diff = jnp.float32(0.0)
    loss = ct + obj.diffusion_weight * diff
    # ct over the batch's mean weight: the weights grow with N (a finer grid, smaller steps), so
    # the raw loss rises through the curriculum while this stays comparable across stages.
    metrics = {'loss': loss, 'ct_loss': ct, 'ct_loss_per_weight': ct / jnp.mean(weights),
               'diffusion_loss': diff, 'num_scales': n, 'c': c, 'early_fraction': mask.mean()}
    return loss, metrics
