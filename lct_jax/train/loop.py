"""The training loop: data, state, compiled step, checkpoints, logs, sample grids.

`train(config, workdir)` resumes from the latest checkpoint in the workdir if
there is one. The host never waits on the device except at log, checkpoint
and sample steps.
"""
from __future__ import annotations

import os
import signal
import time

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import multihost_utils

from lct_jax import parallel, sampling
from lct_jax.builders import (
    build_model,
    build_objective,
    check_dataset,
    configured_samplers,
    example_shape,
    make_normalizer,
    num_classes_of,
)
from lct_jax.data import latents as latents_lib
from lct_jax.data.encode import encode_dataset
from lct_jax.data.host_pairing import HostPairer
from lct_jax.data.latents import latent_dir_of
from lct_jax.data.pipeline import HostBatch, InputPipeline
from lct_jax.data.sources import make_source
from lct_jax.images import grid, save_grid
from lct_jax.models.autoencoder import make_codec, to_uint8
from lct_jax.objectives.base import Batch
from lct_jax.progress import Progress
from lct_jax.sampling.spec import class_indices
from lct_jax.train import checkpoints
from lct_jax.train.in_training_evaluation import TrainingEvaluation, protected_steps
from lct_jax.train.metric_writer import MetricWriter
from lct_jax.train.state import init_state, lr_schedule, make_optimizer
from lct_jax.train.step import StepConfig, make_train_step
from lct_jax.workdir import record


class NonFiniteError(RuntimeError):
    pass


