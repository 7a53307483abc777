"""The train state and the optimizer (spec §10, §13)."""
from __future__ import annotations

from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import optax


def ema_name(decay: float) -> str:
    """'ema_0.99993', the authors' checkpoint key for an EMA rate."""
    return f'ema_{decay:g}'


class TrainState(flax.struct.PyTreeNode):
    """Everything that changes during training; nothing else is mutable."""
    step: jax.Array
    params: Any
    ema: dict            # {ema_name(decay): params}
    opt_state: Any
    skipped_total: jax.Array       # updates skipped for a non-finite loss or gradient
    skipped_in_a_row: jax.Array
    longest_skip_run: jax.Array    # the most consecutive skips so far: the loop checks it at log steps


def lr_schedule(cfg) -> optax.Schedule:
    """Constant (the paper) or cosine decay, after an optional linear warm-up.

    cfg: the config's `optimizer` group.
    """
    if cfg.decay == 'cosine':
        sched = optax.cosine_decay_schedule(cfg.lr, max(cfg.total_steps - cfg.warmup_steps, 1))
    elif cfg.decay == 'constant':
        sched = optax.constant_schedule(cfg.lr)
    else:
        raise ValueError(f"optimizer.decay {cfg.decay!r}; valid: ('constant', 'cosine')")
    if cfg.warmup_steps:
        sched = optax.join_schedules([optax.linear_schedule(0.0, cfg.lr, cfg.warmup_steps), sched],
                                     [cfg.warmup_steps])
    return sched


OPTIMIZERS = ('radam', 'adamw')


def make_optimizer(cfg) -> optax.GradientTransformation:
    """cfg.kind 'radam' (the paper): RAdam with coupled L2 weight decay (torch.optim.RAdam
    semantics); 'adamw' (MeanFlow's `optax.adamw`): Adam with decoupled weight decay, scaled by
    the learning rate as optax and torch do. Optional clipping of the gradient's global norm."""
    kind = cfg.get('kind', 'radam')   # configs recorded before the key existed are RAdam runs
    if kind not in OPTIMIZERS:
        raise ValueError(f'optimizer.kind {kind!r}; valid: {OPTIMIZERS}')
    parts = []
    if cfg.grad_clip:
        parts.append(optax.clip_by_global_norm(cfg.grad_clip))
    if kind == 'adamw':
        parts.append(optax.scale_by_adam(b1=cfg.b1, b2=cfg.b2, eps=cfg.eps))
        if cfg.weight_decay:
            parts.append(optax.add_decayed_weights(cfg.weight_decay))
        parts.append(optax.scale_by_learning_rate(lr_schedule(cfg)))
        return optax.chain(*parts)
    if cfg.weight_decay:
        parts.append(optax.add_decayed_weights(cfg.weight_decay))
    parts += [optax.scale_by_radam(b1=cfg.b1, b2=cfg.b2, eps=cfg.eps, threshold=5.0),
              optax.scale_by_learning_rate(lr_schedule(cfg))]
    return optax.chain(*parts)


def init_state(params, optimizer, ema_decays) -> TrainState:
    # EMA copies start equal to the initial params (the authors' EMA has no warm-up).
    return TrainState(step=jnp.zeros((), jnp.int32), params=params,
                      ema={ema_name(d): params for d in ema_decays},
                      opt_state=optimizer.init(params),
                      skipped_total=jnp.zeros((), jnp.int32),
                      skipped_in_a_row=jnp.zeros((), jnp.int32),
                      longest_skip_run=jnp.zeros((), jnp.int32))
