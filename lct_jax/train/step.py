"""The pure, jitted train step: (state, batch) -> (state, metrics) (spec §11).

One `jax.jit` over the mesh: the batch sharded on 'data', the state
replicated and donated. The gradient of the mean loss over the global batch
is the all-device average, so XLA inserts the all-reduce; only the OT
coupling runs per device (`coupling.couple_per_device`). Every schedule is a
function of `state.step` inside the step, and the RNG is
`fold_in(seed, step)`, so a resumed run is the same run.

Non-finite policy: if the loss or any gradient is not finite, the update is
skipped inside the compiled step (params, optimizer state and EMAs are kept;
the step counter still advances, as the authors' loader still consumes the
batch), and `skipped_total` / `skipped_in_a_row` count it. The loop stops
the run after `max_skips_in_a_row` consecutive skips.
"""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import optax

from lct_jax import coupling, parallel
from lct_jax.objective import Objective, slct_loss
from lct_jax.train.state import TrainState


@dataclasses.dataclass(frozen=True)
class StepConfig:
    seed: int
    coupling: str = 'exact'
    sinkhorn_epsilon: float = 0.01
    ema_decays: tuple = (0.9999, 0.99993)

    def __post_init__(self):
        if self.coupling not in coupling.METHODS:
            raise ValueError(f'unknown coupling method {self.coupling!r}; valid: {coupling.METHODS}')


def _all_finite(tree):
    leaves = jax.tree_util.tree_leaves(tree)
    return jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in leaves]))


def make_train_step(model, objective: Objective, optimizer: optax.GradientTransformation,
                    lr_schedule, step_cfg: StepConfig, mesh):
    """The compiled train step; `.trace_count()` says how many times it was traced."""
    traces = [0]
    batch_sharding = parallel.batch_sharding(mesh)

    def train_step(state: TrainState, batch):
        traces[0] += 1
        key = jax.random.fold_in(jax.random.key(step_cfg.seed), state.step)
        noise_key, loss_key = jax.random.split(key)
        # threefry is partitionable: the same z for any device count.
        z = jax.lax.with_sharding_constraint(
            jax.random.normal(noise_key, batch.shape, jnp.float32), batch_sharding)
        z, ot_ratio = coupling.couple_per_device(batch, z, mesh, parallel.DATA_AXIS,
                                                 step_cfg.coupling, step_cfg.sinkhorn_epsilon)
        grad_fn = jax.value_and_grad(slct_loss, has_aux=True)
        (loss, metrics), grads = grad_fn(state.params, model.apply, batch, z, loss_key,
                                         state.step, objective)
        finite = jnp.isfinite(loss) & _all_finite(grads)

        def apply_update(_):
            updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
            params = optax.apply_updates(state.params, updates)
            ema = {name: jax.tree_util.tree_map(lambda e, p, d=_decay(name): d * e + (1.0 - d) * p,
                                                old, params)
                   for name, old in state.ema.items()}
            return params, opt_state, ema, optax.global_norm(updates)

        def skip_update(_):
            return state.params, state.opt_state, state.ema, jnp.float32(0.0)

        # A cond, not per-leaf selects: with selects XLA's CPU compile of the paper-size step did
        # not finish in 14 minutes (benchmarks/README.md); the cond compiles in about 2.
        params, opt_state, ema, update_norm = jax.lax.cond(finite, apply_update, skip_update, None)
        skipped = (~finite).astype(jnp.int32)
        new_state = state.replace(
            step=state.step + 1, params=params, opt_state=opt_state, ema=ema,
            skipped_total=state.skipped_total + skipped,
            skipped_in_a_row=jnp.where(finite, 0, state.skipped_in_a_row + 1))
        metrics = dict(metrics, grad_norm=optax.global_norm(grads),
                       param_norm=optax.global_norm(params), update_norm=update_norm,
                       learning_rate=lr_schedule(state.step), ot_cost_ratio=ot_ratio,
                       skipped=skipped, skipped_total=new_state.skipped_total,
                       skipped_in_a_row=new_state.skipped_in_a_row)
        return new_state, metrics

    repl = parallel.replicated(mesh)
    jitted = jax.jit(train_step, in_shardings=(repl, batch_sharding), out_shardings=(repl, repl),
                     donate_argnums=(0,))
    return CompiledStep(jitted, traces)


class CompiledStep:
    """The jitted step plus a count of its traces (a retrace would mean a recompile)."""

    def __init__(self, jitted, traces):
        self.jitted, self._traces = jitted, traces

    def __call__(self, state, batch):
        return self.jitted(state, batch)

    def trace_count(self) -> int:
        return self._traces[0]


def _decay(name: str) -> float:
    return float(name.split('_', 1)[1])
