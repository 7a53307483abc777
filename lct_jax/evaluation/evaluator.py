"""FID / precision / recall rows of a set of weights, with everything else given.

An `Evaluator` is handed what does not change between the checkpoints of a run, built once by
its caller (builders.build_evaluator): the samplers compiled on the mesh, the featurizer (decode
+ every feature network, on the mesh), the reference (statistics and, for precision / recall,
features) and the paper's numbers for a row. It never reads a config or imports a trainer (as
big_vision's evaluators), so `--mode=evaluate`, the curves over checkpoints and the training
loop share it. `rows(params, desc)` samples, decodes and featurizes on the mesh (sharded.py: only
the features reach the hosts) and computes one row per sampler.
"""
from __future__ import annotations

import dataclasses
from typing import Callable

import jax
import numpy as np

from lct_jax import parallel
from lct_jax.evaluation import fid, precision_recall, sharded
from lct_jax.progress import Progress


@dataclasses.dataclass(frozen=True)
class Reference:
    """The real side of every row: FID statistics and, when real images exist, their precision /
    recall features (`pr_real`), compared with the generated features named `pr_from`."""
    mu: np.ndarray
    sigma: np.ndarray
    pr_real: np.ndarray | None = None
    pr_from: str = 'fid'         # 'fid': the FID features serve precision / recall too; 'pr': their own


@dataclasses.dataclass(frozen=True)
class RowLabels:
    """What each row says it is (results.json's columns before the numbers)."""
    run: str
    dataset: str
    method: str
    features: str
    pr_features: str
    recall_k: int


class Evaluator:
    def __init__(self, specs: list, samplers: dict[str, Callable], featurize: Callable, reference: Reference,
                 paper_numbers: Callable, labels: RowLabels, batch_of: Callable[[int], int], mesh,
                 show_progress: bool = True):
        """specs: the SamplerSpecs (label, method, nfe) of the rows; samplers[label]: its jitted
        (params, indices) -> latents; featurize(latents on the mesh) -> {'fid'[, 'pr']: features};
        paper_numbers(family, label, nfe) -> (FID, recall) or Nones; batch_of(num) -> the global
        batch that gives the same numbers on any layout (sharded.padded_batch)."""
        self.specs, self.samplers, self.featurize = list(specs), samplers, featurize
        self.reference, self.paper_numbers, self.labels = reference, paper_numbers, labels
        self.batch_of, self.mesh = batch_of, mesh
        self.show_progress = show_progress and jax.process_index() == 0

    def features(self, params, spec, num: int) -> dict:
        """{'fid': (num, D)[, 'pr': ...]} float64 features of `spec`'s samples 0..num-1 (replicated params)."""
        progress = Progress(f'evaluate {spec.label}', num, unit='img', enabled=self.show_progress)
        out = sharded.sampled_features(self.samplers[spec.label], params, self.featurize, num, self.batch_of(num),
                                       self.mesh, progress)
        progress.close()
        return out

    def rows(self, params, desc: str, num: int, say=None) -> list[dict]:
        """One row per sampler for host or replicated `params` described by `desc` (e.g. 'step 20:ema_0.99')."""
        ref, lab = self.reference, self.labels
        params = replicated_on(params, self.mesh)
        rows = []
        for spec in self.specs:
            feats = self.features(params, spec, num)
            paper_fid, paper_recall = self.paper_numbers(spec.method, spec.label, spec.nfe)
            row = {'run': lab.run, 'checkpoint': desc, 'dataset': lab.dataset, 'method': lab.method,
                   'sampler': spec.label, 'nfe': spec.nfe, 'num_samples': num, 'features': lab.features,
                   'fid': fid.frechet_distance(*fid.statistics(feats['fid']), ref.mu, ref.sigma),
                   'paper_fid': paper_fid, 'paper_recall': paper_recall}
            if ref.pr_real is not None:
                row['pr_features'] = lab.pr_features
                row['precision'], row['recall'] = precision_recall.precision_recall(
                    ref.pr_real, feats[ref.pr_from], lab.recall_k)
            rows.append(row)
            if say is not None:
                say(row)
        return rows


def replicated_on(params, mesh):
    """`params` replicated on every device of `mesh`: host arrays (a loaded checkpoint) are placed
    there; arrays of a multi-process mesh (the train state, perhaps FSDP-sharded) are resharded
    by a program on it (no host can read all of them)."""
    leaves = jax.tree_util.tree_leaves(params)
    if leaves and all(isinstance(x, jax.Array) and not x.is_fully_addressable for x in leaves):
        return jax.jit(lambda tree: tree, out_shardings=parallel.replicated(mesh))(params)
    return parallel.replicate(params, mesh)