class _StopFlag:
    """Set by SIGTERM / SIGINT; the loop then saves the current step and exits."""

    def __init__(self):
        self.signal = None
        self._old = {}

    def install(self):
        for sig in (signal.SIGTERM, signal.SIGINT):
            try:
                self._old[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread (e.g. inside some test runners)
                pass

    def _handle(self, signum, _frame):
        self.signal = signum

    def uninstall(self):
        for sig, old in self._old.items():
            signal.signal(sig, old)

    def should_stop(self, step: int) -> bool:
        if jax.process_count() > 1:
            return multihost_utils.reached_preemption_sync_point(step) or self.signal is not None
        return self.signal is not None


def build_training(config, mesh):
    """(model, objective, initial state, compiled step) for a config, on a mesh."""
    model, objective = build_model(config), build_objective(config)
    opt_cfg = _opt_cfg(config)
    optimizer = make_optimizer(opt_cfg)
    state = make_initial_state(config, model, optimizer, mesh)
    step_fn = make_train_step(model, objective, optimizer, lr_schedule(opt_cfg), step_config(config), mesh,
                              state_sharding=jax.tree_util.tree_map(lambda a: a.sharding, state))
    return model, objective, state, step_fn


def step_config(config) -> StepConfig:
    c = config.coupling
    return StepConfig(config.seed, c.method, c.sinkhorn_epsilon, tuple(config.ema_decays), c.placement)


def make_host_pairer(config, mesh) -> HostPairer | None:
    """The input pipeline's noise + OT pairing (placement 'host'), or None (placement 'device')."""
    c = config.coupling
    if c.placement != 'host':
        return None
    return HostPairer(config.seed, c.method, c.sinkhorn_epsilon, example_shape(config),
                      parallel.process_batch_slice(config.batch_size, mesh),
                      parallel.device_row_slices(config.batch_size, mesh), threads=c.host_threads)


def device_batch(local: HostBatch, mesh) -> Batch:
    """The global `Batch` the step takes, from this process's rows: each field that is there
    placed on the mesh, sharded on 'data' (z and ot_ratio absent with the device placement, the
    labels absent for an unconditional model)."""
    return Batch(*(None if a is None else parallel.global_batch_from_local(a, mesh) for a in local))


def make_initial_state(config, model, optimizer, mesh):
    """The step-0 state, made on the mesh in its training layout: replicated, or FSDP-sharded
    (config.mesh.fsdp), so no device ever holds a full copy of a sharded state."""
    r = config.model.img_resolution

    def init():
        x = jnp.zeros((1, r, r, config.model.in_channels))
        params = model.init(jax.random.key(config.seed), x, jnp.zeros((1,)))['params']
        return init_state(params, optimizer, config.ema_decays)

    return jax.jit(init, out_shardings=state_shardings_of(config, jax.eval_shape(init), mesh))()


def state_shardings_of(config, abstract_state, mesh):
    """The train state's layout for a config: `parallel.state_shardings` with config.mesh's switch."""
    m = config.get('mesh') or {}
    return parallel.state_shardings(abstract_state, mesh, fsdp=bool(m.get('fsdp', False)),
                                    min_size=int(m.get('fsdp_min_size', parallel.FSDP_MIN_SIZE)))


class SampleGrids:
    """Grids of the configured samplers from the configured EMA (or raw params), as PNG:
    1-step and 2-step for a consistency model, the ODE sampler (e.g. Euler 250) for the
    LDM baseline (config.sampling.sampler).

    The samplers are compiled once per run, not at every grid.
    """

    def __init__(self, config, model, objective, codec, normalizer, mesh):
        self.config, self.codec, self.normalizer, self.mesh = config, codec, normalizer, mesh
        d = mesh.devices.size
        n = max(config.sampling.num_grid // d, 1) * d
        self.indices = parallel.shard_host_array(np.arange(n, dtype=np.int32), mesh)
        self.num_classes = num_classes_of(config)
        self.samplers = {
            spec.file_label: sampling.make_spec_sampler(spec, model.apply, objective, example_shape(config),
                                                        config.sampling.seed, mesh, self.num_classes)
            for spec in configured_samplers(config, objective)}
        # A class-conditional model: one grid per class too (the first sampling.class_grids classes),
        # all drawn in one sampler call.
        self.shown_classes = min(self.num_classes, int(config.sampling.get('class_grids', 16)))
        if self.shown_classes:
            self.per_class = -(-max(config.sampling.num_grid // self.shown_classes, 1) // d) * d
            self.class_indices = parallel.shard_host_array(np.concatenate(
                [class_indices(c, self.per_class, self.num_classes) for c in range(self.shown_classes)]),
                mesh)

    def write(self, workdir, step, state, writer=None):
        name = self.config.sampling.ema
        params = state.params if name == 'params' else state.ema.get(name, state.params)
        paths = []
        for label, sampler in self.samplers.items():
            x = _gather(sampler(params, self.indices), f'lct_jax/train/grid/{step}/{label}')
            images = to_uint8(self.codec.decode(jnp.asarray(self.normalizer.denormalize(np.asarray(x)))))
            if jax.process_index() == 0:
                path = os.path.join(workdir, 'samples', f'step_{step:07d}_{label}.png')
                save_grid(path, images)
                paths.append(path)
                if writer is not None:
                    writer.image(step, f'samples/{label}', grid(images))
            if self.shown_classes:
                x = _gather(sampler(params, self.class_indices), f'lct_jax/train/grid/{step}/{label}/classes')
                images = to_uint8(self.codec.decode(jnp.asarray(self.normalizer.denormalize(np.asarray(x)))))
                if jax.process_index() == 0:
                    for c in range(self.shown_classes):
                        path = os.path.join(workdir, 'samples', f'step_{step:07d}_{label}_class{c:03d}.png')
                        save_grid(path, images[c * self.per_class:(c + 1) * self.per_class])
                        paths.append(path)
        return paths


def _gather(x, barrier_name: str) -> np.ndarray:
    """Every process's rows of a sampled batch. The sampler compiles at its first grid, maybe at
    different speeds on different processes: meet at a barrier before the gather's collective."""
    if jax.process_count() > 1:
        jax.block_until_ready(x)
        parallel.barrier(barrier_name)
    return multihost_utils.process_allgather(x, tiled=True)


def close_all(closers, failure: BaseException | None) -> None:
    """Run every (what, close) in order. With no `failure` in flight the first closer's error is
    raised once all have run; with one, closer errors are printed and `failure` goes on."""
    errors = []
    for what, close in closers:
        try:
            close()
        except Exception as e:  # noqa: BLE001 - reported or raised below, after every closer ran
            errors.append((what, e))
    for what, e in errors[0 if failure is not None else 1:]:
        cause = f'after {type(failure).__name__}' if failure is not None else 'also'
        print(f'warning: {what} failed {cause}: {type(e).__name__}: {e}', flush=True)
    if failure is None and errors:
        raise errors[0][1]


def finished_step(config, workdir: str) -> int | None:
    """The step a run already finished at, if this config asks for nothing more: its newest
    checkpoint is at or past total_steps and the config changes no training key of the recorded
    one (a change goes to WriterSession, which refuses it or, allowed, records it)."""
    latest = record.latest_checkpoint_step(workdir)
    recorded = record.recorded_config(workdir) if latest is not None else None
    if latest is None or latest < config.total_steps or recorded is None:
        return None
    changes = record.config_changes(recorded, record.config_as_dict(config))
    if any(record.needs_permission(key, old, new) for key, (old, new) in changes.items()):
        return None
    return latest


def train(config, workdir: str, show_progress: bool = True, on_start=None,
          between_log_steps: str = 'allow') -> dict:
    """Train until config.total_steps (resuming if possible); returns the last metrics.

    on_start(step): called once the start has succeeded (checkpoint restored, or a fresh state
    at step 0), before anything is logged; the run's record is written there, never earlier.
    between_log_steps: the `jax.transfer_guard` level of the steps that log, save, sample and
    evaluate nothing: 'disallow' turns any implicit host transfer there into an error (a test
    proves there is none: the host only feeds batches and dispatches the step).
    """
    mesh = parallel.make_mesh()
    parallel.check_batch_size(config.batch_size, mesh)
    # Config errors surface here, before any data work or compilation.
    build_model(config)
    build_objective(config)
    step_config(config)
    latent_dir = latent_dir_of(config, workdir)
    codec = make_codec(config.autoencoder, image_channels=config.model.in_channels)
    if not os.path.exists(os.path.join(latent_dir, latents_lib.MANIFEST)):
        if jax.process_index() == 0:
            print(f'no encoded dataset in {latent_dir}: encoding it now', flush=True)
        encode_dataset(make_source(config.data), codec, latent_dir, seed=config.seed,
                       batch_size=config.data.encode_batch_size,
                       examples_per_shard=config.data.examples_per_shard, show_progress=show_progress)
    dataset = latents_lib.LatentDataset(latent_dir)
    check_dataset(config, dataset.manifest, latent_dir)
    normalizer = make_normalizer(config, workdir)

    model, objective, state, step_fn = build_training(config, mesh)
    # The in-training evaluation's best checkpoints are never deleted by retention.
    protected = (lambda: protected_steps(workdir)) if config.evaluation.get('every') else None
    manager = checkpoints.make_manager(workdir, config.train.keep_checkpoints, config.train.keep_period,
                                       protected=protected)
    state, restored = checkpoints.restore_latest(manager, state, config.train.restore_fallback)
    if restored is not None and jax.process_index() == 0:
        print(f'resumed from {workdir}/checkpoints/{restored}', flush=True)
    start = int(state.step)
    if on_start is not None:
        on_start(start)
    writer = MetricWriter(workdir, start_step=start)  # moves aside rows logged after `start`
    grids = SampleGrids(config, model, objective, codec, normalizer, mesh)
    evals = TrainingEvaluation(config, workdir, mesh, start)  # evaluation.every
    stop = _StopFlag()
    stop.install()
    progress = Progress('train', config.total_steps, start=start, unit='steps',
                        enabled=show_progress and jax.process_index() == 0)
    last_metrics, t_log, step_log = {}, time.time(), start
    step = saved = start
    # Created last, just before the try: its reader and pairing threads are stopped on every exit path.
    pipeline = InputPipeline(dataset, normalizer, config.batch_size, config.seed,
                             parallel.process_batch_slice(config.batch_size, mesh), start_step=start,
                             prefetch=config.train.prefetch, pairer=make_host_pairer(config, mesh),
                             labels=num_classes_of(config) > 0,
                             read_processes=int(config.train.get('reader_processes', 0)))
    try:
        if evals.pending_at_start():  # stopped after the checkpoint, before its evaluation
            evals.run(start, state, writer)
        first = None
        if jax.process_count() > 1 and step < config.total_steps:
            # Compile before the first collective, then wait for every process: the step's
            # collectives must not wait for a peer that is still compiling (parallel.barrier).
            first = device_batch(next(pipeline), mesh)
            step_fn.compile_for(state, first)
            parallel.barrier(f'lct_jax/train/step_compiled/{start}')
        with jax.transfer_guard(between_log_steps):
            while step < config.total_steps:
                if first is not None:
                    batch, first = first, None
                else:
                    batch = device_batch(next(pipeline), mesh)
                state, metrics = step_fn(state, batch)
                step += 1
                if step == start + 1:  # the first call compiled the step: rates and the ETA start here
                    progress.restart_clock(step)
                    t_log, step_log = time.time(), step
                log_now = step % config.log_every == 0 or step == config.total_steps
                eval_now = evals.due(step)  # an evaluation step is a checkpoint step: the best record names one
                save_now = step % config.checkpoint_every == 0 or step == config.total_steps or eval_now
                grid_now = step % config.sample_every == 0 or step == config.total_steps
                stop_now = stop.should_stop(step)
                if not (log_now or save_now or grid_now or stop_now):
                    continue
                with jax.transfer_guard('allow'):  # the only places the host waits for the device
                    _check_skips(int(state.longest_skip_run), config.train.max_skips_in_a_row, manager)
                    if log_now:
                        m = jax.device_get(metrics)
                        now = time.time()
                        rate = (step - step_log) / max(now - t_log, 1e-9)
                        t_log, step_log = now, step
                        m = dict(m, steps_per_sec=rate, examples_per_sec=rate * config.batch_size)
                        writer.scalars(step, m)
                        last_metrics = m
                        progress.update(step, _progress_text(m), force=True)
                    if save_now:
                        checkpoints.save(manager, step, state)
                        saved = step
                    if eval_now:
                        evals.run(step, state, writer)
                    if grid_now:
                        grids.write(workdir, step, state, writer)
                    if stop_now:
                        if saved != step:
                            checkpoints.save(manager, step, state, force=True)
                        if jax.process_index() == 0:
                            print(f'stopped by signal at step {step}; checkpoint saved', flush=True)
                        break
    except BaseException as e:
        failure = e
        raise
    else:
        failure = None
    finally:
        # Every closer runs whatever the others do (the input threads must stop even if the disk
        # is full), and a failing closer never hides the error that ended the loop.
        close_all([('finishing checkpoint saves', lambda: checkpoints.wait(manager)),
                   ('closing the progress line', progress.close), ('closing the metric files', writer.close),
                   ('stopping the input pipeline', pipeline.close), ('restoring signal handlers', stop.uninstall)],
                  failure)
    last_metrics['trace_count'] = step_fn.trace_count()
    last_metrics['final_step'] = step
    return last_metrics


def _progress_text(m: dict) -> str:
    """The progress line's metrics. `ct/w` is the consistency loss over its batch's mean weight:
    the weights 1 / (sigma_i - sigma_{i+1}) grow as N refines the grid, so the raw loss rises
    through the curriculum while ct/w stays comparable across stages."""
    parts = [f'loss {float(m["loss"]):.4g}']
    if 'ct_loss_per_weight' in m:
        parts.append(f'ct/w {float(m["ct_loss_per_weight"]):.4g}')
    if 'num_scales' in m:
        parts.append(f'N {int(m["num_scales"])}')
    parts.append(f'skipped {int(m["skipped_total"])}')
    return ' '.join(parts)


def _check_skips(longest_run: int, limit: int, manager):
    if longest_run >= limit:
        raise NonFiniteError(
            f'{longest_run} consecutive steps had a non-finite loss, gradient or update '
            f'(max_skips_in_a_row={limit}); stopping. Skipped steps leave the parameters '
            f'unchanged; the latest checkpoint is {manager.latest_step()}.')


def _opt_cfg(config):
    cfg = config.optimizer.copy_and_resolve_references()
    with cfg.unlocked():
        cfg.total_steps = config.total_steps
    return cfg
