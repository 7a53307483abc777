"""Real files of every kind lct_jax reads, made by the project's own writers on tiny data.

`build(root)` makes one "seed case" per reader: a folder holding the files that reader reads
(a latent directory from a real encode, a work directory with a real run record and Orbax
checkpoint, an authors'-layout .pt, weights in each format, FID statistics, an image folder,
study files, tfds metadata). The fuzzer copies a seed case, mutates one of its files and runs
the reader on the copy (tests/fuzz/targets.py).
"""
from __future__ import annotations

import argparse
import io
import json
import os
import struct

import numpy as np

CONFIG = 'configs/default.py:smoke'  # the tests' tiny UNet (8x8x1 digits)


def smoke_config(**overrides):
    from configs.default import get_config
    config = get_config('smoke')
    for key, value in overrides.items():
        node = config
        *path, leaf = key.split('.')
        for p in path:
            node = node[p]
        node[leaf] = value
    return config


def _images(n: int, size: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (size, size, 3), dtype=np.uint8) for _ in range(n)]


def image_folder(root: str) -> str:
    """PNG and JPEG files of the modes users meet: RGB, L, 16-bit, palette, CMYK, RGBA, 1x1, a
    thin strip; each a valid image the reader must decode to the right pixels."""
    from PIL import Image
    os.makedirs(root, exist_ok=True)
    imgs = _images(4, 12)
    Image.fromarray(imgs[0]).save(os.path.join(root, 'a_rgb.png'))
    Image.fromarray(imgs[1]).save(os.path.join(root, 'b_rgb.jpg'), quality=90)
    Image.fromarray(imgs[2][..., 0]).save(os.path.join(root, 'c_grey.png'))
    ramp = (np.arange(12 * 12, dtype=np.uint16).reshape(12, 12) * 450).astype(np.uint16)
    Image.fromarray(ramp).save(os.path.join(root, 'd_16bit.png'))     # mode I;16 (PIL) / 16-bit PNG
    Image.fromarray(imgs[3]).convert('P', palette=Image.ADAPTIVE, colors=16).save(os.path.join(root, 'e_palette.png'))
    Image.fromarray(imgs[0]).convert('CMYK').save(os.path.join(root, 'f_cmyk.jpg'))
    Image.fromarray(np.dstack([imgs[1], imgs[2][..., :1]])).save(os.path.join(root, 'g_rgba.png'))
    Image.fromarray(np.full((1, 1, 3), 200, np.uint8)).save(os.path.join(root, 'h_1x1.png'))
    Image.fromarray(_images(1, 3)[0].repeat(40, axis=1)[:, :, :]).save(os.path.join(root, 'i_strip.png'))
    return root


