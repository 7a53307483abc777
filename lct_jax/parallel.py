"""Mesh, shardings and multi-host set-up: SPMD data parallelism with jit.

One `Mesh` with a single 'data' axis over every device of every process; the
batch is sharded along it, the train state replicated, or, with FSDP
(`config.mesh.fsdp`, ZeRO-3 style), sharded over the same axis: each large
leaf of params, optimizer moments and EMAs split along one of its dimensions
(`state_shardings`); XLA gathers the weights where a layer needs them and
brings the gradients back to the shards, from these annotations alone. On
TPU pods and SLURM `jax.distributed.initialize()` finds its peers itself;
elsewhere the coordinator address, process count and id are given (CPU uses
gloo).
"""
from __future__ import annotations

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

DATA_AXIS = 'data'


def initialize_distributed(coordinator_address: str | None = None, num_processes: int | None = None,
                           process_id: int | None = None, timeout_s: int = 120,
                           heartbeat_timeout_s: int = 60) -> None:
    """Start JAX's multi-controller runtime if this is (or may be) a multi-process run.

    heartbeat_timeout_s bounds how long the survivors wait for a lost process
    before they fail (instead of hanging in a collective).
    """
    if coordinator_address or num_processes:
        if (jax.config.jax_platforms or '').startswith('cpu') or not _has_accelerator():
            jax.config.update('jax_cpu_collectives_implementation', 'gloo')
        jax.distributed.initialize(coordinator_address=coordinator_address,
                                   num_processes=num_processes, process_id=process_id,
                                   initialization_timeout=timeout_s,
                                   heartbeat_timeout_seconds=heartbeat_timeout_s,
                                   shutdown_timeout_seconds=heartbeat_timeout_s)
    else:
        try:  # Cloud TPU pods and SLURM: JAX detects the cluster itself.
            from jax._src.clusters import ClusterEnv
            if any(env.is_env_present() for env in ClusterEnv._cluster_types
                   if env.__name__ not in ('SingleProcess',)):
                jax.distributed.initialize()
        except (ImportError, AttributeError, RuntimeError, ValueError):
            pass


# How long a process waits at a barrier for its slowest peer (a compile, a restore from a slow disk).
BARRIER_TIMEOUT_S = 3600.0


def barrier(name: str, timeout_s: float = BARRIER_TIMEOUT_S) -> None:
    """Wait until every process has reached `name`, through the coordination service (no collective).

    Why not multihost_utils.sync_global_devices: it is a collective, and on CPU the Gloo
    collectives give a process 30 s to meet its peers, so a process still compiling 30 s after
    the others stops the run (`Gloo context initialization failed: DEADLINE_EXCEEDED`). The
    coordination service's barrier has its own timeout and involves no device. A no-op in a
    single process.
    """
    if jax.process_count() == 1:
        return
    from jax._src import (
        distributed,  # the coordination service's client: JAX has no public barrier
    )
    client = distributed.global_state.client
    if client is None:
        raise RuntimeError(f'barrier {name!r}: {jax.process_count()} processes but no jax.distributed client')
    client.wait_at_barrier(name, int(timeout_s * 1000))


def _has_accelerator() -> bool:
    # Must not initialise a backend before jax.distributed.initialize: look at installed plugins only.
    import importlib.util
    return any(importlib.util.find_spec(m) is not None for m in ('jax_cuda13_plugin', 'jax_cuda12_plugin',
                                                                  'libtpu', 'jax_rocm7_plugin'))


def make_mesh(devices=None) -> Mesh:
    """A 1-D mesh over all devices (Auto axis type, so plain data parallelism just works)."""
    devices = jax.devices() if devices is None else devices
    return Mesh(np.asarray(devices), (DATA_AXIS,))


def batch_sharding(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P(DATA_AXIS))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P())


FSDP_MIN_SIZE = 2 ** 14   # leaves smaller than this (elements) stay replicated: biases, norms, scalars


def fsdp_spec(shape, axis_size: int, min_size: int = FSDP_MIN_SIZE) -> P:
    """Shard a leaf on 'data' along its largest dimension divisible by the axis size (the last such
    among equals), or replicate it if none divides or it is too small to matter."""
    if axis_size == 1 or int(np.prod(shape, dtype=np.int64)) < min_size:
        return P()
    divisible = [i for i, n in enumerate(shape) if n % axis_size == 0]
    if not divisible:
        return P()
    dim = max(divisible, key=lambda i: (shape[i], i))
    return P(*[DATA_AXIS if i == dim else None for i in range(len(shape))])


def state_shardings(abstract_state, mesh: Mesh, fsdp: bool = False, min_size: int = FSDP_MIN_SIZE):
    """A NamedSharding for each leaf of a (train state) pytree: replicated, or FSDP-sharded on 'data'.

    Shape-based, so params, each optimizer moment and each EMA of a leaf get the same layout
    and the elementwise updates need no communication.
    """
    if not fsdp:
        return jax.tree_util.tree_map(lambda _: replicated(mesh), abstract_state)
    n = mesh.shape[DATA_AXIS]
    return jax.tree_util.tree_map(lambda a: NamedSharding(mesh, fsdp_spec(a.shape, n, min_size)),
                                  abstract_state)


def check_batch_size(global_batch: int, mesh: Mesh) -> None:
    n = mesh.devices.size
    if global_batch % n or global_batch % jax.process_count():
        raise ValueError(f'batch_size={global_batch} must be divisible by the device count {n} '
                         f'and the process count {jax.process_count()}')


def process_batch_slice(global_batch: int, mesh: Mesh) -> slice:
    """The contiguous rows of the global batch that this process's devices hold."""
    index_map = batch_sharding(mesh).addressable_devices_indices_map((global_batch,))
    starts = [idx[0].start or 0 for idx in index_map.values()]
    stops = [global_batch if idx[0].stop is None else idx[0].stop for idx in index_map.values()]
    lo, hi = min(starts), max(stops)
    if hi - lo != global_batch // jax.process_count():
        raise ValueError('this process\'s devices do not hold a contiguous block of the batch')
    return slice(lo, hi)


def device_row_slices(global_batch: int, mesh: Mesh) -> list[slice]:
    """The global batch rows each of this process's devices holds, in row order."""
    index_map = batch_sharding(mesh).addressable_devices_indices_map((global_batch,))
    rows = {(idx[0].start or 0, global_batch if idx[0].stop is None else idx[0].stop)
            for idx in index_map.values()}
    return [slice(lo, hi) for lo, hi in sorted(rows)]


def global_batch_from_local(local: np.ndarray, mesh: Mesh) -> jax.Array:
    """Assemble a global batch, sharded on 'data', from each process's rows."""
    return jax.make_array_from_process_local_data(batch_sharding(mesh), local)


def replicate(tree, mesh: Mesh):
    """Place a host pytree on every device of the mesh (identical on every process)."""
    sharding = replicated(mesh)
    return jax.tree_util.tree_map(
        lambda a: jax.make_array_from_callback(np.shape(a), sharding, lambda idx: np.asarray(a)[idx]), tree)


def shard_host_array(array: np.ndarray, mesh: Mesh) -> jax.Array:
    """A host array that every process holds in full, sharded on 'data' (each process keeps its part)."""
    array = np.asarray(array)
    return jax.make_array_from_callback(array.shape, batch_sharding(mesh), lambda idx: array[idx])
