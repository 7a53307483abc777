"""The pure, jitted train step: (state, batch) -> (state, metrics) (spec §11).

The device runs one `jax.jit` program over the mesh, `update` (loss,
gradient, RAdam, EMAs, skip logic), the batch sharded on 'data', the state
replicated (or FSDP-sharded on 'data': `state_sharding`) and donated. The
gradient of the mean loss over the global batch is the all-device average, so
XLA inserts the all-reduce. The noise and its
OT pairing come with the batch: by default the host draws and pairs them in
the input pipeline, steps ahead (`coupling.placement='host'`,
`lct_jax.data.host_pairing`), so the device program holds no data-dependent
loop; with `placement='device'` a second program, `pair_noise`, does it on
the mesh first (`coupling.couple_per_device`). Every schedule is a function
of `state.step` inside the step, and the RNG is `fold_in(seed, step)`, so a
resumed run is the same run.

Non-finite policy: if the loss or any gradient is not finite, or the update
would write a non-finite parameter or optimizer moment, the update is skipped
inside the compiled step (params, optimizer state and EMAs are kept; the step
counter still advances, as the authors' loader still consumes the batch), and
`skipped_total` / `skipped_in_a_row` / `longest_skip_run` count it. The loop stops the run at the first log or checkpoint step after a run of
`max_skips_in_a_row` consecutive skips (checked there, so the host never waits
on the device between log steps; skipped steps leave the parameters as they
were, so nothing is lost by the delay).
"""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import optax

from lct_jax import parallel
from lct_jax.data import coupling
from lct_jax.objectives.base import Batch, Objective
from lct_jax.step_rng import step_keys, step_noise
from lct_jax.train.state import TrainState


@dataclasses.dataclass(frozen=True)
class StepConfig:
    seed: int
    coupling: str = 'exact'
    sinkhorn_epsilon: float = 0.01
    ema_decays: tuple = (0.9999, 0.99993)
    placement: str = 'host'          # where the noise is drawn and OT-paired: 'host' | 'device'

    def __post_init__(self):
        if self.coupling not in coupling.METHODS:
            raise ValueError(f'unknown coupling method {self.coupling!r}; valid: {coupling.METHODS}')
        if self.placement not in coupling.PLACEMENTS:
            raise ValueError(f'unknown coupling placement {self.placement!r}; valid: {coupling.PLACEMENTS}')


