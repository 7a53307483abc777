"""FID / precision / recall rows of a set of weights, with everything else prepared once.

An `Evaluator` holds what does not change between the checkpoints of a run: the feature
networks, the real reference (statistics and, for precision / recall, features), the decoder
and each configured sampler compiled on the mesh. `rows(params, desc)` then samples, decodes
and featurizes on the mesh (evaluation/sharded.py: only the features reach the hosts) and
computes one row per sampler. `--mode=evaluate` makes one for a checkpoint, the curves over
checkpoints one for all of them, the training loop one for the whole run.
"""
from __future__ import annotations

import os

import jax

from lct_jax import parallel, sampling
from lct_jax.builders import build_objective
from lct_jax.progress import Progress


class Evaluator:
    def __init__(self, config, workdir: str, mesh=None, samplers=None, show_progress: bool = True):
        from lct_jax import cli
        from lct_jax.evaluation import fid, sharded
        from lct_jax.evaluation.features import make_features
        from lct_jax.models.autoencoder import make_codec
        self.config, self.workdir = config, workdir
        self.mesh = mesh or parallel.make_mesh()
        self.show_progress = show_progress and jax.process_index() == 0
        ev = config.evaluation
        fid_net = make_features(config)
        self.same = ev.pr_features == ev.features
        pr_net = fid_net if self.same else make_features(config, ev.pr_features)
        # Precision / recall need real images; a statistics file alone gives FID only.
        self.has_real = bool(ev.reference_dir or ev.reference_tfds or not ev.reference_stats)
        wanted = {} if ev.reference_stats else {'fid': fid_net}
        limits = {'fid': None, 'pr': ev.pr_max_real or None}
        if self.has_real and not (self.same and 'fid' in wanted):
            wanted['pr'] = pr_net
        real = cli.reference_features(config, workdir, wanted, limits) if wanted else {}
        if ev.reference_stats:
            from lct_jax.evaluation import stats_file
            self.mu_r, self.sigma_r = stats_file.load_checked(ev.reference_stats, config, fid_net.identity())
        else:
            self.mu_r, self.sigma_r = fid.statistics(real['fid'])
            if ev.get('save_reference_stats') and jax.process_index() == 0:
                from lct_jax.evaluation import stats_file
                prov = stats_file.provenance(ev.dataset, reference_split(config), config.data.resolution,
                                             len(real['fid']), fid_net.identity())
                written = stats_file.save(ev.save_reference_stats, self.mu_r, self.sigma_r, prov)
                print(f'reference statistics with their provenance: {written}', flush=True)
        if self.has_real and 'pr' not in real:
            real['pr'] = real['fid'][:limits['pr']]
        self.real_pr = real.get('pr')
        nets = {'fid': fid_net} if self.same or not self.has_real else {'fid': fid_net, 'pr': pr_net}
        codec = make_codec(config.autoencoder, config.model.in_channels)
        self.featurize = sharded.make_featurizer(codec, cli.normalizer_of(config, workdir), nets, self.mesh)
        self.specs = samplers or sampling.configured_samplers(config.sampling, build_objective(config))
        self.samplers = {spec.label: cli.make_sampler(config, spec, self.mesh) for spec in self.specs}

    def features(self, params, spec, num: int) -> dict:
        """{'fid': (num, D)[, 'pr': ...]} float64 features of `spec`'s samples 0..num-1 (replicated params)."""
        from lct_jax.evaluation import sharded
        progress = Progress(f'evaluate {spec.label}', num, unit='img', enabled=self.show_progress)
        batch = sharded.padded_batch(self.config.sampling, self.mesh, num)
        out = sharded.sampled_features(self.samplers[spec.label], params, self.featurize, num, batch,
                                       self.mesh, progress)
        progress.close()
        return out

    def rows(self, params, desc: str, num: int | None = None, say=None) -> list[dict]:
        """One row per sampler for host or replicated `params` described by `desc` (e.g. 'step 20:ema_0.99')."""
        from lct_jax import cli
        from lct_jax.evaluation import fid, precision_recall
        config, ev = self.config, self.config.evaluation
        num = num or config.sampling.num_samples
        params = replicated_on(params, self.mesh)
        rows = []
        for spec in self.specs:
            feats = self.features(params, spec, num)
            paper_fid, paper_recall = cli.paper_numbers(config, spec)
            row = {'run': ev.run_name or os.path.basename(os.path.normpath(self.workdir)), 'checkpoint': desc,
                   'dataset': ev.dataset, 'method': ev.method, 'sampler': spec.label, 'nfe': spec.nfe,
                   'num_samples': num, 'features': ev.features,
                   'fid': fid.frechet_distance(*fid.statistics(feats['fid']), self.mu_r, self.sigma_r),
                   'paper_fid': paper_fid, 'paper_recall': paper_recall}
            if self.has_real:
                gen = feats['fid'] if self.same else feats['pr']
                row['pr_features'] = ev.pr_features
                row['precision'], row['recall'] = precision_recall.precision_recall(self.real_pr, gen, ev.recall_k)
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


def reference_split(config) -> str:
    """Which real images the reference is, as a statistics file records it."""
    ev = config.evaluation
    if ev.reference_tfds:
        name, _, split = ev.reference_tfds.partition(':')
        return f'tfds {name}:{split or "train"}'
    if ev.reference_dir:
        return f'folder {os.path.basename(os.path.normpath(ev.reference_dir))}'
    return 'train (the decoded training latents)'
