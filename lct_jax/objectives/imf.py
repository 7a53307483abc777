"""Improved MeanFlow (iMF; Geng, Lu, Wu, Shechtman, Kolter, He, arXiv 2512.02012), as its authors'
JAX code defines it (Lyy-iiis/imeanflow `imf.py`; read, not copied), beside MeanFlow (meanflow.py).

What changes from MeanFlow, top to bottom:

1. The network has two heads (the model's `v_head`): u, the average velocity over [r, t], and v,
   the instantaneous velocity at t. The time draw is MeanFlow's logit-normal (t, r) with a fixed
   share of rows at r = t (`data_proportion`, 0.5 here, 0.75 in MeanFlow).
2. The JVP's tangent in z is the network's OWN predicted velocity v_c = v(z_t, t) (with h = 0),
   not the conditional velocity e - x: one forward-mode `jax.jvp` over (z, t, r) with tangents
   (v_c, 1, 0) gives u, du/dt and (as its auxiliary output) v.
3. The boxed objective is a v-loss: V = u + (t - r) sg(du/dt) regressed on the (guided) velocity
   v_g, and the auxiliary v-head on the same target; both with MeanFlow's adaptive weight
   (err + eps)^p, summed per sample, batch mean.
4. Guidance as a network input (class-conditional runs, `guidance=True`, the DiT's
   `guidance_inputs`): each row draws a CFG scale omega (a power law on [1, 1 + s_max]) and an
   interval [t_min, t_max] (U[0, 0.5] x U[0.5, 1]; the r = t rows use [0, 1]); the target is
   v_g = v_t + (1 - 1/w)(v_c - v_u) with w = omega inside the interval and 1 outside (the r = t rows
   always guided), v_c, v_u the v-head's conditional and unconditional predictions; rows whose
   label is dropped to the null class learn the unguided v_t. Sampling passes the configured
   omega and interval (the authors' B/2: 7.5 on [0.4, 0.65]).

Numerics as MeanFlow here: everything in float32 (the network too) whatever model.dtype; a
non-finite JVP makes the loss non-finite and the train step skips the update (train/step.py).
"""
from __future__ import annotations

import dataclasses
from typing import ClassVar

import jax
import jax.numpy as jnp

from lct_jax.objectives.base import Batch, JVPInFloat32, Objective
from lct_jax.objectives.meanflow import (
    TWO_STEP_TIMES,
    check_flow_times,
    class_conditioning,
    draw_class_drop,
    draw_times,
)

P_MEAN, P_STD = -0.4, 1.0
DATA_PROPORTION = 0.5
NORM_P, NORM_EPS = 1.0, 0.01
CFG_S_MAX = 7.0


def _bcast(a):
    return a.reshape(-1, 1, 1, 1)


def draw_cfg_scale(key, batch: int, beta: float = 1.0, s_max: float = CFG_S_MAX):
    """omega in [1, 1 + s_max], (B,): the authors' power distribution (beta = 1: log-uniform in 1 + s)."""
    u = jax.random.uniform(key, (batch,), jnp.float32)
    if beta == 1.0:
        return jnp.exp(u * jnp.log1p(s_max))
    base = (1.0 - beta) * jnp.log1p(s_max)
    return jnp.exp(jnp.log1p(u * jnp.expm1(base)) / (1.0 - beta))


def draw_cfg_interval(key, batch: int, flow_matching_rows):
    """(t_min, t_max), (B,): U[0, 0.5] and U[0.5, 1]; the r = t rows get [0, 1]."""
    k_lo, k_hi = jax.random.split(key)
    t_min = jax.random.uniform(k_lo, (batch,), jnp.float32, 0.0, 0.5)
    t_max = jax.random.uniform(k_hi, (batch,), jnp.float32, 0.5, 1.0)
    return jnp.where(flow_matching_rows, 0.0, t_min), jnp.where(flow_matching_rows, 1.0, t_max)


def adaptive(err, norm_p: float, norm_eps: float):
    """err / sg((err + eps)^p), per sample."""
    return err / jax.lax.stop_gradient((err + norm_eps) ** norm_p)


