"""Reading and normalising batches in worker processes, so the reader scales with the host's cores.

Why processes: a latent is read, checksummed and parsed in Python (`latents.LatentDataset`, about
40 µs an example), so reader threads share one core through the GIL; the noise and the OT pairing
(`host_pairing.py`) are XLA programs that release it, and stay in threads.

`ProcessReader.read(indices)` splits the indices into contiguous, order-keeping chunks, one per
worker, and concatenates the workers' results: the same array, bit for bit, as the serial
`normalizer.normalize(dataset.read_batch(indices)).astype(float32)` (normalisation is
elementwise). A reader error in a worker (a corrupt record, a wrong shape) is raised here as the
same exception, naming the shard and the record.
"""
from __future__ import annotations

import concurrent.futures
import copyreg
import multiprocessing
import threading
from multiprocessing import shared_memory

import numpy as np

from lct_jax.data import tfrecord
from lct_jax.data.latents import LatentDataset


def _rebuild_corrupt_record_error(path, record, offset, message):
    error = tfrecord.CorruptRecordError.__new__(tfrecord.CorruptRecordError)
    OSError.__init__(error, message)
    error.path, error.record, error.offset = path, record, offset
    return error


# CorruptRecordError's __init__ takes (path, record, offset, reason), not its message: without this,
# unpickling it in the parent fails and the pool reports a broken worker instead of the bad record.
copyreg.pickle(tfrecord.CorruptRecordError,
               lambda e: (_rebuild_corrupt_record_error, (e.path, e.record, e.offset, str(e))))

_worker: dict = {}


def _init_worker(latent_dir: str, normalizer) -> None:
    _worker['dataset'] = LatentDataset(latent_dir)
    _worker['normalizer'] = normalizer


def _attached(name: str) -> shared_memory.SharedMemory:
    """The parent's buffer `name`, attached once per worker: a fresh mapping per chunk would page-fault
    every page again (about 8 µs an example, measured)."""
    buffers = _worker.setdefault('buffers', {})
    if name not in buffers:
        buffers[name] = shared_memory.SharedMemory(name=name)
    return buffers[name]


def _read_chunk(indices: np.ndarray, labels: bool, buffer_name: str, start: int, batch_shape: tuple):
    """Reads `indices` into rows start.. of the shared batch buffer; returns their labels (or None).

    The latents go through shared memory, not the result pipe, which would pickle and copy them."""
    dataset, normalizer = _worker['dataset'], _worker['normalizer']
    if labels:
        latents, y = dataset.read_labeled_batch(indices)
    else:
        latents, y = dataset.read_batch(indices), None
    out = np.ndarray(batch_shape, np.float32, _attached(buffer_name).buf)
    out[start:start + len(indices)] = normalizer.normalize(latents).astype(np.float32)
    return y


def chunks(indices: np.ndarray, parts: int) -> list[np.ndarray]:
    """Contiguous, non-empty pieces of `indices` in order (their concatenation is `indices`)."""
    return [c for c in np.array_split(np.asarray(indices), parts) if len(c)]


class ProcessReader:
    """`read(indices)` -> normalised float32 latents (and int32 labels with labels=True), read by
    `processes` worker processes, each holding its own `LatentDataset` of `latent_dir`.

    Workers are spawned (not forked: the parent runs JAX's threads), so they import only numpy
    and the reader, plus the main module as Python's spawn does (a script that starts training must
    keep its top-level code under `if __name__ == '__main__':`, as `python -m lct_jax.main` does);
    they live until `close()`. Each batch is assembled in a shared-memory buffer, reused.
    """

    def __init__(self, latent_dir: str, normalizer, processes: int):
        if processes < 1:
            raise ValueError(f'reader processes must be >= 1, got {processes}')
        self.processes = processes
        self._lock = threading.Lock()
        self._buffers: list = []   # every buffer made (freed at close)
        self._free: list = []
        self._pool = concurrent.futures.ProcessPoolExecutor(
            processes, mp_context=multiprocessing.get_context('spawn'), initializer=_init_worker,
            initargs=(latent_dir, normalizer))

    def read(self, indices, labels: bool = False, example_shape: tuple = ()):
        indices = np.asarray(indices)
        batch_shape = (len(indices), *example_shape)
        buffer = self._take_buffer(4 * int(np.prod(batch_shape)))
        futures = []
        try:
            start = 0
            for c in chunks(indices, self.processes):
                futures.append(self._pool.submit(_read_chunk, c, labels, buffer.name, start, batch_shape))
                start += len(c)
            parts = [f.result() for f in futures]  # re-raises a worker's reader error here
            x = np.array(np.ndarray(batch_shape, np.float32, buffer.buf))  # a copy: the buffer is reused
        finally:
            for f in futures:
                f.cancel()
            concurrent.futures.wait(futures)  # no worker may still write into a buffer handed out again
            with self._lock:
                self._free.append(buffer)
        if labels:
            return x, np.concatenate(parts)
        return x

    def _take_buffer(self, size: int) -> shared_memory.SharedMemory:
        """A shared buffer of at least `size` bytes: a free one (as many exist as reads were ever in
        flight at once, the pipeline's threads), else a new one."""
        with self._lock:
            for i, b in enumerate(self._free):
                if b.size >= size:
                    return self._free.pop(i)
            b = shared_memory.SharedMemory(create=True, size=max(size, 1))
            self._buffers.append(b)
            return b

    def pids(self) -> list[int]:
        """The worker processes' ids (started by the first `read`): for measuring their CPU time."""
        return sorted(self._pool._processes or ())

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)
        for b in self._buffers:
            b.close()
            b.unlink()
        self._buffers, self._free = [], []
