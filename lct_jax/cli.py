"""The non-training modes of `lct_jax.main`: encode, sample, evaluate, analyze."""
from __future__ import annotations

import json
import os

import jax
import jax.numpy as jnp
import numpy as np

from lct_jax import parallel, sampling
from lct_jax.builders import build_model, build_objective, latent_dir_of, num_classes_of
from lct_jax.data.pipeline import Normalizer
from lct_jax.images import save_grid, save_image
from lct_jax.models.autoencoder import make_codec
from lct_jax.progress import Progress


def encode(config, workdir):
    from lct_jax.data.encode import encode_dataset
    from lct_jax.data.sources import make_source
    latent_dir = latent_dir_of(config, workdir)
    manifest = encode_dataset(make_source(config.data), make_codec(config.autoencoder, config.model.in_channels),
                              latent_dir, seed=config.seed, batch_size=config.data.encode_batch_size,
                              examples_per_shard=config.data.examples_per_shard)
    if jax.process_index() == 0:
        print(f'encoded {manifest["count"]} examples of shape {manifest["shape"]} into {latent_dir}')


def load_params(config, workdir, checkpoint: str = '', ema: str | None = None):
    """(params, description) from our checkpoints or an authors' PyTorch .pt file.

    ema: 'ema_<decay>' or 'params' (raw weights); default config.sampling.ema.
    """
    ema = ema or config.sampling.ema
    if checkpoint.endswith(('.pt', '.pth')):
        # Untrusted: unpickled with weights_only=True and the authors' plain types only (lct_jax/untrusted.py).
        from lct_jax.models.convert import model_params_from_torch, state_dict_arrays
        from lct_jax.untrusted import UnreadableFileError, torch_load
        ckpt = torch_load(checkpoint, "an authors' checkpoint")
        if not isinstance(ckpt, dict):
            raise UnreadableFileError(f'{checkpoint}: expected an authors\' checkpoint (a dict with model, '
                                      f'ema, target, opt, args), found a {type(ckpt).__name__}')
        key = 'model' if ema == 'params' else ema
        if key not in ckpt:
            raise KeyError(f'{checkpoint} has no {key!r}; it holds {sorted(map(str, ckpt))}')
        return (model_params_from_torch(state_dict_arrays(ckpt[key], checkpoint, f'its {key!r}'), build_model(config)),
                f'{os.path.basename(checkpoint)}:{key}')
    from lct_jax.train.checkpoints import load_numpy
    if not checkpoint:
        ckpt_dir = os.path.join(workdir, 'checkpoints')
        steps = sorted(int(s) for s in os.listdir(ckpt_dir) if s.isdigit()) if os.path.isdir(ckpt_dir) else []
        if not steps:
            raise FileNotFoundError(f'no checkpoint in {ckpt_dir}; train first or pass --checkpoint')
        checkpoint = os.path.join(ckpt_dir, str(steps[-1]))
    tree = load_numpy(checkpoint)
    if ema == 'params':
        params = tree['params']
    elif ema in tree['ema']:
        params = tree['ema'][ema]
    else:
        raise KeyError(f'{checkpoint} has no EMA {ema!r}; it has {sorted(tree["ema"])} and params')
    check_params_fit(params, config, f'the checkpoint at {checkpoint} ({ema})',
                     hint=f'sample and evaluate start from the run\'s recorded config ({workdir}/config.json); '
                          'command-line --config.* flags go on top of it: drop those that change the model')
    return params, f'step {int(tree["step"])}:{ema}'


def check_params_fit(params, config, what: str, hint: str = '') -> None:
    """One error naming the mismatched keys and shapes (instead of Flax's ScopeParamShapeError from
    deep inside the sampler) if `params` are not the params of the config's model."""
    from lct_jax.models.convert import param_shapes
    from lct_jax.train.checkpoints import CheckpointMismatchError, flat_shapes, shape_mismatches
    m = config.model
    wanted = param_shapes(build_model(config), jnp.zeros((1, m.img_resolution, m.img_resolution, m.in_channels)),
                          jnp.zeros((1,)))
    problems = shape_mismatches(flat_shapes(params), {'/'.join(k): v for k, v in wanted.items()})
    if problems:
        raise CheckpointMismatchError(f'{what} does not fit the config\'s model:\n{problems}'
                                      + (f'\n{hint}' if hint else ''))