def imf_loss(net, x, noise, t, r, *, norm_p=NORM_P, norm_eps=NORM_EPS, guided=None):
    """(loss, terms) of the iMF objective for an unconditional net(z, t, h) -> (u, v), or one whose
    guidance and labels are bound into `net`. `guided(z_t, v_t) -> (v_g, v_c)` gives a guided
    target and the tangent (class-conditional runs); without it the target is v_t and the tangent
    the network's own v(z_t, t) at h = 0. Every random draw is an argument: tests check it against
    closed forms."""
    x, noise = x.astype(jnp.float32), noise.astype(jnp.float32)
    z_t = (1.0 - _bcast(t)) * x + _bcast(t) * noise
    v_t = noise - x
    if guided is None:
        v_g, v_c = v_t, net(z_t, t, jnp.zeros_like(t))[1]         # the network's own velocity: the tangent
    else:
        v_g, v_c = guided(z_t, v_t)
    v_g, v_c = jax.lax.stop_gradient(v_g), jax.lax.stop_gradient(v_c)

    def u_of(z, tt, rr):
        u, v = net(z, tt, tt - rr)
        return u.astype(jnp.float32), v.astype(jnp.float32)

    u, du_dt, v = jax.jvp(u_of, (z_t, t, r), (v_c, jnp.ones_like(t), jnp.zeros_like(r)), has_aux=True)
    V = u + _bcast(t - r) * jax.lax.stop_gradient(du_dt)
    err_u = jnp.sum(jnp.square(V - v_g), axis=(1, 2, 3))
    err_v = jnp.sum(jnp.square(v - v_g), axis=(1, 2, 3))
    per_sample = adaptive(err_u, norm_p, norm_eps) + adaptive(err_v, norm_p, norm_eps)
    return jnp.mean(per_sample), {'err_u': err_u, 'err_v': err_v, 'u': u, 'v': v, 'du_dt': du_dt, 'V': V,
                                  'v_target': v_g, 'v_c': v_c}


