"""The OT coupling's cost: each solver against the per-device batch (`ot_seconds`), and the
device placement's pairing program over the paper step (`ot_fraction`)."""
from __future__ import annotations

import time

import jax
from common import (
    StepRunner,
    host_pairing_seconds,
    paired_batch,
    paper_config,
    random_batch,
    timeit,
)

from lct_jax import hlo
from lct_jax.data import coupling
from lct_jax.train import loop


def ot_times(batches=(16, 32, 64, 128, 256), dim=(32, 32, 4)):
    out = {}
    for method in ('exact', 'sinkhorn'):
        f = jax.jit(lambda x, z, m=method: coupling.couple(x, z, m)[0])
        for b in batches:
            x = 0.5 * jax.random.normal(jax.random.key(0), (b, *dim))
            z = jax.random.normal(jax.random.key(1), (b, *dim))
            out[f'{method}_{b}'] = timeit(f, x, z, repeats=3)
    return out


def paper_step(mesh, per_device_batch, run_batch):
    """The paper's own step at `run_batch` (its update program, host placement), against the device
    placement's pair_noise program and the host's pairing at `per_device_batch`.

    All measured (one timed step after a warm-up: a paper step takes minutes on a CPU). When
    run_batch < per_device_batch (the step at 128 needs more memory than this machine has),
    the step time is scaled linearly in the batch, and labelled so.
    """
    def build(b, placement):
        config = paper_config(b * mesh.devices.size)
        with config.unlocked():
            config.coupling.placement = placement
        _, _, state, step = loop.build_training(config, mesh)
        return config, state, step, random_batch((config.batch_size, 32, 32, 4), mesh)

    config, state, step, batch = build(per_device_batch, 'device')
    pair = step.lower(state, batch)['pair_noise'].compile()
    pair_s = timeit(lambda b: pair(state.step, b)[0], batch, repeats=5)
    # the host's pairing needs the host placement's config (the device one has no host pairer)
    host_s = host_pairing_seconds(paper_config(per_device_batch * mesh.devices.size), mesh, batch)
    del state, step
    config, state, step, batch = build(run_batch, 'host')
    t0 = time.perf_counter()
    update = step.lower(state, batch)['update'].compile()
    compile_s = time.perf_counter() - t0
    run_s = timeit(StepRunner({'update': update}, state, paired_batch(config, mesh, batch)), repeats=1)
    step_s = run_s * per_device_batch / run_batch
    return {'per_device_batch': per_device_batch, 'device_pair_noise_seconds': pair_s,
            'host_pairing_seconds': host_s, 'measured_batch': run_batch,
            'measured_step_seconds': run_s, 'update_compile_seconds': compile_s,
            'update_data_dependent_while_loops': hlo.count_data_dependent_while_loops(update),
            'step_seconds': step_s, 'step_extrapolated': run_batch != per_device_batch,
            'ot_fraction': pair_s / step_s, 'ot_fraction_host_placement': 0.0}


SECTIONS = {
    'ot_seconds': (lambda r, mesh, q: {'ot_seconds': ot_times()}, False),
    # The paper step at per-device batch 128 needs about 25 GB with its temporaries: on a CPU with less,
    # its update is run at 32 and scaled linearly (labelled so); the pairing runs at 128.
    'ot_fraction': (lambda r, mesh, q: {'ot_fraction': paper_step(
        mesh, 128, 128 if jax.default_backend() != 'cpu' else 32)}, True),
}
