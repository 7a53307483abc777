"""The readers under fuzz: for each, the seed case it reads, the files in it to mutate, the entry
function `lct_jax.main` (or the study CLI) calls on it, and an independent validity check.

`run(case)` returns a digest of what the reader produced. An outcome is judged against the
digest of the unmutated seed case (tests/fuzz/harness.py): the same result, or a different
one from an input that an independent decoder (`valid`) still accepts as a well-formed file of
its kind (e.g. a bit flip inside a JPEG's pixels, a JSON number changed), is a correct result;
a different result from an input no independent decoder accepts is a silent wrong result.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from typing import Callable

import numpy as np

from tests.fuzz import corpus


def digest(obj) -> str:
    """A stable hash of nested dicts / lists / arrays / scalars."""
    h = hashlib.sha256()

    def feed(x):
        if isinstance(x, dict):
            for k in sorted(x, key=str):
                h.update(str(k).encode())
                feed(x[k])
        elif isinstance(x, (list, tuple)):
            h.update(b'[%d' % len(x))
            for v in x:
                feed(v)
        elif hasattr(x, 'shape') and hasattr(x, 'dtype'):
            a = np.ascontiguousarray(np.asarray(x))
            h.update(f'{a.dtype}{a.shape}'.encode())
            h.update(a.tobytes())
        else:
            h.update(repr(x).encode())
    feed(obj)
    return h.hexdigest()


@dataclasses.dataclass(frozen=True)
class Reader:
    name: str
    seed: str                       # the corpus folder (a key of SEEDS)
    files: tuple                    # (path relative to the case, kind of mutations)
    run: Callable[[str], str]       # case dir -> digest of the result
    valid: Callable[[str], bool]    # is a mutated file still well-formed, by an independent decoder?
    name_root: str = ''             # an error may name the file or a folder up to this one (relative)
    may_change: tuple = ()          # files the reader may rewrite (a lock taken over)


# --- seed cases: built once (tests/fuzz/harness.py caches them) ---------------------------------

def build_seeds(root: str) -> None:
    corpus.latent_dir(os.path.join(root, 'latents', 'lat'))
    corpus.tfds_image_dataset(os.path.join(root, 'tfds', 'ds'))
    corpus.image_folder(os.path.join(root, 'images', 'img'))
    wd = corpus.orbax_workdir(os.path.join(root, 'orbax', 'wd'))
    os.makedirs(os.path.join(root, 'authors', 'wd'), exist_ok=True)
    corpus.authors_checkpoint(os.path.join(root, 'authors', 'authors.pt'))
    corpus.weights_files(os.path.join(root, 'weights'))
    corpus.lock_file(os.path.join(root, 'lock', 'wd'))
    corpus.fid_stats(os.path.join(root, 'fid', 'stats.npz'))
    corpus.study_files(os.path.join(root, 'study'))
    corpus.run_results(os.path.join(root, 'run', 'wd'))
    corpus.study_report(os.path.join(root, 'report'))
    del wd


# --- independent validity checks ------------------------------------------------------------

def json_ok(path: str) -> bool:
    try:
        with open(path, 'rb') as f:
            json.loads(f.read().decode('utf-8'))
        return True
    except (ValueError, RecursionError):
        return False


def tfrecord_ok(path: str) -> bool:
    """Every record framed and both of its CRCs right (a plain re-implementation of the framing)."""
    import struct

    import crc32c

    def masked(b):
        c = crc32c.crc32c(b)
        return (((c >> 15) | (c << 17)) + 0xA282EAD8) & 0xFFFFFFFF
    data = open(path, 'rb').read()
    off = 0
    while off < len(data):
        if off + 12 > len(data):
            return False
        (n,), (hc,) = struct.unpack('<Q', data[off:off + 8]), struct.unpack('<I', data[off + 8:off + 12])
        if masked(data[off:off + 8]) != hc or off + 16 + n > len(data):
            return False
        (pc,) = struct.unpack('<I', data[off + 12 + n:off + 16 + n])
        if masked(data[off + 12:off + 12 + n]) != pc:
            return False
        off += 16 + n
    return True


def npz_ok(path: str) -> bool:
    try:
        with np.load(path, allow_pickle=False) as f:
            for k in f.files:
                f[k]
        return True
    except Exception:  # noqa: BLE001 - any failure: numpy itself does not accept it
        return False


def torch_ok(path: str) -> bool:
    import torch

    from lct_jax.untrusted import SAFE_TORCH_GLOBALS
    try:
        with torch.serialization.safe_globals(list(SAFE_TORCH_GLOBALS)):  # torch's own weights-only unpickler
            torch.load(path, map_location='cpu', weights_only=True)
        return True
    except Exception:  # noqa: BLE001
        return False


def safetensors_ok(path: str) -> bool:
    from safetensors.numpy import load_file
    try:
        load_file(path)
        return True
    except Exception:  # noqa: BLE001
        return False


def image_ok(path: str) -> bool:
    from PIL import Image
    try:
        with Image.open(path) as img:
            img.load()
        return True
    except Exception:  # noqa: BLE001
        return False


def python_ok(path: str) -> bool:
    try:
        compile(open(path, 'rb').read(), path, 'exec')
        return True
    except (SyntaxError, ValueError):
        return False


def always(path: str) -> bool:
    return True


VALID_BY_KIND = {'json': json_ok, 'tfrecord': tfrecord_ok, 'npz': npz_ok, 'pt': torch_ok,
                 'safetensors': safetensors_ok, 'image': image_ok, 'python': python_ok}


def valid_by_kind(files):
    kinds = dict(files)

    def valid(path: str) -> bool:
        rel = next((r for r in kinds if path.endswith(r)), None)
        check = VALID_BY_KIND.get(kinds.get(rel))
        return check(path) if check else False
    return valid


# --- the entry functions -------------------------------------------------------------------

def _latents(case):
    from lct_jax.data.latents import LatentDataset
    from lct_jax.data.pipeline import Normalizer
    d = os.path.join(case, 'lat')
    ds = LatentDataset(d)
    items = [ds.read_labeled(i) for i in range(len(ds))]
    n = Normalizer.from_dir(d, 0.5, 'per_element')
    return digest({'latents': [x for x, _ in items], 'labels': [y for _, y in items], 'mean': n.mean, 'std': n.std,
                   'scale': n.scale_factor, 'count': len(ds)})


def _tfds(case):
    from lct_jax.data.sources import TfdsSource
    src = TfdsSource(os.path.join(case, 'ds'), 'train', 8, labels=True)
    return digest({'images': src.images(range(len(src))), 'labels': src.labels(range(len(src))),
                   'classes': src.classes})


def _images(case):
    from lct_jax.data.sources import ImageFolderSource
    src = ImageFolderSource(os.path.join(case, 'img'), 8)
    return digest(src.images(range(len(src))))


def _load_params(case, checkpoint=''):
    from lct_jax.modes import run_weights
    config = corpus.smoke_config()
    params, desc = run_weights.load_params(config, os.path.join(case, 'wd'), checkpoint)
    return digest({'params': params, 'desc': desc})


def _orbax(case):
    return _load_params(case)


def _authors(case):
    return _load_params(case, os.path.join(case, 'authors.pt'))


def _weights(ext):
    def run(case):
        from lct_jax.builders import build_model
        from lct_jax.models.convert import load_state_dict, unet_params_from_torch
        sd = load_state_dict(os.path.join(case, f'weights.{ext}'))
        return digest(unet_params_from_torch(sd, build_model(corpus.smoke_config())))
    return run


def _run_record(case):
    from lct_jax.study import progress
    from lct_jax.workdir import record
    from lct_jax.workdir.record import RunRecord, config_as_dict
    wd = os.path.join(case, 'wd')
    config = corpus.smoke_config()
    changes = RunRecord(wd).check_start(config_as_dict(config), False)
    merged = record.config_of_run(config, wd, {})
    state = progress.run_state(wd)
    return digest({'changes': repr(changes), 'config': merged.to_json_best_effort(sort_keys=True),
                   'state': {k: state[k] for k in ('state', 'step', 'total_steps')}})


def _lock(case):
    from lct_jax.workdir.lock import WorkdirLock
    lock = WorkdirLock(os.path.join(case, 'wd'), stale_after_s=120.0, log=lambda msg: None).acquire()
    lock.release()
    return digest('acquired')


def _fid(case):
    from lct_jax.evaluation import fid
    mu, sigma = fid.load_stats(os.path.join(case, 'stats.npz'))
    return digest({'mu': mu, 'sigma': sigma, 'fd': fid.frechet_distance(mu, sigma, mu, sigma)})


def _study(filename):
    def run(case):
        from lct_jax.study.spec import load_study, plan
        study = load_study(os.path.join(case, filename))
        return digest([dataclasses.asdict(r) | {'workdir': os.path.relpath(r.workdir, case)}
                       for r in plan(study, case)])
    return run


def _run_results(case):
    from lct_jax.study import aggregate, progress
    from lct_jax.study.spec import Run
    wd = os.path.join(case, 'wd')
    run = Run(variant='v', seed=0, workdir=wd, config='', flags=(), eval_flags=())
    state = progress.run_state(wd, (10, 20))
    return digest({'rows': aggregate.collect_rows([run]), 'state': state['state']})


def _report(case):
    from lct_jax.study import compare, pool
    path = os.path.join(case, 'results.json')
    text = compare.table_of([path], ['a'], compare.side_by_side)  # what compare's and pool's main do
    text += compare.table_of([path], ['a'], lambda r: compare.side_by_side(r, late=True))
    return digest(text + compare.table_of([path, path], ['a', 'b'], pool.pooled_table))


SHARDS = (('lat/shard-00000-of-00002.tfrecord', 'tfrecord'), ('lat/shard-00001-of-00002.tfrecord', 'tfrecord'))
TFDS_SHARDS = (('ds/fuzzimages-train.tfrecord-00000-of-00002', 'tfrecord'),)
IMAGES = tuple((f'img/{n}', 'image') for n in ('a_rgb.png', 'b_rgb.jpg', 'c_grey.png', 'd_16bit.png',
                                                  'e_palette.png', 'f_cmyk.jpg', 'g_rgba.png', 'h_1x1.png'))

def _reader(name, seed, files, run, name_root='', may_change=()):
    return Reader(name, seed, tuple(files), run, valid_by_kind(files), name_root, may_change)


def readers(seed_root: str) -> dict[str, Reader]:
    step = os.path.join(seed_root, 'orbax', 'wd', 'checkpoints', '1')
    orbax_files = sorted(os.path.relpath(os.path.join(d, f), os.path.join(seed_root, 'orbax'))
                         for d, _, fs in os.walk(step) for f in fs)
    out = [
        _reader('tfrecord shards', 'latents', SHARDS, _latents, 'lat'),
        _reader('manifest.json', 'latents', [('lat/manifest.json', 'json')], _latents, 'lat'),
        _reader('latent statistics (stats.npz)', 'latents', [('lat/stats.npz', 'npz')], _latents, 'lat'),
        _reader('tfds metadata + shards', 'tfds', [('ds/dataset_info.json', 'json'), ('ds/features.json', 'json'),
                                                 *TFDS_SHARDS], _tfds, 'ds'),
        _reader('images in an image_dir', 'images', IMAGES, _images),
        _reader('Orbax checkpoint (each file)', 'orbax',
                [(f, 'json' if os.path.basename(f).startswith('_') else 'binary') for f in orbax_files], _orbax,
                'wd/checkpoints/1'),
        _reader("authors' .pt checkpoint", 'authors', [('authors.pt', 'pt')], _authors),
        _reader('weights .safetensors', 'weights', [('weights.safetensors', 'safetensors')], _weights('safetensors')),
        _reader('weights .bin', 'weights', [('weights.bin', 'pt')], _weights('bin')),
        _reader('weights .npz', 'weights', [('weights.npz', 'npz')], _weights('npz')),
        _reader('config.json / run.json', 'orbax', [('wd/config.json', 'json'), ('wd/run.json', 'json')], _run_record),
        Reader('lock.json', 'lock', (('wd/lock.json', 'json'),), _lock, always, 'wd', ('wd/lock.json',)),
        _reader('FID statistics .npz', 'fid', [('stats.npz', 'npz')], _fid),
        _reader('study file (.json)', 'study', [('study.json', 'json')], _study('study.json')),
        _reader('study file (.py)', 'study', [('study_fuzz.py', 'python')], _study('study_fuzz.py')),
        _reader("a run's results.json", 'run', [('wd/results.json', 'json')], _run_results, 'wd'),
        _reader('study report results.json (compare, pool)', 'report', [('results.json', 'json')], _report),
    ]
    return {r.name: r for r in out}


def mutation_kind(kind: str) -> str:
    """Which family of format-aware mutators a kind of file gets (tests/fuzz/mutate.py)."""
    return {'tfrecord': 'tfrecord', 'json': 'json', 'npz': 'npz'}.get(kind, 'generic')

