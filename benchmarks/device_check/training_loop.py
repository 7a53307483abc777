"""Part 5: the real training loop on this machine (input pipeline with reader processes, pairing
threads on its CPU cores, prefetch) for a few hundred paper steps, and the whole host pipeline's
rate on its cores: the measured version of host_pairing_headroom / host_pipeline_headroom."""
from __future__ import annotations

import json
import os
import tempfile
import time

import host_pipeline  # benchmarks/host_pipeline.py
import jax
import numpy as np
from common import StepRunner, paired_batch, random_batch

from device_check.basics import Budget, Sizes, build_step, median_seconds
from device_check.steps import paper_config
from lct_jax.data import pipeline as pipeline_lib
from lct_jax.train import loop


class _TimedPipeline(pipeline_lib.InputPipeline):
    """The loop's input pipeline, timing how long each `next` makes the loop wait."""
    waits: list = []

    def __next__(self):
        t0 = time.perf_counter()
        batch = super().__next__()
        _TimedPipeline.waits.append(time.perf_counter() - t0)
        return batch


def training_loop(mesh, sizes: Sizes, budget: Budget, ctx: dict) -> dict:
    cores = sorted(os.sched_getaffinity(0))
    dtype = 'float32' if sizes.smoke else 'bfloat16'   # bf16: the fastest step asks the most of the host
    config = paper_config(sizes, sizes.step_batches[0], dtype)
    # enough rows for the loop's batches and for the host pipeline's one block of 128 per core
    n = max(4 * config.batch_size, 2 * host_pipeline.PER_DEVICE_BATCH * len(cores), 0 if sizes.smoke else 4096)
    data = host_pipeline.write_latents(tempfile.mkdtemp(prefix='lct_check_latents_'), n,
                                       shape=(config.model.img_resolution,) * 2 + (config.model.in_channels,))
    readers = max(1, min(8, len(cores) // 2))
    with config.unlocked():
        config.total_steps, config.log_every = sizes.loop_steps, sizes.loop_log_every
        config.checkpoint_every = config.sample_every = sizes.loop_steps
        config.data.update(latent_dir=data, expected_count=n)
        config.autoencoder.kind = 'identity'          # grids of latents: no VAE weights on the machine
        config.sampling.num_grid = jax.device_count()
        config.train.reader_processes = readers
    # The whole host pipeline on this machine's cores first: it is what decides whether a host keeps up.
    host = host_pipeline_rate(data, cores, sizes)
    workdir = tempfile.mkdtemp(prefix='lct_check_loop_')
    _TimedPipeline.waits = []
    original, loop.InputPipeline = loop.InputPipeline, _TimedPipeline
    t0 = time.perf_counter()
    try:
        loop.train(config, workdir, show_progress=False)
    except Exception as e:  # the host's numbers stay in the results beside the failure
        e.partial = {'host_pipeline': host}
        raise
    finally:
        loop.InputPipeline = original
    wall = time.perf_counter() - t0
    rows = [json.loads(line) for line in open(os.path.join(workdir, 'metrics.jsonl'))]
    loop_s = float(np.median([1.0 / r['steps_per_sec'] for r in rows[1:]])) if len(rows) > 1 \
        else 1.0 / rows[-1]['steps_per_sec']
    # The loop's thread's time inside next(pipeline), the first call left out (it starts the readers and
    # waits for the first pairing): while it waits, nothing new is dispatched to the device.
    waits = _TimedPipeline.waits[1:]
    state, step = build_step(config, mesh)
    m = config.model
    x = random_batch((config.batch_size, m.img_resolution, m.img_resolution, m.in_channels), mesh)
    step_s, _ = median_seconds(StepRunner({'update': step.update}, state, paired_batch(config, mesh, x)),
                               sizes.timed_steps, sizes.warmup)
    del state
    consumed_per_device = config.batch_size / jax.device_count() / step_s
    out = {'steps': config.total_steps, 'dtype': dtype, 'global_batch': config.batch_size, 'wall_seconds': wall,
           'reader_processes': readers, 'host_cores': len(cores),
           'loop_seconds_per_step': loop_s, 'step_seconds_alone': step_s, 'loop_over_step': loop_s / step_s,
           'input_wait_seconds_total': float(np.sum(waits)), 'input_wait_seconds_per_step': float(np.mean(waits)),
           'input_wait_fraction_of_loop': float(np.sum(waits)) / (loop_s * len(waits)) if waits else 0.0}
    out['host_pipeline'] = dict(host, **headroom_of(host, consumed_per_device))
    return out


def host_pipeline_rate(data: str, cores: list, sizes: Sizes) -> dict:
    """benchmarks/host_pipeline.py on this machine: one core, then every core with reader processes."""
    steps = 3 if sizes.smoke else 20
    # (the smoke run skips the one-core process: its code is the every-core one's)
    one = host_pipeline.measure(data, cores[:1], 0, steps) if not sizes.smoke else None
    every = host_pipeline.measure(data, cores, len(cores), steps)
    return {'one_core': one, 'all_cores_reader_processes': every,
            'examples_per_s_per_busy_core': every['examples_per_cpu_second'],
            'examples_per_s_all_cores_busy': every['examples_per_s']}


def headroom_of(host: dict, consumed_per_device: float) -> dict:
    """The measured host_pipeline_headroom: this host's rate over 8 of this accelerator's consumption."""
    per_8 = 8 * consumed_per_device
    return {'accelerator_consumes_examples_per_s_measured': consumed_per_device,
            'eight_accelerators_consume_examples_per_s': per_8,
            'measured_headroom_all_cores': host['examples_per_s_all_cores_busy'] / per_8,
            'measured_headroom_16_cores': 16 * host['examples_per_s_per_busy_core'] / per_8,
            'note': 'the step measured alone on this accelerator (the loop\'s config), times 8 for an 8-GPU '
                    'host; the host rate measured on this machine\'s cores, one device block of 128 per core'}