def config_of_run(config, workdir: str, overrides: dict):
    """The run's recorded config (<workdir>/config.json) with `overrides` (the command line's
    --config.* flags, {dotted key: value}) on top, so sampling and evaluating a run need not repeat
    its training flags; `config` as given if the work directory has no record."""
    from lct_jax.workdir import record
    recorded = record.recorded_config(workdir)
    if recorded is None:
        return config
    merged, skipped = record.apply_recorded(config, recorded, overrides)
    if jax.process_index() == 0:
        print(f'config: the run\'s record {os.path.join(workdir, record.CONFIG_FILE)}'
              + (f', with {sorted(overrides)} from the command line' if overrides else '')
              + (f'; keys this code\'s config does not have, ignored: {skipped}' if skipped else ''), flush=True)
    return merged


def normalizer_of(config, workdir) -> Normalizer:
    return Normalizer.of_config(config, latent_dir_of(config, workdir))


def make_sampler(config, sampler, mesh):
    """The jitted sampler of a `sampling.SamplerSpec`, or of the indices `ts` of a consistency
    sampler on the config's grid (e.g. (0,) or (0, 420, 640)), on `mesh`."""
    model, obj = build_model(config), build_objective(config)
    m = config.model
    spec = sampler if isinstance(sampler, sampling.SamplerSpec) else \
        sampling.consistency_spec('consistency', tuple(sampler), config.sampling.grid_steps, obj)
    # A class-conditional model: sample i of class i mod num_classes, uniform over the classes.
    return sampling.make_spec_sampler(spec, model.apply, obj, (m.img_resolution, m.img_resolution, m.in_channels),
                                      config.sampling.seed, mesh, num_classes_of(config))


def generate(config, params, sampler, num: int, normalizer: Normalizer, mesh=None, show_progress: bool = True):
    """(uint8 images NHWC, normalised latents) of samples 0..num-1 with per-sample noise, decoded on
    the mesh and gathered batch by batch. It returns every image, so it is for small `num`:
    `--mode=evaluate` gathers features only (evaluation/sharded.py), `--mode=sample` writes batch
    by batch."""
    from lct_jax.evaluation import sharded
    mesh = mesh or parallel.make_mesh()
    decoder = sharded.make_image_decoder(make_codec(config.autoencoder, config.model.in_channels), normalizer, mesh)
    progress = Progress('sample', num, unit='img', enabled=show_progress and jax.process_index() == 0)
    images, lats = [], []
    from lct_jax.evaluation.evaluator import replicated_on
    for start, img, x in sharded.image_batches(make_sampler(config, sampler, mesh), replicated_on(params, mesh),
                                               decoder, num, sharded.padded_batch(config.sampling, mesh, num),
                                               mesh, with_latents=True):
        images.append(img)
        lats.append(x)
        progress.update(start + len(img))
    progress.close()
    return np.concatenate(images), np.concatenate(lats)


