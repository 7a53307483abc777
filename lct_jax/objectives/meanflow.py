"""MeanFlow (Geng et al. 2025, arXiv 2505.13447), as the authors' `meanflow.py`
(github.com/Gsunshine/meanflow) defines it, trained from scratch beside sLCT and the LDM-8† baseline.

Flow path z_t = (1 - t) x + t e with t in [0, 1] (t = 1 is pure noise), conditional velocity
v = e - x. A network u(z, t, h) predicts the average velocity over [r, t], h = t - r; the
MeanFlow identity u(z_t, r, t) = v(z_t, t) - (t - r) du/dt gives the regression target

    u_tgt = stop_gradient(v - clip(t - r, 0, 1) * du/dt),

where du/dt is the total derivative along the flow, d/dt u(z_t, t, t - r) with dz/dt = v,
dt/dt = 1, dr/dt = 0. The authors get u and du/dt from ONE forward-mode `jax.jvp` over
(z, t, r) with tangents (v, 1, 0) of the function (z, t, r) -> u(z, t, t - r); so the network's
h input moves with tangent dt - dr = 1 (equivalently: a jvp over (z, t, h) with tangents
(v, 1, 1)). We do exactly that. Per-sample loss: the squared error summed over elements,
divided by the stop-gradient adaptive weight (err + eps)^p (p = 1, eps = 0.01); batch mean.

`meanflow_loss` is a pure function of explicit inputs (every random draw is an argument), so
tests check it against closed forms with no trained network; `draw_times` and
`draw_class_drop` make those draws from a key, as the authors do; `MeanFlowObjective.loss` is
what the train step differentiates. Sampled with lct_jax/sampling/meanflow.py.
"""
from __future__ import annotations

import dataclasses
from typing import Callable, ClassVar, NamedTuple

import jax
import jax.numpy as jnp

from lct_jax.objectives.base import Batch, JVPInFloat32, Objective

# The authors' defaults (configs/default.py of Gsunshine/meanflow).
P_MEAN, P_STD = -0.4, 1.0        # logit-normal (t, r) sampler
DATA_PROPORTION = 0.75           # the fraction of the batch with r = t (plain flow matching rows)
NORM_P, NORM_EPS = 1.0, 0.01     # adaptive weight (err + eps)^p
TWO_STEP_TIMES = (1.0, 0.5, 0.0)


class Draws(NamedTuple):
    """The random inputs of one MeanFlow loss: times t >= r of shape (B,), the noise e (x's shape)
    and the class-dropout mask (B,) bool (all False for an unconditional model)."""
    t: jax.Array
    r: jax.Array
    noise: jax.Array
    drop: jax.Array


def draw_times(key, batch: int, p_mean: float = P_MEAN, p_std: float = P_STD,
               data_proportion: float = DATA_PROPORTION):
    """(t, r), each (B,) float32: two independent logit-normal draws sigmoid(p_mean + p_std n),
    ordered so t = max and r = min; then the first floor(B * data_proportion) rows get r = t.

    As the authors' `sample_tr`: the r = t rows are the batch's first rows, not a random subset
    (the rows are in random order anyway), and their count is fixed, not Bernoulli.
    """
    k_t, k_r = jax.random.split(key)
    a = jax.nn.sigmoid(p_mean + p_std * jax.random.normal(k_t, (batch,), jnp.float32))
    b = jax.nn.sigmoid(p_mean + p_std * jax.random.normal(k_r, (batch,), jnp.float32))
    t, r = jnp.maximum(a, b), jnp.minimum(a, b)
    flow_matching_rows = jnp.arange(batch) < int(batch * data_proportion)
    return t, jnp.where(flow_matching_rows, t, r)


def draw_class_drop(key, batch: int, prob: float):
    """(B,) bool: the rows whose label becomes the null class. As the authors' `cond_drop`: the
    NUMBER of dropped rows is Binomial(B, prob), and the dropped rows are the batch's first rows
    (so they overlap the r = t rows of `draw_times`; both are the authors' convention)."""
    count = jnp.sum(jax.random.uniform(key, (batch,)) < prob)
    return jnp.arange(batch) < count


def draw(key, shape, p_mean: float = P_MEAN, p_std: float = P_STD, data_proportion: float = DATA_PROPORTION,
         class_dropout_prob: float = 0.0) -> Draws:
    """Every random input of `meanflow_loss` for a batch of `shape` (NHWC), from one key."""
    k_times, k_noise, k_drop = jax.random.split(key, 3)
    t, r = draw_times(k_times, shape[0], p_mean, p_std, data_proportion)
    noise = jax.random.normal(k_noise, shape, jnp.float32)
    return Draws(t, r, noise, draw_class_drop(k_drop, shape[0], class_dropout_prob))


