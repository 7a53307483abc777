"""Noise and minibatch OT pairing on the host, in the input pipeline, ahead of the device.

Why here: the exact pairing (ott-jax's Hungarian) is a sequential while-loop
of thousands of data-dependent iterations (about 3,400 + 600 at per-device
batch 128, `benchmarks/README.md`). On a CPU core that is ~10 ms; on a GPU each
iteration pays kernel launches and a predicate read back to the host, so the
same loop inside the step would cost about as much as the network itself. The
authors pair on the host CPU too (POT's `ot.emd`), but synchronously before
each step; here the input pipeline does it `train.prefetch` steps ahead, in a
pool of threads (one matching per local device, in parallel), and the device
receives (x, z paired, cost ratio) and runs the update alone.

What it computes is exactly what `placement='device'` computes on the mesh:
the noise of each global row from `step_rng.step_noise`, paired on each
device's own rows with `coupling.couple_rows`, jitted on the host's CPU
backend (`jax.local_devices(backend='cpu')`, there beside any accelerator).
"""
from __future__ import annotations

import concurrent.futures
import os

import jax
import numpy as np

from lct_jax.data import coupling
from lct_jax.step_rng import step_noise


class HostPairer:
    """`pairer(step, x_local) -> (z_paired, ot_ratio_rows)` for this process's rows of a global batch.

    x_local: this process's rows `process_rows` of the global batch of `step`
    (what the input pipeline reads); `device_rows`: the global rows each of
    this process's devices holds (each is paired on its own, as on the mesh).
    """

    def __init__(self, seed: int, method: str, epsilon: float, example_shape, process_rows: slice,
                 device_rows, threads: int = 0, cpu_device=None):
        if method not in coupling.METHODS:
            raise ValueError(f'unknown coupling method {method!r}; valid: {coupling.METHODS}')
        self.method = method
        # this process's own CPU device (jax.devices('cpu') lists every process's devices)
        self.cpu = cpu_device or jax.local_devices(backend='cpu')[0]
        self.rows = np.arange(process_rows.start, process_rows.stop, dtype=np.int32)
        base = process_rows.start
        self.local_slices = sorted((slice(s.start - base, s.stop - base) for s in device_rows),
                                   key=lambda s: s.start)
        shape = tuple(example_shape)
        self._noise = jax.jit(lambda step, rows: step_noise(seed, step, rows, shape))
        self._couple = jax.jit(lambda x, z: coupling.couple_rows(x, z, method, epsilon))
        threads = threads or min(len(self.local_slices), os.cpu_count() or 1)
        self._pool = concurrent.futures.ThreadPoolExecutor(threads, thread_name_prefix='lct-pairing')

    def noise(self, step: int, rows: slice = slice(None)) -> np.ndarray:
        """The unpaired noise of this process's rows (or of `rows` of them) at `step`."""
        on_cpu = jax.device_put((np.int32(step), self.rows[rows]), self.cpu)
        return np.asarray(self._noise(*on_cpu))

    def _device_block(self, step: int, rows: slice, x: np.ndarray):
        """Noise and pairing of one device's rows: one thread's job."""
        z = self.noise(step, rows)
        if self.method == 'none':
            return z, np.ones((len(x),), np.float32)
        paired, ratio = self._couple(*jax.device_put((x, z), self.cpu))
        return np.asarray(paired), np.asarray(ratio)

    def __call__(self, step: int, x_local: np.ndarray):
        """(z paired to x_local, per-row cost ratio): each device's rows drawn and paired on their
        own, in parallel."""
        futures = [self._pool.submit(self._device_block, step, s, x_local[s]) for s in self.local_slices]
        parts = [f.result() for f in futures]
        return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])

    def close(self):
        self._pool.shutdown(wait=True, cancel_futures=True)