def make_train_step(model, objective: Objective, optimizer: optax.GradientTransformation,
                    lr_schedule, step_cfg: StepConfig, mesh, state_sharding=None):
    """The compiled train step; `.trace_count()` says how many times it was traced.

    state_sharding: the state's shardings (a pytree of them, `parallel.state_shardings`), kept
    from step to step; None = replicated. FSDP needs nothing else: XLA gathers sharded weights
    where the network uses them.

    `objective.loss(params, model, batch, key, step) -> (loss, metrics)` is what is differentiated,
    the same code for every objective (objectives/base.py). With the host placement the step is
    the `update` program alone, called on a full `Batch`; with the device placement `pair_noise`
    (draw z, OT-pair it on each device) runs first, as a separate program dispatched back to back
    with no host round trip: fused into one program, XLA's CPU backend ran the Hungarian
    while-loop about 300x slower than alone (0.35 s against 1 ms at batch 8 next to the reduced
    paper UNet; benchmarks/README.md).
    """
    traces = {'update': 0}
    batch_sharding = parallel.batch_sharding(mesh)
    repl = parallel.replicated(mesh)
    state_sh = repl if state_sharding is None else state_sharding

    def pair_noise(step, x):
        traces['pair_noise'] += 1
        rows = jnp.arange(x.shape[0], dtype=jnp.int32)
        z = jax.lax.with_sharding_constraint(step_noise(step_cfg.seed, step, rows, x.shape[1:]), batch_sharding)
        return coupling.couple_per_device(x, z, mesh, parallel.DATA_AXIS, step_cfg.coupling,
                                          step_cfg.sinkhorn_epsilon)

    def update(state: TrainState, batch: Batch):
        traces['update'] += 1
        _, loss_key = step_keys(step_cfg.seed, state.step)
        grad_fn = jax.value_and_grad(objective.loss, has_aux=True)
        (loss, metrics), grads = grad_fn(state.params, model, batch, loss_key, state.step)
        # The guard reads norms the metrics log anyway, not a finiteness reduction per tree: a norm is
        # finite iff every element is finite and no square overflows (|x| < 1.8e19), so it also skips
        # an update of astronomical size. Three norms instead of five finiteness reductions cut the
        # guard's compile cost from ~0.3 s to ~0.1 s (benchmarks/README.md, "the non-finite guard").
        grad_norm = optax.global_norm(grads)
        finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)

        def apply_update(_):
            updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
            params = optax.apply_updates(state.params, updates)
            update_norm, param_norm = optax.global_norm(updates), optax.global_norm(params)

            def commit(_):
                ema = {name: jax.tree_util.tree_map(lambda e, p, d=_decay(name): d * e + (1.0 - d) * p, old, params)
                       for name, old in state.ema.items()}
                return params, opt_state, ema, update_norm, param_norm, jnp.bool_(True)

            # what the update would write, checked too: a finite gradient can still take a weight past
            # float32's range (a huge learning rate). The optimizer's moments need no check of their
            # own: both optimizers (train/state.py) keep running means of g and g^2, finite when the
            # gradient's norm is (its square is their sum), and the EMAs are convex mixes of finite
            # weights. checkpoints.save still checks every element of the whole state, exactly.
            return jax.lax.cond(jnp.isfinite(update_norm) & jnp.isfinite(param_norm), commit, keep_old, None)

        def keep_old(_):
            return (state.params, state.opt_state, state.ema, jnp.float32(0.0), optax.global_norm(state.params),
                    jnp.bool_(False))

        # A cond, not per-leaf selects: with selects XLA's CPU compile of the paper-size step did
        # not finish in 14 minutes (benchmarks/README.md); the cond compiles in about 2.
        params, opt_state, ema, update_norm, param_norm, applied = jax.lax.cond(finite, apply_update, keep_old, None)
        skipped = (~applied).astype(jnp.int32)
        in_a_row = jnp.where(applied, 0, state.skipped_in_a_row + 1)
        new_state = state.replace(
            step=state.step + 1, params=params, opt_state=opt_state, ema=ema,
            skipped_total=state.skipped_total + skipped, skipped_in_a_row=in_a_row,
            longest_skip_run=jnp.maximum(state.longest_skip_run, in_a_row))
        metrics = dict(metrics, grad_norm=grad_norm, param_norm=param_norm, update_norm=update_norm,
                       learning_rate=lr_schedule(state.step), ot_cost_ratio=jnp.mean(batch.ot_ratio),
                       skipped=skipped, skipped_total=new_state.skipped_total,
                       skipped_in_a_row=in_a_row, longest_skip_run=new_state.longest_skip_run)
        return new_state, metrics

    pair_jitted = None
    if step_cfg.placement == 'device':
        traces['pair_noise'] = 0
        pair_jitted = jax.jit(pair_noise, in_shardings=(repl, batch_sharding),
                              out_shardings=(batch_sharding, batch_sharding))
    # The old state's buffers become the new state's (no output has the batch's shape, so
    # donating the batch would only raise XLA's "not usable" warning). The batch's sharding is a
    # prefix of the Batch: every field (and the labels, when there are any) on 'data'.
    update_jitted = jax.jit(update, in_shardings=(state_sh, batch_sharding),
                            out_shardings=(state_sh, repl), donate_argnums=(0,))
    return CompiledStep(pair_jitted, update_jitted, traces)


class CompiledStep:
    """The step's device programs, plus a count of their traces (a retrace means a recompile).

    `step(state, batch)` with a `Batch`: the host placement's carries its paired noise and runs
    `update`; the device placement's has z = ot_ratio = None, and `pair_noise` fills them first.
    """

    def __init__(self, pair_noise, update, traces):
        self.pair_noise, self.update, self._traces = pair_noise, update, traces

    @property
    def pairs_on_device(self) -> bool:
        return self.pair_noise is not None

    def __call__(self, state, batch: Batch):
        if self.pair_noise is not None:
            z, ot_ratio = self.pair_noise(state.step, batch.x)
            batch = batch._replace(z=z, ot_ratio=ot_ratio)
        return self.update(state, batch)

    def lower(self, state, batch) -> dict:
        """{program name: lowered program} of what the step dispatches to the mesh, for AOT
        compilation and XLA's analyses; `batch` a `Batch` that may be abstract (ShapeDtypeStructs)
        and need not carry z and ot_ratio, or just its x (an unconditional model)."""
        if not isinstance(batch, Batch):
            batch = Batch(batch, None, None)
        x = batch.x
        z = jax.ShapeDtypeStruct(x.shape, jnp.float32, sharding=x.sharding)
        ratio = jax.ShapeDtypeStruct(x.shape[:1], jnp.float32, sharding=x.sharding)
        programs = {'update': self.update.lower(state, Batch(x, z, ratio, batch.labels))}
        if self.pair_noise is not None:
            programs = {'pair_noise': self.pair_noise.lower(state.step, x), **programs}
        return programs

    def compile_for(self, state, batch: Batch) -> None:
        """Compile every program for this (state, batch) now, not at the first call: the call then
        runs the compiled programs without tracing or compiling again. The loop uses it to meet the
        other processes only once all have compiled (see `parallel.barrier`)."""
        for program in self.lower(state, batch).values():
            program.compile()

    def trace_count(self) -> int:
        """The most traces of any program: 1 when none ever recompiled."""
        return max(self._traces.values())


def _decay(name: str) -> float:
    return float(name.split('_', 1)[1])
