"""`--mode=sample`: each configured sampler's num_samples images from a checkpoint (the newest by
default), written as image files, one .npz and grids, one batch at a time: the images of a batch
are gathered to the hosts, process 0 writes them, and none is kept but the grids' few."""
from __future__ import annotations

import os

import jax
import numpy as np

from lct_jax import parallel
from lct_jax.builders import (
    build_objective,
    configured_samplers,
    make_normalizer,
    make_sampler,
    num_classes_of,
)
from lct_jax.evaluation import sharded
from lct_jax.evaluation.evaluator import replicated_on
from lct_jax.images import save_grid, save_image
from lct_jax.models.autoencoder import make_codec
from lct_jax.modes.recorded import run_config
from lct_jax.modes.run_weights import load_params
from lct_jax.names import check_component
from lct_jax.progress import Progress
from lct_jax.streamed_npz import StreamedNpz

IMAGE_EXTENSIONS = {'jpeg': 'jpg', 'png': 'png'}


def generate(config, params, sampler, num: int, normalizer, mesh=None, show_progress: bool = True):
    """(uint8 images NHWC, normalised latents) of samples 0..num-1 with per-sample noise, decoded on
    the mesh and gathered batch by batch. It returns every image, so it is for small `num`:
    `--mode=evaluate` gathers features only (evaluation/sharded.py), `--mode=sample` writes batch
    by batch."""
    mesh = mesh or parallel.make_mesh()
    decoder = sharded.make_image_decoder(make_codec(config.autoencoder, config.model.in_channels), normalizer, mesh)
    progress = Progress('sample', num, unit='img', enabled=show_progress and jax.process_index() == 0)
    images, lats = [], []
    for start, img, x in sharded.image_batches(make_sampler(config, sampler, mesh), replicated_on(params, mesh),
                                               decoder, num, sharded.padded_batch(config.sampling, mesh, num),
                                               mesh, with_latents=True):
        images.append(img)
        lats.append(x)
        progress.update(start + len(img))
    progress.close()
    return np.concatenate(images), np.concatenate(lats)


def samples_dir_name(desc: str, label: str) -> str:
    """'step 2500:ema_0.99' + '1step' -> 'step_2500_ema_0.99_1step': one plain path component
    (a checkpoint's EMA name comes from the checkpoint, a file from someone else)."""
    return check_component(f'{desc.replace(" ", "_").replace(":", "_")}_{label}', 'a samples folder name')


def sample(config, workdir, checkpoint=''):
    params, desc = load_params(config, workdir, checkpoint)
    normalizer = make_normalizer(config, workdir)
    fmt = config.sampling.image_format
    ext = IMAGE_EXTENSIONS.get(fmt)
    if ext is None:
        raise ValueError(f'sampling.image_format {fmt!r}; valid: {tuple(IMAGE_EXTENSIONS)}')
    mesh = parallel.make_mesh()
    params = replicated_on(params, mesh)
    decoder = sharded.make_image_decoder(make_codec(config.autoencoder, config.model.in_channels), normalizer, mesh)
    num = config.sampling.num_samples
    batch = sharded.padded_batch(config.sampling, mesh, num)
    classes = num_classes_of(config)
    shown = min(classes, int(config.sampling.get('class_grids', 16)))
    writer = jax.process_index() == 0
    objective = build_objective(config)
    for spec in configured_samplers(config, objective):
        label = spec.file_label  # 1step / 2step, or euler250 / heun40 (config.sampling.sampler)
        out = os.path.join(workdir, 'samples', samples_dir_name(desc, label))
        npz, grid, per_class = None, [], {c: [] for c in range(shown)}
        progress = Progress(f'sample {label}', num, unit='img', enabled=writer)
        if writer:
            os.makedirs(out, exist_ok=True)
        for start, images in sharded.image_batches(make_sampler(config, spec, mesh, objective=objective), params,
                                                   decoder, num, batch, mesh):
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


def run(config, workdir: str, flags) -> None:
    sample(run_config(config, workdir, flags.overrides), workdir, flags.checkpoint)
