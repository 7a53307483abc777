"""Part 4: `coupling.placement='device'` against `'host'`, and the Hungarian alone on the device.

The number that decided the pairing design (lct_jax/data/host_pairing.py): on a GPU each of the
matching's ~4,000 data-dependent loop iterations (at per-device batch 128) costs launches and a
predicate read back, so the Hungarian inside the step was projected to cost about a whole step.
ott-jax PR #656 reports 171 ms for one 256-matching on a GPU.
"""
from __future__ import annotations

import time

import jax
import numpy as np
from common import (  # benchmarks/common.py
    StepRunner,
    host_pairing_seconds,
    paired_batch,
    random_batch,
)

from device_check.basics import Budget, Sizes, build_step, median_seconds
from device_check.steps import paper_config
from lct_jax.data import coupling

OTT_PR_656_SECONDS_256 = 0.171


def placement(mesh, sizes: Sizes, budget: Budget, ctx: dict) -> dict:
    per_device = sizes.step_batches[0]
    host_config = paper_config(sizes, per_device)
    config = host_config.copy_and_resolve_references()
    with config.unlocked():
        config.coupling.placement = 'device'
    state, step = build_step(config, mesh)
    m = config.model
    x = random_batch((config.batch_size, m.img_resolution, m.img_resolution, m.in_channels), mesh)
    compile_s, programs = {}, {}
    for name, lowered in step.lower(state, x).items():
        t0 = time.perf_counter()
        programs[name] = lowered.compile()
        compile_s[name] = time.perf_counter() - t0
    repeats = max(3, sizes.timed_steps // 2)
    pair = programs['pair_noise']
    pair_s, _ = median_seconds(lambda: pair(state.step, x)[0], repeats)
    device_runner = StepRunner(programs, state, x)
    device_step_s, _ = median_seconds(device_runner, repeats, sizes.warmup)
    # The host placement's step is the same update program on a batch the host paired.
    host_runner = StepRunner({'update': programs['update']}, device_runner.state, paired_batch(host_config, mesh, x))
    host_step_s, _ = median_seconds(host_runner, repeats, sizes.warmup)
    host_pair_s = host_pairing_seconds(host_config, mesh, x)
    del device_runner, host_runner, state
    out = {'per_device_batch': per_device, 'dtype': m.dtype, 'compile_seconds': compile_s,
           'device_pair_noise_seconds': pair_s, 'device_placement_step_seconds': device_step_s,
           'host_placement_step_seconds': host_step_s,
           'device_over_host_step': device_step_s / host_step_s,
           'pair_noise_over_host_step': pair_s / host_step_s,
           'host_pairing_seconds_one_call': host_pair_s,
           'host_pairing_hidden': bool(host_pair_s < host_step_s)}
    hungarian = {}
    for b in sizes.hungarian_batches:
        if budget.left() <= 0:
            hungarian[str(b)] = {'skipped': 'time budget spent'}
            continue
        rng = np.random.default_rng(b)
        xb = jax.device_put((0.5 * rng.standard_normal((b, *sizes.latent))).astype(np.float32))
        zb = jax.device_put(rng.standard_normal((b, *sizes.latent)).astype(np.float32))
        f = jax.jit(coupling.exact_permutation)
        t0 = time.perf_counter()
        jax.block_until_ready(f(xb, zb))
        first = time.perf_counter() - t0
        seconds, _ = median_seconds(lambda: f(xb, zb), 3, warmup=0)
        hungarian[str(b)] = {'seconds': seconds, 'first_call_seconds_with_compile': first}
    out['hungarian_alone'] = hungarian
    if '256' in hungarian and 'seconds' in hungarian['256']:
        out['hungarian_256_over_ott_pr_656'] = hungarian['256']['seconds'] / OTT_PR_656_SECONDS_256
    out['verdict'] = ('the Hungarian on the device costs more than the host placement\'s whole step: pairing on '
                      'the host stands' if pair_s >= host_step_s else
                      'the Hungarian on the device costs less than a step: see device_over_host_step before '
                      'keeping the host placement as the default')
    return out