@dataclasses.dataclass(frozen=True)
class IMFObjective(JVPInFloat32, Objective):
    """Hyper-parameters of improved MeanFlow (config.imf); defaults are the authors'."""
    p_mean: float = P_MEAN
    p_std: float = P_STD
    data_proportion: float = DATA_PROPORTION
    norm_p: float = NORM_P
    norm_eps: float = NORM_EPS
    guidance: bool = False           # class-conditional: draw omega and the interval per row (needs guidance_inputs)
    cfg_beta: float = 1.0
    cfg_s_max: float = CFG_S_MAX
    sample_omega: float = 1.0        # the samplers' guidance (class-conditional models)
    sample_t_min: float = 0.0
    sample_t_max: float = 1.0
    two_step_times: tuple = TWO_STEP_TIMES
    num_classes: int = 0
    class_dropout_prob: float = 0.0

    name: ClassVar[str] = 'imf'
    config_section: ClassVar[str] = 'imf'
    samplers: ClassVar[tuple] = ('imf',)
    metric_names: ClassVar[tuple] = ('imf_loss', 'loss_u', 'loss_v', 'r_equals_t')

    def __post_init__(self):
        if not 0.0 <= self.data_proportion <= 1.0:
            raise ValueError(f'imf.data_proportion={self.data_proportion} must be in [0, 1]')
        if self.guidance and not self.num_classes:
            raise ValueError('imf.guidance=True needs a class-conditional model (model.dit.num_classes > 0)')
        if self.guidance and not self.class_dropout_prob > 0:
            raise ValueError('imf.guidance=True needs the null class: model.dit.class_dropout_prob > 0')
        check_flow_times(self.two_step_times, 'imf.two_step_times')

    @classmethod
    def check_config(cls, config) -> None:
        m = config.model
        if not (m.get('two_times', False) and m.get('v_head', False)):
            raise ValueError("objective='imf' needs a two-time network with a v-head: set model.two_times=True "
                             'and model.v_head=True (the :imf variants do)')
        if config.imf.guidance and not (m.get('kind', 'unet') == 'dit' and m.dit.get('guidance_inputs', False)):
            raise ValueError('imf.guidance=True needs guidance as a network input: model.kind=dit and '
                             'model.dit.guidance_inputs=True')

    @classmethod
    def run_fields(cls, config) -> dict:
        return class_conditioning(config)

    def loss(self, params, model, batch: Batch, key, step):
        del step  # no curriculum
        apply_fn = self.network_apply(model)
        x, labels = batch.x, batch.labels
        k_times, k_drop, k_omega, k_interval, k_dropout = jax.random.split(key, 5)
        t, r = draw_times(k_times, x.shape[0], self.p_mean, self.p_std, self.data_proportion)
        rngs = {'dropout': k_dropout}
        fm_rows = t == r
        if labels is None:
            def net(z, tt, h):
                return apply_fn({'params': params}, z, tt, h=h, train=True, rngs=rngs)
            loss, terms = imf_loss(net, x, batch.z, t, r, norm_p=self.norm_p, norm_eps=self.norm_eps)
        else:
            loss, terms = self._conditional_loss(apply_fn, params, rngs, x, batch.z, t, r, labels, fm_rows,
                                                 k_drop, k_omega, k_interval)
        return loss, {'loss': loss, 'imf_loss': loss, 'loss_u': jnp.mean(terms['err_u']),
                      'loss_v': jnp.mean(terms['err_v']), 'r_equals_t': jnp.mean(fm_rows.astype(jnp.float32))}

    def _conditional_loss(self, apply_fn, params, rngs, x, noise, t, r, labels, fm_rows, k_drop, k_omega, k_interval):
        """The class-conditional objective: labels dropped to the null class (their target unguided)
        and, with `guidance`, the drawn omega and interval as network inputs and in the target."""
        batch = x.shape[0]
        labels = jnp.asarray(labels, jnp.int32)
        null = jnp.full_like(labels, self.num_classes)
        drop = draw_class_drop(k_drop, batch, self.class_dropout_prob)
        y = jnp.where(drop, null, labels)
        guide = {}
        if self.guidance:
            omega = draw_cfg_scale(k_omega, batch, self.cfg_beta, self.cfg_s_max)
            t_min, t_max = draw_cfg_interval(k_interval, batch, fm_rows)
            guide = {'omega': omega, 't_min': t_min, 't_max': t_max}

        def call(z, tt, h, yy, **g):
            return apply_fn({'params': params}, z, tt, h=h, labels=yy, drop_labels=False, train=True, rngs=rngs, **g)

        def guided(z_t, v_t):
            zero, ones = jnp.zeros_like(t), jnp.ones_like(t)
            if not self.guidance:   # labels only: the target v_t, the tangent the labelled v-head
                return v_t, call(z_t, t, zero, y)[1]
            inside = (t >= guide['t_min']) & (t <= guide['t_max'])
            w_fm, w = guide['omega'], jnp.where(inside, guide['omega'], 1.0)
            # the v-head's conditional velocity with w, and unconditional with 1 (dummy interval [0, 1])
            v_cond_fm = call(z_t, t, zero, labels, omega=w_fm, t_min=zero, t_max=ones)[1]
            v_cond = call(z_t, t, zero, labels, omega=w, t_min=zero, t_max=ones)[1]
            v_uncond = call(z_t, t, zero, null, omega=ones, t_min=zero, t_max=ones)[1]
            v_g_fm = v_t + _bcast(1.0 - 1.0 / w_fm) * (v_cond_fm - v_uncond)
            v_g = v_t + _bcast(1.0 - 1.0 / w) * (v_cond - v_uncond)
            v_g = jnp.where(_bcast(fm_rows), v_g_fm, v_g)
            # a dropped label learns the unguided field; the tangent is the conditional v-head (as imf.py)
            return jnp.where(_bcast(drop), v_t, v_g), v_cond

        def net(z, tt, h):
            return call(z, tt, h, y, **guide)

        return imf_loss(net, x, noise, t, r, norm_p=self.norm_p, norm_eps=self.norm_eps, guided=guided)