def _bcast(a):
    return a.reshape(-1, 1, 1, 1)


def guided_velocity(u_fn, z, t, v, labels, null_class: int, omega: float, kappa: float,
                    t_start: float, t_end: float):
    """Classifier-free guidance inside the target (the authors' `guidance_fn`, 'cfg'):
    v_g = omega v + (1 - omega - kappa) v_uncond + kappa v_cond, with the network's own
    instantaneous velocities v_(un)cond = u(z, t, h = 0, y) (null class / the labels); outside
    t_start <= t <= t_end, omega -> 1 and kappa -> 0 (v_g = v). kappa = 0 needs no v_cond.
    Under stop_gradient: it only enters the target."""
    null = jnp.full(labels.shape, null_class, jnp.int32)
    zero = jnp.zeros_like(t)
    inside = (t >= t_start) & (t <= t_end)
    w = _bcast(jnp.where(inside, omega, 1.0))
    k = _bcast(jnp.where(inside, kappa, 0.0))
    v_uncond = u_fn(z, t, zero, null).astype(jnp.float32)
    v_g = w * v + (1.0 - w - k) * v_uncond
    if kappa:
        v_g = v_g + k * u_fn(z, t, zero, labels).astype(jnp.float32)
    return jax.lax.stop_gradient(v_g)


def meanflow_loss(u_fn: Callable, x, noise, t, r, *, norm_p: float = NORM_P, norm_eps: float = NORM_EPS,
                  labels=None, drop=None, null_class: int | None = None, omega: float = 1.0,
                  kappa: float = 0.0, t_start: float = 0.0, t_end: float = 1.0):
    """(loss, per-sample terms) of the MeanFlow objective.

    u_fn(z, t, h) -> the average velocity (z's shape), t and h = t - r of shape (B,); with
    `labels` (class-conditional) it is called u_fn(z, t, h, labels). x and noise NHWC; t, r (B,)
    with t >= r. labels (B,) int, drop (B,) bool (rows whose label becomes `null_class`); guidance
    (omega, kappa, [t_start, t_end]) needs labels and is off at omega = 1, kappa = 0 (default).

    Everything is float32 whatever the network computes in: the JVP's tangent and the target
    are differences of nearly equal quantities (the users' NaN reports came from bf16 JVPs).
    """
    x, noise = x.astype(jnp.float32), noise.astype(jnp.float32)
    t, r = t.astype(jnp.float32), r.astype(jnp.float32)
    z = (1.0 - _bcast(t)) * x + _bcast(t) * noise
    v = noise - x
    v_g, y = v, None
    if labels is not None:
        if null_class is None:
            raise ValueError('meanflow_loss: labels given without null_class (the unconditional label)')
        labels = jnp.asarray(labels, jnp.int32)
        if omega != 1.0 or kappa != 0.0:
            v_g = guided_velocity(u_fn, z, t, v, labels, null_class, omega, kappa, t_start, t_end)
        if drop is not None:   # dropped rows learn the unconditional field: their target is unguided
            y = jnp.where(drop, null_class, labels)
            v_g = jnp.where(_bcast(drop), v, v_g)
        else:
            y = labels
    elif omega != 1.0 or kappa != 0.0:
        raise ValueError('meanflow_loss: guidance (omega != 1 or kappa != 0) needs class labels')

    def u_of(z_, t_, r_):
        out = u_fn(z_, t_, t_ - r_) if y is None else u_fn(z_, t_, t_ - r_, y)
        return out.astype(jnp.float32)

    # One forward-mode pass: u and its total derivative along (dz, dt, dr) = (v_g, 1, 0).
    u, du_dt = jax.jvp(u_of, (z, t, r), (v_g, jnp.ones_like(t), jnp.zeros_like(r)))
    u_tgt = jax.lax.stop_gradient(v_g - _bcast(jnp.clip(t - r, 0.0, 1.0)) * du_dt)
    err = jnp.sum(jnp.square(u - u_tgt), axis=(1, 2, 3))
    weight = jax.lax.stop_gradient((err + norm_eps) ** norm_p)
    per_sample = err / weight
    terms = {'per_sample': per_sample, 'squared_error': err, 'weight': weight, 'u': u, 'u_target': u_tgt,
             'du_dt': du_dt,
             # the authors' monitor: how far u is from the instantaneous velocity (exact at r = t)
             'v_loss': jnp.sum(jnp.square(u - v), axis=(1, 2, 3))}
    return jnp.mean(per_sample), terms


