"""The per-host input pipeline: deterministic, layout-independent, prefetched.

The global batch of step k is a pure function of (seed, k, dataset size):
epoch e = k // steps_per_epoch uses the permutation `epoch_order(seed, e, n)`
(drop_last, as the authors' DistributedSampler), and batch k takes the next
`batch_size` indices of it. Each process reads only the rows of that batch
that its devices hold, so the data do not depend on the number of processes
or devices, and a resumed run sees the batches an uninterrupted one would.
"""
from __future__ import annotations

import collections
import concurrent.futures
from typing import NamedTuple

import numpy as np

from lct_jax.data import tails
from lct_jax.data.latents import LatentDataset, read_manifest, read_stats
from lct_jax.data.parallel_reader import ProcessReader


def epoch_order(seed: int, epoch: int, n: int) -> np.ndarray:
    return np.random.default_rng([seed, epoch]).permutation(n)


def batch_indices(step: int, batch_size: int, n: int, seed: int) -> np.ndarray:
    """Dataset indices of the global batch of `step`."""
    steps_per_epoch = n // batch_size
    if steps_per_epoch == 0:
        raise ValueError(f'batch_size {batch_size} exceeds the dataset size {n}')
    epoch, pos = divmod(step, steps_per_epoch)
    return epoch_order(seed, epoch, n)[pos * batch_size:(pos + 1) * batch_size]


NORMALIZE_MODES = ('per_element', 'scalar', 'none')


class Normalizer:
    """x = g_p((latent / scale_factor - mean) / std) * sigma_data, and back (spec §2.3).

    mode 'per_element' (the paper): mean and std of each latent element over
    the dataset; 'scalar': one mean and std over all elements (pixel-space
    runs, where border pixels can be constant); 'none': latent / scale_factor.
    g_p is the tail dial (data.tail_power, `tails.heavy_tail`): the identity at p = 0 (every run
    before the dial), heavier tails at the same unit scale for p > 0; `denormalize` inverts it
    exactly, so samples are decoded from the autoencoder's own latent space at every level.
    """

    def __init__(self, mean, std, scale_factor: float, sigma_data: float = 0.5,
                 mode: str = 'per_element', tail_power: float = 0.0):
        if mode not in NORMALIZE_MODES:
            raise ValueError(f'data.normalize {mode!r}; valid: {NORMALIZE_MODES}')
        self.tail_power = tails.check_power(tail_power)
        if self.tail_power and mode == 'none':
            raise ValueError('data.tail_power > 0 needs standardised latents (data.normalize per_element or scalar)')
        mean, std = np.asarray(mean, np.float64), np.asarray(std, np.float64)
        if mode == 'scalar':  # pooled over elements
            m = mean.mean()
            std = np.full_like(std, np.sqrt(np.mean(std**2 + (mean - m) ** 2)))
            mean = np.full_like(mean, m)
        self.mean = mean.astype(np.float32)
        self.std = np.maximum(std, 1e-6).astype(np.float32)  # a constant element must not divide by 0
        self.scale_factor, self.sigma_data, self.mode = scale_factor, sigma_data, mode

    @classmethod
    def from_dir(cls, latent_dir, sigma_data=0.5, mode='per_element', tail_power=0.0):
        manifest = read_manifest(latent_dir)
        mean, std = read_stats(latent_dir, manifest['shape'])
        scale = manifest['scale_factor']
        return cls(mean, std, scale, sigma_data, mode, tail_power)

    @classmethod
    def of_config(cls, config, latent_dir):
        """The normaliser a run with `config` trains with (and decodes its samples through)."""
        return cls.from_dir(latent_dir, config.consistency.sigma_data, config.data.normalize,
                            config.data.tail_power)

    def normalize(self, latents):
        if self.mode == 'none':
            return latents / self.scale_factor
        standard = (latents / self.scale_factor - self.mean) / self.std
        return tails.heavy_tail(standard, self.tail_power) * self.sigma_data

    def denormalize(self, x):
        """To the autoencoder's unscaled latent space (what `decode` takes)."""
        if self.mode == 'none':
            return x
        if self.tail_power == 0.0:  # the arithmetic of every run before the dial, to the bit
            return x * self.std / self.sigma_data + self.mean
        return tails.heavy_tail_inverse(x / self.sigma_data, self.tail_power) * self.std + self.mean


