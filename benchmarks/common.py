"""Helpers shared by the measurements (benchmarks/sections/*) and the accelerator check.

Timing (medians after warm-up, blocked until ready), the step's device programs run on a carried
state, a host-paired batch as the input pipeline hands it over, and the analytic FLOPs of the
UNet's forward (what MFU is counted against where XLA's own count is not at hand).
"""
from __future__ import annotations

import time

import jax
import jax.numpy as jnp
import numpy as np

from configs import celebahq256
from lct_jax import parallel
from lct_jax.data.pipeline import HostBatch
from lct_jax.models.unet import unet_layout
from lct_jax.train import loop
from lct_jax.objectives.base import Batch


def timeit(fn, *args, repeats=5, warmup=1):
    """Median seconds of fn(*args) (blocked until ready), after warm-up calls."""
    for _ in range(warmup):
        jax.block_until_ready(fn(*args))
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def timeit_side_by_side(fns, repeats=7, warmup=1):
    """Median seconds of each zero-argument fn, their calls interleaved so that both see the same load."""
    for _ in range(warmup):
        for fn in fns.values():
            jax.block_until_ready(fn())
    times = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            jax.block_until_ready(fn())
            times[name].append(time.perf_counter() - t0)
    return {name: float(np.median(t)) for name, t in times.items()}


def random_batch(shape, mesh):
    """A fixed batch shaped like normalised latents (std 0.5), sharded over the mesh."""
    return jax.device_put(0.5 * jax.random.normal(jax.random.key(1), shape), parallel.batch_sharding(mesh))


class StepRunner:
    """What the loop dispatches to the device for one step, on a carried state; returns the loss.

    programs: {'update': ...} (host placement: `batch` is a full `Batch`) or {'pair_noise': ...,
    'update': ...} (device placement: `batch` is x). Takes the programs apart so they can be
    AOT-compiled ones.
    """

    def __init__(self, programs, state, batch):
        self.programs, self.state, self.batch = programs, state, batch

    def __call__(self):
        if 'pair_noise' in self.programs:
            z, ratio = self.programs['pair_noise'](self.state.step, self.batch)
            batch = Batch(self.batch, z, ratio)
        else:
            batch = self.batch
        self.state, metrics = self.programs['update'](self.state, batch)
        return metrics['loss']


def paired_batch(config, mesh, x, step=0):
    """x with its noise drawn and OT-paired on the host, as the input pipeline hands it to the step."""
    pairer = loop.make_host_pairer(config, mesh)
    try:
        x = np.asarray(x)
        return loop.device_batch(HostBatch.of(x, pairer, step), mesh)
    finally:
        pairer.close()


def host_pairing_seconds(config, mesh, x, repeats=5):
    """Median seconds of the host's noise + OT pairing of one global batch (this process's rows)."""
    pairer = loop.make_host_pairer(config, mesh)
    x = np.asarray(x)
    try:
        pairer(0, x)
        times = []
        for step in range(1, repeats + 1):
            t0 = time.perf_counter()
            pairer(step, x)
            times.append(time.perf_counter() - t0)
        return float(np.median(times))
    finally:
        pairer.close()


def matmul_peak(n=2048):
    """Measured float32 matmul FLOP/s of this backend (an n x n product)."""
    a = jnp.ones((n, n), jnp.float32)
    f = jax.jit(lambda x: x @ x)
    return 2 * n**3 / timeit(f, a, repeats=10)


def paper_config(batch):
    """The paper's recipe (configs/celebahq256.py) at global batch `batch`."""
    c = celebahq256.get_config()
    with c.unlocked():
        c.batch_size = batch
    return c


def analytic_forward_flops(config, batch):
    """Multiply-adds x 2 of the UNet forward: convolutions, dense layers, attention."""
    m = config.model
    conv_ch, enc, dec = unet_layout(m.img_resolution, m.in_channels, m.model_channels, tuple(m.channel_mult),
                                    m.num_blocks, tuple(m.attn_resolutions))
    r = m.img_resolution
    emb = m.model_channels * 4
    f = 2 * r * r * m.in_channels * conv_ch * 9 + 2 * (m.model_channels * emb + emb * emb)
    for s in enc + dec:
        hw = s.resolution ** 2
        f += 2 * hw * s.in_channels * s.out_channels * 9 + 2 * hw * s.out_channels**2 * 9
        f += 2 * emb * 2 * s.out_channels
        if s.in_channels != s.out_channels:
            f += 2 * hw * s.in_channels * s.out_channels
        if s.attention:
            c = s.out_channels
            f += 2 * hw * c * 3 * c + 2 * 2 * hw * hw * c + 2 * hw * c * c
    f += 2 * r * r * m.model_channels * m.out_channels * 9
    return batch * f