def sample(config, workdir, checkpoint=''):
    """Write each configured sampler's num_samples images (files, an .npz, grids), one batch at a
    time: the images of a batch are gathered to the hosts, process 0 writes them, and none is kept
    but the grids' few."""
    from lct_jax.evaluation import sharded
    from lct_jax.streamed_npz import StreamedNpz
    params, desc = load_params(config, workdir, checkpoint)
    normalizer = normalizer_of(config, workdir)
    fmt = config.sampling.image_format
    ext = {'jpeg': 'jpg', 'png': 'png'}.get(fmt)
    if ext is None:
        raise ValueError(f"sampling.image_format {fmt!r}; valid: ('jpeg', 'png')")
    from lct_jax.evaluation.evaluator import replicated_on
    mesh = parallel.make_mesh()
    params = replicated_on(params, mesh)
    decoder = sharded.make_image_decoder(make_codec(config.autoencoder, config.model.in_channels), normalizer, mesh)
    num = config.sampling.num_samples
    batch = sharded.padded_batch(config.sampling, mesh, num)
    classes = num_classes_of(config)
    shown = min(classes, int(config.sampling.get('class_grids', 16)))
    writer = jax.process_index() == 0
    for spec in sampling.configured_samplers(config.sampling, build_objective(config)):
        label = spec.file_label  # 1step / 2step, or euler250 / heun40 (config.sampling.sampler)
        out = os.path.join(workdir, 'samples', f'{desc.replace(" ", "_").replace(":", "_")}_{label}')
        npz, grid, per_class = None, [], {c: [] for c in range(shown)}
        progress = Progress(f'sample {label}', num, unit='img', enabled=writer)
        if writer:
            os.makedirs(out, exist_ok=True)
        for start, images in sharded.image_batches(make_sampler(config, spec, mesh), params, decoder, num, batch, mesh):
            if writer:
                if npz is None:
                    npz = StreamedNpz(out + '.npz', 'images', (num,) + images.shape[1:], images.dtype)
                npz.write(images)
                for i, img in enumerate(images, start):
                    save_image(os.path.join(out, f'{i:06d}.{ext}'), img)
                    if len(grid) < 64:
                        grid.append(img)
                    if shown and i % classes < shown and len(per_class[i % classes]) < 64:  # sample i: class i % classes
                        per_class[i % classes].append(img)
            progress.update(start + len(images))
        progress.close()
        if not writer:
            continue
        npz.close()
        save_grid(out + '_grid.png', np.stack(grid))
        for c, imgs in [(c, imgs) for c, imgs in per_class.items() if imgs]:
            save_grid(out + f'_class{c:03d}_grid.png', np.stack(imgs))
        print(f'{num} {label} samples ({desc}) in {out}/ (+ .npz, _grid.png'
              + (f', per-class grids; sample i is of class i mod {classes}' if classes else '') + ')', flush=True)


def real_image_batches(config, workdir, limit: int | None = None, batch: int = 500, codec=None):
    """uint8 NHWC batches of real images: an image folder, a tfds dataset, else the decoded training
    latents (with `codec`, default the config's); the first `limit` of them if given."""
    from lct_jax.data.latents import LatentDataset
    from lct_jax.data.sources import ImageFolderSource, TfdsSource
    ev = config.evaluation
    src = None
    if ev.reference_dir:
        src = ImageFolderSource(ev.reference_dir, config.data.resolution)
    elif ev.reference_tfds:
        name, _, split = ev.reference_tfds.partition(':')
        src = TfdsSource(name, split or 'train', config.data.resolution, config.data.tfds_data_dir)
    if src is not None:
        n = min(len(src), limit or len(src))
        for i in range(0, n, batch):
            yield src.images(range(i, min(i + batch, n)))
        return
    from lct_jax.evaluation import sharded
    ds = LatentDataset(latent_dir_of(config, workdir))
    codec = codec or make_codec(config.autoencoder, config.model.in_channels)
    decode = sharded.host_decoder(codec, parallel.make_mesh())  # each device decodes its rows of a batch
    scale = ds.manifest['scale_factor']
    n = min(len(ds), limit or len(ds))
    for i in range(0, n, batch):
        yield decode(ds.read_batch(range(i, min(i + batch, n))) / scale)


def reference_feature_sets(config, workdir, features: dict, limits: dict | None = None, codec=None) -> dict:
    """{name: features of the real images} for several feature functions in one pass over the
    images (each decoded once, by `codec` if given); limits[name] keeps only that many images for that name."""
    from lct_jax.evaluation import sharded
    from lct_jax.evaluation.features import FeatureNet
    limits = limits or {}
    cap = None if any(limits.get(k) is None for k in features) else max(limits[k] for k in features)
    mesh = parallel.make_mesh()  # a FeatureNet runs on every device, each on its rows of a batch
    features = {k: sharded.host_features(fn, mesh) if isinstance(fn, FeatureNet) else fn for k, fn in features.items()}
    out, seen = {k: [] for k in features}, 0
    for images in real_image_batches(config, workdir, cap, codec=codec):
        for name, fn in features.items():
            keep = len(images) if limits.get(name) is None else max(min(len(images), limits[name] - seen), 0)
            if keep:
                out[name].append(fn(images[:keep]))
        seen += len(images)
    return {k: np.concatenate(v) for k, v in out.items()}


