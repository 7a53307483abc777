"""sCT: continuous-time consistency training in TrigFlow (Lu & Song, "Simplifying, Stabilizing and
Scaling Continuous-Time Consistency Models", ICLR 2025), beside sLCT's discrete-time recipe.
Defaults and tricks as NVlabs FastGen's sCM (fastgen/methods/consistency_model/sCM.py,
fastgen/configs/methods/config_scm.py); read, not copied. Top to bottom:

1. TrigFlow: x_t = cos(t) x_0 + sin(t) z with z ~ N(0, s_d^2 I), t in [0, pi/2]; the network F
   enters as f(x_t, t) = cos(t) x_t - sin(t) s_d F(x_t / s_d, c_noise(t)), c_noise(t) = t, sCM's
   identity time transformation (section 4.1), fed to the network's positional embedding as it is.
   Not 1000 t, the range that embedding was built for in discrete-time models: the JVP's time
   term is cos t sin t dF/dc_noise * dc_noise/dt, and with dc_noise/dt = 1000 the embedding's
   fastest frequencies (1 per unit c_noise) make it ~500 times larger than the rest of the
   tangent, which tangent normalisation then turns into noise. Measured: on Gaussian data a
   small network trained by this loss reaches the analytic consistency function with
   time_scale 1 and moves away from it with 1000 (tests/test_sct_imf.py, docs/sct_imf.md).
2. Which t: t = atan(sigma / s_d) with ln sigma ~ N(p_mean, p_std^2) (sCM's CIFAR sCT: -1.0, 1.4).
3. The target, from ONE forward-mode `jax.jvp` of the stop-gradient network along the tangents
   (cos t sin t dx_t/dt, cos t sin t): the total derivative of F along the path, times cos t sin t.
   With dx_t/dt the conditional velocity -sin t x_0 + cos t z (training; no teacher),
       g = -cos^2 t (s_d F^- - dx_t/dt) - r cos t sin t (x_t + s_d dF^-/dt),
   which is cos t df/dt along the path (r = 1): zero at the consistency function of the
   probability-flow ODE when dx_t/dt is its velocity, and zero in mean over the noise when it is
   the conditional velocity (tests/test_sct.py checks both on Gaussian data, where everything is
   analytic). r = min(1, step / tangent_warmup_steps) warms the second term up.
4. Tangent normalisation g <- g / (||g|| + c), c = 0.1; ||g|| the per-sample RMS (FastGen's
   spatially invariant norm; 'l2' for the plain norm).
5. The loss: the prior weight 1 / (s_d tan t), and the adaptive weighting with a learned
   logvar(t) head (the network's `logvar_head`):
       e^{-logvar(t)} / (s_d tan t) * mean((F_theta - F^- - g)^2) + logvar(t).
   (FastGen divides the mean by D once more; that only moves the learned logvar by ln D.)

Numerics: the network runs in float32 for the loss whatever model.dtype, as MeanFlow here: the
JVP and the target are differences of nearly equal quantities. A row whose JVP overflows makes
the step's loss non-finite, and the train step skips the update (train/step.py's stated policy;
`jvp_finite` logs the fraction of finite rows). `jvp='finite_difference'` replaces the JVP by a
central difference along the same path (for attention kernels without a JVP rule).
"""
from __future__ import annotations

import dataclasses
import math
from typing import ClassVar

import jax
import jax.numpy as jnp

from lct_jax.objectives import edm
from lct_jax.objectives.base import Batch, JVPInFloat32, Objective

P_MEAN, P_STD = -1.0, 1.4
TIME_SCALE = 1.0         # c_noise(t) = t (1. above: why not 1000 t)
JVP_METHODS = ('autodiff', 'finite_difference')
TANGENT_NORMS = ('rms', 'l2')


def _bcast(a):
    return a.reshape(-1, 1, 1, 1)


# --- 1-2. TrigFlow and its times -----------------------------------------------------------------

def trigflow_point(x0, z, t):
    """x_t = cos(t) x_0 + sin(t) z and its conditional velocity dx_t/dt = -sin(t) x_0 + cos(t) z."""
    c, s = _bcast(jnp.cos(t)), _bcast(jnp.sin(t))
    return c * x0 + s * z, -s * x0 + c * z


