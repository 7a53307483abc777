"""The non-training modes of `lct_jax.main`: encode, sample, evaluate, analyze."""
from __future__ import annotations

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import multihost_utils

from lct_jax import parallel, sampling
from lct_jax.builders import build_model, build_objective, latent_dir_of
from lct_jax.data.pipeline import Normalizer
from lct_jax.images import save_grid, save_image
from lct_jax.models.autoencoder import make_codec, to_uint8
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
        import torch
        from lct_jax.models.convert import unet_params_from_torch
        ckpt = torch.load(checkpoint, map_location='cpu', weights_only=False)
        key = 'model' if ema == 'params' else ema
        if key not in ckpt:
            raise KeyError(f'{checkpoint} has no {key!r}; it holds {sorted(ckpt)}')
        return unet_params_from_torch(ckpt[key], build_model(config)), f'{os.path.basename(checkpoint)}:{key}'
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
    return params, f'step {int(tree["step"])}:{ema}'


def normalizer_of(config, workdir) -> Normalizer:
    return Normalizer.from_dir(latent_dir_of(config, workdir), config.consistency.sigma_data,
                               config.data.normalize)


def generate(config, params, ts, num: int, normalizer: Normalizer, mesh=None, show_progress: bool = True):
    """(uint8 images NHWC, normalised latents) of samples 0..num-1 with per-sample noise."""
    mesh = mesh or parallel.make_mesh()
    model, obj = build_model(config), build_objective(config)
    m = config.model
    sampler = sampling.make_sampler(model.apply, obj, (m.img_resolution, m.img_resolution, m.in_channels),
                                    sampling.step_sigmas(ts, config.sampling.grid_steps, obj),
                                    config.sampling.seed, mesh)
    codec = make_codec(config.autoencoder, m.in_channels)
    batch = max(config.sampling.batch_size // mesh.devices.size, 1) * mesh.devices.size
    params = parallel.replicate(params, mesh)
    images, lats = [], []
    progress = Progress('sample', num, unit='img', enabled=show_progress and jax.process_index() == 0)
    for start in range(0, num, batch):
        idx = np.arange(start, start + batch)  # the tail is padded, then dropped
        indices = parallel.shard_host_array(idx.astype(np.int32), mesh)
        x = np.asarray(multihost_utils.process_allgather(sampler(params, indices), tiled=True))
        img = to_uint8(codec.decode(jnp.asarray(normalizer.denormalize(x))))
        keep = min(batch, num - start)
        images.append(img[:keep])
        lats.append(x[:keep])
        progress.update(start + keep)
    progress.close()
    return np.concatenate(images), np.concatenate(lats)


def sample(config, workdir, checkpoint=''):
    params, desc = load_params(config, workdir, checkpoint)
    normalizer = normalizer_of(config, workdir)
    fmt = config.sampling.image_format
    ext = {'jpeg': 'jpg', 'png': 'png'}.get(fmt)
    if ext is None:
        raise ValueError(f"sampling.image_format {fmt!r}; valid: ('jpeg', 'png')")
    for label, ts in (('1step', (0,)), ('2step', tuple(config.sampling.ts))):
        images, _ = generate(config, params, ts, config.sampling.num_samples, normalizer)
        if jax.process_index() != 0:
            continue
        out = os.path.join(workdir, 'samples', f'{desc.replace(" ", "_").replace(":", "_")}_{label}')
        os.makedirs(out, exist_ok=True)
        for i, img in enumerate(images):
            save_image(os.path.join(out, f'{i:06d}.{ext}'), img)
        np.savez_compressed(out + '.npz', images=images)
        save_grid(out + '_grid.png', images[:64])
        print(f'{len(images)} {label} samples ({desc}) in {out}/ (+ .npz, _grid.png)', flush=True)


def reference_features(config, workdir, features):
    """Features of the real data: an image folder, a tfds dataset, else the decoded training latents."""
    from lct_jax.data.latents import LatentDataset
    from lct_jax.data.sources import ImageFolderSource, TfdsSource
    ev = config.evaluation
    src = None
    if ev.reference_dir:
        src = ImageFolderSource(ev.reference_dir, config.data.resolution)
    elif ev.reference_tfds:
        name, _, split = ev.reference_tfds.partition(':')
        src = TfdsSource(name, split or 'train', config.data.resolution)
    if src is not None:
        return np.concatenate([features(src.images(range(i, min(i + 500, len(src)))))
                               for i in range(0, len(src), 500)])
    d = latent_dir_of(config, workdir)
    ds = LatentDataset(d)
    codec = make_codec(config.autoencoder, config.model.in_channels)
    scale = ds.manifest['scale_factor']
    out = []
    for i in range(0, len(ds), 256):
        lat = ds.read_batch(range(i, min(i + 256, len(ds)))) / scale
        out.append(features(to_uint8(codec.decode(jnp.asarray(lat)))))
    return np.concatenate(out)


def evaluate(config, workdir, checkpoint=''):
    """Sample, compute FID / precision / recall, and append a row per sampler to the results table."""
    from lct_jax.evaluation import fid, precision_recall, results
    from lct_jax.evaluation.features import make_features
    features = make_features(config)
    params, desc = load_params(config, workdir, checkpoint)
    normalizer = normalizer_of(config, workdir)
    ev = config.evaluation
    if ev.reference_stats:
        mu_r, sigma_r = fid.load_stats(ev.reference_stats)
        real = None
    else:
        real = reference_features(config, workdir, features)
        mu_r, sigma_r = fid.statistics(real)
    rows = []
    for label, ts, paper_fid, paper_recall in (
            ('1-step', (0,), ev.paper_fid_1step, ev.paper_recall_1step),
            ('2-step', tuple(config.sampling.ts), ev.paper_fid_2step, ev.paper_recall_2step)):
        images, _ = generate(config, params, ts, config.sampling.num_samples, normalizer)
        feats = features(images)
        mu, sigma = fid.statistics(feats)
        row = {'run': ev.run_name or os.path.basename(os.path.normpath(workdir)), 'checkpoint': desc,
               'sampler': label, 'num_samples': len(images), 'features': ev.features,
               'fid': fid.frechet_distance(mu, sigma, mu_r, sigma_r), 'paper_fid': paper_fid or None,
               'paper_recall': paper_recall or None}
        if real is not None:
            row['precision'], row['recall'] = precision_recall.precision_recall(real, feats, ev.recall_k)
        rows.append(row)
        if jax.process_index() == 0:
            print(json.dumps(row), flush=True)
    if jax.process_index() == 0:
        results.append_rows(workdir, rows)
        print(f'results table: {os.path.join(workdir, "results.md")}', flush=True)
    return rows


def analyze(config, workdir):
    from lct_jax.evaluation.analysis import analyze_dataset
    analyze_dataset(config, workdir)