def reference_features(config, workdir, features: dict, limits: dict) -> dict:
    """`reference_feature_sets`, kept on disk when the reference is the decoded training latents
    (evaluation/reference_cache.py: a study evaluates ~100 checkpoints against the same set)."""
    from lct_jax.evaluation import reference_cache
    ev = config.evaluation

    if not ev.reference_cache or ev.reference_dir or ev.reference_tfds:
        return reference_feature_sets(config, workdir, features, limits)
    codec = make_codec(config.autoencoder, config.model.in_channels)  # built once: its hash keys the cache

    def compute():
        return reference_feature_sets(config, workdir, features, limits, codec=codec)

    parts = {'latents': reference_cache.latent_dir_fingerprint(latent_dir_of(config, workdir)),
             'decoder': {'name': codec.name, 'weights_sha256': codec.weights_sha256,
                         'autoencoder': config.autoencoder.to_dict()},
             'features': {name: getattr(fn, 'fingerprint', None) for name, fn in features.items()},
             'limits': {name: limits.get(name) for name in features}}
    if any(fp is None for fp in parts['features'].values()):  # a feature function we cannot name
        return compute()
    real, how = reference_cache.cached_features(parts, compute)
    if jax.process_index() == 0:
        from lct_jax.cache_dirs import cache_root
        sizes = ', '.join(f'{v.shape[0]:,} images x {v.shape[1]:,} features ({name})' for name, v in real.items())
        where = os.path.join(cache_root(), 'reference_features')
        print(f'reference features of the training data: {sizes}, '
              + (f'read from the cache in {where}' if how == 'hit' else f'computed and cached in {where} for next time'),
              flush=True)
    return real


def paper_numbers(config, spec) -> tuple[float | None, float | None]:
    """The paper's (FID, recall) for a row: the config's 1-/2-step fields for the consistency
    samplers and MeanFlow's 1-/2-step jumps (they also carry the ablations' logged FIDs and MF-B/2's
    published 6.17), Table 1 by (dataset, method, NFE) for ODE."""
    from lct_jax.evaluation import paper_table1
    ev = config.evaluation
    if spec.method in ('consistency', 'meanflow'):
        one = spec.label == '1-step'
        return ((ev.paper_fid_1step if one else ev.paper_fid_2step) or None,
                (ev.paper_recall_1step if one else ev.paper_recall_2step) or None)
    row = paper_table1.lookup(ev.dataset, ev.method, spec.nfe)
    return (row.fid, row.recall) if row else (None, None)


def evaluate(config, workdir, checkpoint=''):
    """Sample with each configured sampler, compute FID / precision / recall, append a row per
    sampler to <workdir>/results.md, and rebuild the dataset's comparison table (ours beside
    Table 1) from every run under evaluation.comparison_dir."""
    from lct_jax.evaluation import curves, results, table1
    from lct_jax.evaluation.evaluator import Evaluator
    ev = config.evaluation
    if curves.wants_curves(checkpoint):  # --checkpoint=all or a list of steps: FID over steps and NFE
        return curves.evaluate_checkpoints(config, workdir, checkpoint,
                                           say=lambda line: print(line, flush=True))
    params, desc = load_params(config, workdir, checkpoint)

    def say(row):
        if jax.process_index() == 0:
            print(json.dumps(row, ensure_ascii=False), flush=True)

    rows = Evaluator(config, workdir).rows(params, desc, say=say)
    if jax.process_index() == 0:
        written = results.append_rows(workdir, rows)
        comparison_dir = ev.comparison_dir or os.path.dirname(os.path.abspath(workdir))
        try:  # the table is a view of finished work: a file it cannot use never fails the evaluation
            comparison = table1.write_comparison(comparison_dir, ev.dataset)
        except (OSError, ValueError) as e:
            comparison = f'not rebuilt ({e})'
        print(f'results: a row per sampler appended to {written} (and results.md); '
              f'every run of {ev.dataset} found beside it, ours beside the paper\'s: {comparison}', flush=True)
    return rows


def analyze(config, workdir):
    from lct_jax.evaluation.analysis import analyze_dataset
    analyze_dataset(config, workdir)