def draw_times(key, batch: int, p_mean: float = P_MEAN, p_std: float = P_STD, sigma_data: float = 0.5):
    """t = atan(sigma / s_d), ln sigma ~ N(p_mean, p_std^2): (B,) float32 in (0, pi/2)."""
    sigma = jnp.exp(p_mean + p_std * jax.random.normal(key, (batch,), jnp.float32))
    return jnp.arctan2(sigma, sigma_data)


def consistency_output(x_t, t, F, sigma_data: float):
    """f(x_t, t) = cos(t) x_t - sin(t) s_d F."""
    return _bcast(jnp.cos(t)) * x_t - _bcast(jnp.sin(t)) * sigma_data * F


# --- 3-4. the tangent -------------------------------------------------------------------------------

def tangent(F_minus, dF_dt_scaled, x_t, dxt_dt, t, sigma_data: float, r):
    """g = -cos^2 t (s_d F^- - dx_t/dt) - r (cos t sin t x_t + s_d dF^-), where dF^- is the JVP along
    (cos t sin t dx_t/dt, cos t sin t), i.e. cos t sin t times the total derivative dF^-/dt."""
    c, s = _bcast(jnp.cos(t)), _bcast(jnp.sin(t))
    return -c * c * (sigma_data * F_minus - dxt_dt) - r * (c * s * x_t + sigma_data * dF_dt_scaled)


def normalize_tangent(g, c: float = 0.1, norm: str = 'rms'):
    """g / (||g|| + c) per sample; ||.|| the RMS over elements ('rms') or the L2 norm ('l2')."""
    sq = jnp.sum(jnp.square(g), axis=(1, 2, 3), keepdims=True)
    n = jnp.sqrt(sq / math.prod(g.shape[1:])) if norm == 'rms' else jnp.sqrt(sq)
    return g / (n + c)


def tangent_warmup(step, warmup_steps: int):
    """r = min(1, step / warmup_steps) (1 at once without a warm-up)."""
    if warmup_steps <= 0:
        return jnp.float32(1.0)
    return jnp.minimum(1.0, jnp.asarray(step, jnp.float32) / warmup_steps)


# --- 5. the objective -------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class SCT(JVPInFloat32, Objective):
    """Hyper-parameters of sCT (config.sct); defaults are sCM's / FastGen's."""
    p_mean: float = P_MEAN
    p_std: float = P_STD
    tangent_warmup_steps: int = 10_000     # FastGen's LossConfig default
    tangent_norm_c: float = 0.1
    tangent_norm: str = 'rms'
    prior_weighting: bool = True           # 1 / (s_d tan t)
    jvp: str = 'autodiff'                  # or 'finite_difference'
    finite_difference_eps: float = 1e-3    # relative step in t of the finite-difference JVP
    time_scale: float = TIME_SCALE
    two_step_t: float = 1.1                # sCM's intermediate time of the 2-step sampler
    sigma_data: float = edm.SIGMA_DATA
    sigma_max: float = edm.SIGMA_MAX       # the samplers start at t_max = atan(sigma_max / s_d)

    name: ClassVar[str] = 'sct'
    config_section: ClassVar[str] = 'sct'
    samplers: ClassVar[tuple] = ('trigflow',)
    metric_names: ClassVar[tuple] = ('sct_loss', 'unweighted_loss', 'logvar', 'tangent_warmup', 'tangent_rms',
                                     'jvp_finite')

    def __post_init__(self):
        if self.jvp not in JVP_METHODS:
            raise ValueError(f'sct.jvp {self.jvp!r}; valid: {JVP_METHODS}')
        if self.tangent_norm not in TANGENT_NORMS:
            raise ValueError(f'sct.tangent_norm {self.tangent_norm!r}; valid: {TANGENT_NORMS}')
        if not 0.0 < self.two_step_t < self.t_max:
            raise ValueError(f'sct.two_step_t={self.two_step_t} must lie in (0, t_max={self.t_max:.4f})')

    @classmethod
    def run_fields(cls, config) -> dict:
        return {'sigma_data': config.consistency.sigma_data, 'sigma_max': config.consistency.sigma_max}

    @classmethod
    def check_config(cls, config) -> None:
        if not config.model.get('logvar_head', False):
            raise ValueError("objective='sct' learns its adaptive weighting with a logvar(t) head: set "
                             'model.logvar_head=True (the :sct variants do)')

    @property
    def t_max(self) -> float:
        return math.atan2(self.sigma_max, self.sigma_data)

    def noise_labels(self, t):
        return self.time_scale * t

    def loss(self, params, model, batch: Batch, key, step):
        return sct_loss(params, self.network_apply(model), batch.x, batch.z, key, step, self, labels=batch.labels)