def check_flow_times(times, key: str) -> None:
    """A few-step sampler's flow times must fall from 1.0 to 0.0 (`key` names the config field)."""
    times = tuple(float(s) for s in times)
    if len(times) < 2 or times[0] != 1.0 or times[-1] != 0.0 or any(a <= b for a, b in zip(times, times[1:])):
        raise ValueError(f'{key}={times}: must fall from 1.0 to 0.0')


def class_conditioning(config) -> dict:
    """num_classes and class_dropout_prob of a config's network (a class-conditional DiT), the
    objective applying the label dropout itself (MeanFlow and iMF: a dropped row's target is unguided)."""
    m = config.model
    classes = int(m.dit.num_classes) if m.get('kind', 'unet') == 'dit' else 0
    return {'num_classes': classes, 'class_dropout_prob': float(m.dit.class_dropout_prob) if classes else 0.0}


@dataclasses.dataclass(frozen=True)
class MeanFlowObjective(JVPInFloat32, Objective):
    """Hyper-parameters of the MeanFlow objective (config.meanflow); defaults are the authors'
    (guidance off).

    MeanFlow takes the batch's class labels itself: it drops them to the null class inside the
    objective, since a dropped row's target is unguided, and the network must not drop them again
    (`drop_labels=False`). It runs the network in float32 whatever model.dtype (the JVP).
    """
    p_mean: float = P_MEAN
    p_std: float = P_STD
    data_proportion: float = DATA_PROPORTION
    norm_p: float = NORM_P
    norm_eps: float = NORM_EPS
    omega: float = 1.0
    kappa: float = 0.0
    t_start: float = 0.0
    t_end: float = 1.0
    two_step_times: tuple = TWO_STEP_TIMES
    num_classes: int = 0             # > 0: class-conditional; the null class is index num_classes
    class_dropout_prob: float = 0.0

    name: ClassVar[str] = 'meanflow'
    config_section: ClassVar[str] = 'meanflow'
    samplers: ClassVar[tuple] = ('meanflow',)
    metric_names: ClassVar[tuple] = ('meanflow_loss', 'squared_error', 'v_loss', 'r_equals_t')

    def __post_init__(self):
        if not 0.0 <= self.data_proportion <= 1.0:
            raise ValueError(f'meanflow.data_proportion={self.data_proportion} must be in [0, 1]')
        if not self.norm_eps > 0 and self.norm_p > 0:
            raise ValueError(f'meanflow.norm_eps={self.norm_eps} must be positive')
        guided = self.omega != 1.0 or self.kappa != 0.0
        if guided and not self.num_classes:
            raise ValueError('meanflow guidance (omega != 1 or kappa != 0) needs a class-conditional model '
                             '(model.dit.num_classes > 0)')
        if (guided or self.class_dropout_prob > 0) and self.num_classes and not self.class_dropout_prob > 0:
            raise ValueError('meanflow guidance needs the null class: model.dit.class_dropout_prob > 0')
        check_flow_times(self.two_step_times, 'meanflow.two_step_times')

    @classmethod
    def check_config(cls, config) -> None:
        if not config.model.get('two_times', False):
            raise ValueError("objective='meanflow' needs a two-time network (u(z, t, h)): set "
                             'model.two_times=True (the :meanflow variants do)')

    @classmethod
    def run_fields(cls, config) -> dict:
        return class_conditioning(config)

    def loss(self, params, model, batch: Batch, key, step):
        """(loss, metrics) of one batch; batch.z is its noise e."""
        del step  # no curriculum
        apply_fn = self.network_apply(model)
        x, labels = batch.x, batch.labels
        time_key, drop_key, dropout_key = jax.random.split(key, 3)
        t, r = draw_times(time_key, x.shape[0], self.p_mean, self.p_std, self.data_proportion)
        rngs = {'dropout': dropout_key}

        def u_fn(z_, t_, h_, y=None):
            extra = {} if y is None else {'labels': y, 'drop_labels': False}
            return apply_fn({'params': params}, z_, t_, h=h_, train=True, rngs=rngs, **extra)

        drop = None
        if labels is not None:
            drop = draw_class_drop(drop_key, x.shape[0], self.class_dropout_prob)
        loss, terms = meanflow_loss(
            u_fn, x, batch.z, t, r, norm_p=self.norm_p, norm_eps=self.norm_eps, labels=labels, drop=drop,
            null_class=self.num_classes if labels is not None else None, omega=self.omega, kappa=self.kappa,
            t_start=self.t_start, t_end=self.t_end)
        metrics = {'loss': loss, 'meanflow_loss': loss, 'squared_error': jnp.mean(terms['squared_error']),
                   'v_loss': jnp.mean(terms['v_loss']), 'r_equals_t': jnp.mean((t == r).astype(jnp.float32))}
        return loss, metrics
