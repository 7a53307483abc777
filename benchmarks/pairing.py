"""The OT pairing off the device: loops on the device, Hungarian iterations, host pairing rate, headroom.

Used by benchmarks/run.py (sections `while_loops`, `hungarian_iterations`, `host_pairing`,
`host_pairing_headroom`).
"""
from __future__ import annotations

import contextlib
import time

import jax
import jax.numpy as jnp
import numpy as np

from lct_jax import hlo, parallel
from lct_jax.data import coupling
from lct_jax.data.host_pairing import HostPairer
from lct_jax.train import loop

LATENT = (32, 32, 4)   # SD-VAE latents of a 256x256 image: 4,096-d points


def device_program_while_loops(config, mesh) -> dict:
    """Data-dependent `while` ops in the compiled programs the step dispatches to the mesh, per placement."""
    m = config.model
    x = jax.ShapeDtypeStruct((config.batch_size, m.img_resolution, m.img_resolution, m.in_channels),
                             jnp.float32, sharding=parallel.batch_sharding(mesh))
    out = {}
    for placement in ('host', 'device'):
        with config.unlocked():
            config.coupling.placement = placement
        _, _, state, step = loop.build_training(config, mesh)
        programs = {name: p.compile() for name, p in step.lower(state, x).items()}
        out[placement] = sum(hlo.count_data_dependent_while_loops(p) for p in programs.values())
        out[f'{placement}_programs'] = {name: {'while_ops': len(hlo.while_loops(p.as_text())),
                                               'data_dependent': hlo.count_data_dependent_while_loops(p)}
                                        for name, p in programs.items()}
    return out


@contextlib.contextmanager
def counting_while_loops(counts: list):
    """Trace-time patch of lax.while_loop: every iteration of every loop traced inside adds 1 to
    counts[k] (k = the loop's order of tracing), through a host callback: an exact count of the
    real algorithm's iterations, not an estimate."""
    original = jax.lax.while_loop

    def counting(cond_fun, body_fun, init_val):
        k = len(counts)
        counts.append(0)

        def body(val):
            jax.debug.callback(lambda: counts.__setitem__(k, counts[k] + 1))
            return body_fun(val)

        return original(cond_fun, body, init_val)

    jax.lax.while_loop = counting
    try:
        yield counts
    finally:
        jax.lax.while_loop = original


def hungarian_iterations(batches=(16, 32, 64, 128, 256), seed=0) -> dict:
    """Loop iterations of one exact matching (ott-jax -> optax's Hungarian) on latent-shaped data:
    x ~ 0.5 N(0, 1) (normalised latents, sigma_data 0.5) against unit noise, 4,096-d."""
    out = {}
    for b in batches:
        x = 0.5 * np.random.default_rng([seed, b]).standard_normal((b, *LATENT)).astype(np.float32)
        z = np.random.default_rng([seed, b, 1]).standard_normal((b, *LATENT)).astype(np.float32)
        counts = []
        with counting_while_loops(counts):
            # a fresh function: traced (with the loops patched) here, never taken from a cache
            perm = jax.jit(lambda a, b: coupling.exact_permutation(a, b))(x, z)
            jax.block_until_ready(perm)
            jax.effects_barrier()
        # optax's hungarian_algorithm: per row, a DFS (augmenting path) loop then a backtracking loop
        out[str(b)] = {'augmenting_path': counts[0], 'backtracking': counts[1], 'total': sum(counts),
                       'loops_traced': len(counts)}
    return out


def host_pairing(per_device_batch=128, threads=(1, 2), repeats=7, seed=0) -> dict:
    """Noise + exact OT on the host for `k` device batches of `per_device_batch`, with k threads.

    One pairer call pairs k device slices (one per thread); seconds per device batch and
    examples per second of the whole call, medians of `repeats` calls (steps 1.. after a warm-up).
    """
    out = {}
    for k in threads:
        rows = slice(0, k * per_device_batch)
        slices = [slice(i * per_device_batch, (i + 1) * per_device_batch) for i in range(k)]
        pairer = HostPairer(seed, 'exact', 0.01, LATENT, rows, slices, threads=k)
        x = 0.5 * np.random.default_rng(seed).standard_normal((k * per_device_batch, *LATENT)).astype(np.float32)
        try:
            pairer(0, x)
            times, noise_times = [], []
            for step in range(1, repeats + 1):
                t0 = time.perf_counter()
                pairer.noise(step)
                noise_times.append(time.perf_counter() - t0)
                t0 = time.perf_counter()
                pairer(step, x)
                times.append(time.perf_counter() - t0)
        finally:
            pairer.close()
        t = float(np.median(times))
        out[f'{k}_threads'] = {'threads': k, 'device_batches': k, 'seconds_per_call': t,
                               'noise_seconds_per_call': float(np.median(noise_times)),
                               'seconds_per_device_batch': t / k,
                               'examples_per_s': k * per_device_batch / t}
    one, most = out['1_threads'], out[f'{max(threads)}_threads']
    out['thread_speedup'] = most['examples_per_s'] / one['examples_per_s']
    return out


# Accelerator facts used by the projection (public spec sheets).
H100_BF16_DENSE_FLOPS = 989.4e12     # H100 SXM5, bf16 dense tensor-core peak (no sparsity)
TPU_V4_BF16_FLOPS = 275e12           # TPU v4 chip, bf16 peak


def headroom(step_flops_per_example: float, host_examples_per_s_per_core: float,
             mfu=0.40, pairing_cores=16, per_device_batch=128) -> dict:
    """Host pairing rate over what one host's accelerators consume at the paper step (a projection).

    Every assumption is returned beside the number.
    """
    hosts = {'8x H100 SXM (DGX H100 host)': (8, H100_BF16_DENSE_FLOPS, 112),
             '4x TPU v4 (one TPU v4 VM host)': (4, TPU_V4_BF16_FLOPS, 120)}
    out = {}
    pairing_rate = pairing_cores * host_examples_per_s_per_core
    for name, (chips, peak, cores) in hosts.items():
        step_s = step_flops_per_example * per_device_batch / (mfu * peak)
        consumed = chips * per_device_batch / step_s
        out[name] = {'headroom': pairing_rate / consumed, 'accelerator_examples_per_s': consumed,
                     'host_pairing_examples_per_s': pairing_rate, 'step_seconds_projected': step_s,
                     'chips': chips, 'peak_flops_per_chip': peak, 'physical_cores_on_host': cores}
    out['assumptions'] = {
        'step_flops_per_example': step_flops_per_example,
        'step_flops': 'analytic: 4 x UNet forward (student forward + backward = 3 forwards, target forward), '
                      'convolutions, dense layers and attention; the paper UNet at 32x32x4',
        'mfu': mfu, 'precision': 'bf16 dense peak (a float32 step would be slower, leaving more headroom)',
        'per_device_batch': per_device_batch,
        'pairing_cores_per_host': pairing_cores,
        'cores_note': 'of 112 (DGX H100: 2x 56-core Xeon 8480C) or 120 (TPU v4 VM: 240 vCPUs) physical '
                        'cores, the rest left to data loading and the framework',
        'per_core_rate': 'this machine\'s measured rate of noise + exact OT at per-device batch 128 with '
                         'every core busy (one pairing thread per core), divided by its cores; assumed equal '
                         'on a server core and linear in cores (each matching is its own independent CPU '
                         'program). Not the single-thread rate: two threads on two cores pair less than twice '
                         'as fast (thread_speedup; they share the CPU client, caches and memory bandwidth), '
                         'so a lone thread would overstate what a busy core gives',
        'host_examples_per_s_per_core': host_examples_per_s_per_core}
    return out