def sct_loss(params, apply_fn, x0, noise, key, step, obj: SCT, labels=None, dxt_dt=None, train: bool = True):
    """(loss, metrics) of sCT on clean x0 with unit noise (scaled by s_d here). `dxt_dt`: None for
    the training form (the conditional velocity); a function (x_t, t) -> velocity for the
    distillation form (e.g. a teacher's, or the analytic one in the tests)."""
    time_key, dropout_key = jax.random.split(key)
    sd = obj.sigma_data
    t = draw_times(time_key, x0.shape[0], obj.p_mean, obj.p_std, sd)
    z = sd * noise.astype(jnp.float32)
    x0 = x0.astype(jnp.float32)
    x_t, velocity = trigflow_point(x0, z, t)
    if dxt_dt is not None:
        velocity = dxt_dt(x_t, t)
    extra = {} if labels is None else {'labels': labels}
    rngs = {'dropout': dropout_key}   # the same dropout mask for F and F^-, as FastGen's fork_rng

    def F_of(p, x, tt, with_logvar=False):
        out = apply_fn({'params': p}, x / sd, obj.noise_labels(tt), train=train, rngs=rngs,
                       return_logvar=with_logvar, **extra)
        return out

    F_theta, logvar = F_of(params, x_t, t, with_logvar=True)
    frozen = jax.lax.stop_gradient(params)
    ct = jnp.cos(t) * jnp.sin(t)
    if obj.jvp == 'autodiff':
        F_minus, dF = jax.jvp(lambda x, tt: F_of(frozen, x, tt), (x_t, t), (_bcast(ct) * velocity, ct))
    else:
        F_minus = F_of(frozen, x_t, t)
        dF = finite_difference_jvp(lambda x, tt: F_of(frozen, x, tt), x0, z, t, obj.finite_difference_eps,
                                   velocity if dxt_dt is not None else None)
    F_minus, dF = jax.lax.stop_gradient(F_minus), jax.lax.stop_gradient(dF)
    r = tangent_warmup(step, obj.tangent_warmup_steps)
    g = tangent(F_minus, dF, x_t, velocity, t, sd, r)
    g = normalize_tangent(g, obj.tangent_norm_c, obj.tangent_norm)
    unweighted = jnp.mean(jnp.square(F_theta - F_minus - g), axis=(1, 2, 3))
    weight = 1.0 / (sd * jnp.tan(t)) if obj.prior_weighting else jnp.ones_like(t)
    logvar = logvar.reshape(-1).astype(jnp.float32)
    per_sample = weight * jnp.exp(-logvar) * unweighted + logvar
    loss = jnp.mean(per_sample)
    finite_rows = jnp.all(jnp.isfinite(dF), axis=(1, 2, 3))
    return loss, {'loss': loss, 'sct_loss': loss, 'unweighted_loss': jnp.mean(unweighted), 'logvar': jnp.mean(logvar),
                  'tangent_warmup': r, 'tangent_rms': jnp.sqrt(jnp.mean(jnp.square(g))),
                  'jvp_finite': jnp.mean(finite_rows.astype(jnp.float32))}


def finite_difference_jvp(F, x0, z, t, eps: float, velocity=None):
    """cos t sin t dF/dt by a central difference in t along the path: the conditional path
    x(t +- e) = cos(t +- e) x0 + sin(t +- e) z (training form), or, given `velocity` (distillation
    form), x_t +- e velocity. e = eps * t (at least 1e-4)."""
    e = jnp.maximum(eps * t, 1e-4)
    lo, hi = jnp.maximum(t - e, 1e-5), jnp.minimum(t + e, math.pi / 2 - 1e-5)
    if velocity is None:
        x_hi, _ = trigflow_point(x0, z, hi)
        x_lo, _ = trigflow_point(x0, z, lo)
    else:
        x_t, _ = trigflow_point(x0, z, t)
        x_hi, x_lo = x_t + _bcast(hi - t) * velocity, x_t - _bcast(t - lo) * velocity
    return _bcast(jnp.cos(t) * jnp.sin(t) / (hi - lo)) * (F(x_hi, hi) - F(x_lo, lo))