class HostBatch(NamedTuple):
    """This process's rows of a global batch: the normalised data, and (given a pairer) its paired
    noise and per-row cost ratio, and (class-conditional) its int32 labels; None where absent.
    The loop turns it into the objectives' `Batch` on the mesh, field by field."""
    x: np.ndarray
    z: np.ndarray | None = None
    ot_ratio: np.ndarray | None = None
    labels: np.ndarray | None = None

    @classmethod
    def of(cls, x, pairer=None, step: int = 0, labels=None) -> 'HostBatch':
        """x with its noise drawn and paired by `pairer` at `step` (None: the device placement's
        step pairs it); the OT pairing permutes the noise to the rows, so each row keeps its label."""
        z, ratio = pairer(step, x) if pairer is not None else (None, None)
        return cls(x, z, ratio, labels)


class InputPipeline:
    """Iterates this process's rows of the global batches from `start_step` on.

    Reading (and, given a `pairer`, drawing the noise and OT-pairing it, see
    `host_pairing.HostPairer`) runs `prefetch` steps ahead in a thread pool, so
    the accelerator never waits on the disk or the pairing in steady state.
    Yields a `HostBatch`: x, with its paired noise and per-row cost ratio given a pairer, and
    the rows' int32 class labels with `labels` (a class-conditional model).

    read_processes: 0 reads (and normalises) in those threads, which share one core through the
    GIL; N > 0 hands each step's reading to N worker processes (`parallel_reader.ProcessReader`),
    so reading scales with the host's cores. The batches are the same either way.
    """

    def __init__(self, dataset: LatentDataset, normalizer: Normalizer, batch_size: int, seed: int,
                 rows: slice, start_step: int = 0, prefetch: int = 4, workers: int = 4, pairer=None,
                 labels: bool = False, read_processes: int = 0):
        self.dataset, self.normalizer, self.labels = dataset, normalizer, labels
        self.batch_size, self.seed, self.rows = batch_size, seed, rows
        self.step = start_step
        self.pairer = pairer
        self._reader = ProcessReader(dataset.dir, normalizer, read_processes) if read_processes else None
        self._pool = concurrent.futures.ThreadPoolExecutor(workers, thread_name_prefix='lct-input')
        self._queue: collections.deque = collections.deque()
        self._prefetch = prefetch
        self._next_submit = start_step

    def local_batch(self, step: int) -> np.ndarray:
        idx = batch_indices(step, self.batch_size, len(self.dataset), self.seed)[self.rows]
        if self._reader is not None:
            return self._reader.read(idx, example_shape=self.dataset.shape)
        return self.normalizer.normalize(self.dataset.read_batch(idx)).astype(np.float32)

    def local_labeled_batch(self, step: int) -> tuple[np.ndarray, np.ndarray]:
        idx = batch_indices(step, self.batch_size, len(self.dataset), self.seed)[self.rows]
        if self._reader is not None:
            return self._reader.read(idx, labels=True, example_shape=self.dataset.shape)
        latents, labels = self.dataset.read_labeled_batch(idx)
        return self.normalizer.normalize(latents).astype(np.float32), labels

    def _prepare(self, step: int) -> HostBatch:
        x, y = self.local_labeled_batch(step) if self.labels else (self.local_batch(step), None)
        return HostBatch.of(x, self.pairer, step, y)

    def __iter__(self):
        return self

    def __next__(self) -> HostBatch:
        while len(self._queue) < self._prefetch:
            self._queue.append(self._pool.submit(self._prepare, self._next_submit))
            self._next_submit += 1
        batch = self._queue.popleft().result()  # re-raises a reader error (file, record) here
        self.step += 1
        return batch

    def close(self):
        """Stop the workers: queued steps are cancelled, running ones finish; no thread outlives this."""
        self._pool.shutdown(wait=False, cancel_futures=True)
        if self.pairer is not None:
            self.pairer.close()
        self._pool.shutdown(wait=True)
        if self._reader is not None:  # after the threads that wait on it
            self._reader.close()