def decompression_bomb(path: str) -> str:
    """A tiny PNG whose header declares more pixels than PIL.Image.MAX_IMAGE_PIXELS (89.5 M)."""
    import zlib
    w = h = 20000  # 400 M pixels: past PIL's limit, 7 KB on disk (zero rows compress to nothing)
    raw = zlib.compress(b'\x00' * (w // 8 + 1) * 64, 9)  # a few rows; the decoder never gets that far

    def chunk(kind, data):
        return struct.pack('>I', len(data)) + kind + data + struct.pack('>I', zlib.crc32(kind + data))
    with open(path, 'wb') as f:
        f.write(b'\x89PNG\r\n\x1a\n' + chunk(b'IHDR', struct.pack('>IIBBBBB', w, h, 1, 0, 0, 0, 0))
                + chunk(b'IDAT', raw) + chunk(b'IEND', b''))
    return path


def latent_dir(root: str) -> str:
    """A real encode of a tiny image folder (pixel space: the identity codec): 2 shards, manifest,
    stats.npz and the tfds metadata, as `--mode=encode` writes them."""
    from lct_jax.data.encode import encode_dataset
    from lct_jax.data.sources import ImageFolderSource
    from lct_jax.models.autoencoder import make_codec
    src_dir = os.path.join(os.path.dirname(root), 'encode_source')
    from PIL import Image
    os.makedirs(src_dir, exist_ok=True)
    for i, img in enumerate(_images(6, 8, seed=1)):
        Image.fromarray(img[..., 0]).save(os.path.join(src_dir, f'{i}.png'))
    config = smoke_config()
    source = ImageFolderSource(src_dir, 8)
    codec = make_codec(config.autoencoder, 3)
    encode_dataset(source, codec, root, seed=0, batch_size=4, examples_per_shard=3)
    return root


def authors_state_dict(seed: int = 0) -> dict:
    """The smoke UNet as the authors' DhariwalUNet state dict (torch tensors)."""
    import torch

    from lct_jax.builders import build_model
    from tests.reference.torch_unet import DhariwalUNet
    m = build_model(smoke_config())
    torch.manual_seed(seed)
    ref = DhariwalUNet(img_resolution=m.img_resolution, in_channels=m.in_channels, out_channels=m.out_channels,
                       model_channels=m.model_channels, channel_mult=tuple(m.channel_mult),
                       num_blocks=m.num_blocks, attn_resolutions=tuple(m.attn_resolutions),
                       block_norm=m.block_norm, out_norm=m.out_norm)
    return ref.state_dict()


def authors_checkpoint(path: str) -> str:
    """The layout of the authors' train script: model, ema, target, opt, args (an argparse.Namespace),
    epoch, train_steps; `ema_0.99` as well, the key our config's sampling.ema names."""
    import torch
    sd = authors_state_dict()
    params = [torch.nn.Parameter(v.clone()) for v in sd.values() if v.dtype.is_floating_point]
    opt = torch.optim.AdamW(params, lr=1e-4, betas=(0.9, 0.999))
    opt.step()  # an optimizer state with moments, as a trained run's
    # an EMA a little off the weights (frozen norm scales and resampling filters are what they are)
    ema = {k: v if 'norm' in k or 'resample' in k else v + 0.01 for k, v in sd.items()}
    args = argparse.Namespace(exp='lct', lr=1e-4, num_steps=[10, 1280], model_type='ddpm++', ema_decay=0.999,
                              use_ema=True, resume=None, compile=False)
    torch.save({'epoch': 3, 'train_steps': 300, 'args': args, 'model': sd, 'opt': opt.state_dict(),
                'ema': ema, 'ema_0.99': ema, 'target': {k: v.clone() for k, v in sd.items()}}, path)
    return path


def weights_files(root: str) -> dict[str, str]:
    """The same state dict as .safetensors, .bin, .pt and .npz."""
    import torch
    from safetensors.torch import save_file
    os.makedirs(root, exist_ok=True)
    sd = {k: v.contiguous() for k, v in authors_state_dict(1).items()}
    paths = {ext: os.path.join(root, f'weights.{ext}') for ext in ('safetensors', 'bin', 'pt', 'npz')}
    save_file(sd, paths['safetensors'])
    torch.save(sd, paths['bin'])
    torch.save(sd, paths['pt'])
    np.savez(paths['npz'], **{k: v.numpy() for k, v in sd.items()})
    return paths


def orbax_workdir(wd: str) -> str:
    """A work directory holding an Orbax checkpoint of the smoke model (params, one EMA, step)
    written by lct_jax.train.checkpoints, and the run record of a real start."""
    import jax
    import jax.numpy as jnp

    from lct_jax.builders import build_model
    from lct_jax.train import checkpoints
    from lct_jax.workdir.session import WriterSession
    config = smoke_config()
    m = build_model(config)
    params = m.init(jax.random.key(0), jnp.zeros((1, 8, 8, 1)), jnp.zeros((1,)))['params']
    ema = jax.tree_util.tree_map(lambda p: p + 0.5, params)
    with WriterSession(wd, config) as session:
        manager = checkpoints.make_manager(wd, async_save=False)
        checkpoints.save(manager, 1, {'params': params, 'ema': {'ema_0.99': ema}, 'step': jnp.int32(1)}, force=True)
        checkpoints.wait(manager)
        checkpoints.close(manager)
        session.on_start(0)
        session.finish(1, 'finished')
    return wd


def lock_file(wd: str) -> str:
    """A lock.json as WorkdirLock writes it, of a process that is gone (a dead pid on this host)."""
    import socket
    import time
    os.makedirs(wd, exist_ok=True)
    holder = {'host': socket.gethostname(), 'pid': 2 ** 22 + 12345, 'job': None, 'started': '2024-01-01T00:00:00',
              'heartbeat': time.time() - 10, 'heartbeat_every_s': 10.0, 'stale_after_s': 120.0,
              'command': 'python -m lct_jax.main --mode=train', 'token': 'f' * 32}
    with open(os.path.join(wd, 'lock.json'), 'w') as f:
        json.dump(holder, f, indent=1)
    return wd


def fid_stats(path: str) -> str:
    from lct_jax.evaluation import fid
    os.makedirs(os.path.dirname(path), exist_ok=True)
    rng = np.random.default_rng(0)
    f = rng.standard_normal((40, 6))
    fid.save_stats(path, *fid.statistics(f))
    return path


STUDY = {'name': 'fuzz', 'config': CONFIG, 'variants': {'sLCT': '', 'iLCT': 'ilct',
                                                        'huber': {'config': '', 'overrides': ['--config.consistency.loss_norm=huber']}},
         'seeds': [0, 1], 'baseline': 'sLCT', 'overrides': ['--config.total_steps=20'], 'eval_steps': [10, 20]}


def study_files(root: str) -> dict[str, str]:
    os.makedirs(root, exist_ok=True)
    paths = {'json': os.path.join(root, 'study.json'), 'py': os.path.join(root, 'study_fuzz.py')}
    with open(paths['json'], 'w') as f:
        json.dump(STUDY, f, indent=1)
    with open(paths['py'], 'w') as f:
        f.write('"""A study file as the committed ones are written."""\n'
                f'SEEDS = {STUDY["seeds"]!r}\nSTUDY = dict(\n'
                + ''.join(f'    {k}={v!r},\n' for k, v in STUDY.items() if k != 'seeds') + '    seeds=SEEDS,\n)\n')
    return paths


def run_results(wd: str) -> str:
    """A run's evaluation rows (results.json) as `--mode=evaluate` appends them, and its record."""
    from lct_jax.evaluation import results
    os.makedirs(wd, exist_ok=True)
    rows = [{'run': 'seed_0', 'checkpoint': f'step {s}:ema_0.99', 'dataset': 'digits', 'method': 'sLCT',
             'sampler': sampler, 'nfe': nfe, 'num_samples': 64, 'features': 'digits_mlp', 'fid': 10.0 / s + nfe,
             'paper_fid': None, 'paper_recall': None} for s in (10, 20) for sampler, nfe in (('1-step', 1), ('2-step', 2))]
    results.append_rows(wd, rows)
    with open(os.path.join(wd, 'config.json'), 'w') as f:
        json.dump({'total_steps': 20}, f)
    with open(os.path.join(wd, 'run.json'), 'w') as f:
        json.dump({'created': '2024-01-01T00:00:00', 'config_changes': [],
                   'segments': [{'from_step': 0, 'to_step': 20, 'end': 'finished', 'started': '2024-01-01T00:00:00'}]}, f)
    return wd


def study_report(root: str) -> str:
    """A study report's results.json (the input of compare and pool), from the real report writer."""
    from lct_jax.study import progress, report
    from lct_jax.study.spec import plan, study_from_dict
    study = study_from_dict(STUDY, 'fuzz.json')
    workroot = os.path.join(root, 'workroot')
    runs = plan(study, workroot)
    for r in runs:
        run_results(r.workdir)
    report.write_report(study, runs, progress.progress_table(runs, study.eval_steps)[0], root)
    return os.path.join(root, 'results.json')


def tfds_image_dataset(root: str) -> str:
    """A tfds dataset as `tfds build` leaves it (dataset_info.json, features.json, TFRecord shards
    of Examples with a PNG `image` and a `label`), written with tfds' own DatasetInfo."""
    import tensorflow_datasets as tfds
    from PIL import Image
    from tensorflow_datasets.core import naming

    from lct_jax.data import example_codec, tfrecord
    os.makedirs(root, exist_ok=True)
    images = _images(4, 8, seed=2)
    lengths = [2, 2]
    for s, n in enumerate(lengths):
        path = os.path.join(root, f'fuzzimages-train.tfrecord-{s:05d}-of-{len(lengths):05d}')
        with tfrecord.TFRecordWriter(path) as w:
            for img in images[2 * s:2 * s + n]:
                buf = io.BytesIO()
                Image.fromarray(img).save(buf, format='PNG')
                w.write(example_codec.encode_example({'image': [buf.getvalue()], 'label': [s]}))
    template = naming.ShardedFileTemplate(data_dir=root, template=naming.DEFAULT_FILENAME_TEMPLATE,
                                          dataset_name='fuzzimages', split='train', filetype_suffix='tfrecord')
    features = tfds.features.FeaturesDict({'image': tfds.features.Image(shape=(8, 8, 3)),
                                           'label': tfds.features.ClassLabel(names=['a', 'b'])})
    split = tfds.core.SplitInfo(name='train', shard_lengths=lengths, num_bytes=1, filename_template=template)
    identity = tfds.core.DatasetIdentity(name='fuzzimages', version=tfds.core.Version('1.0.0'), data_dir=root,
                                         module_name='')
    info = tfds.core.DatasetInfo(builder=identity, features=features, description='fuzz')
    info.set_file_format('tfrecord')
    info.set_splits(tfds.core.SplitDict([split]))
    info.write_to_directory(root)
    return root
