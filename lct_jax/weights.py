"""Weights by path or by name: local files and folders, Hugging Face hub ids, URLs into a cache.

The config names weights in whichever form a user has them:
  - a local file (`.safetensors`, `.bin`, `.pt`/`.pth`, `.npz`);
  - a local diffusers folder (`config.json` + `diffusion_pytorch_model.*`, or a
    pipeline folder with a `vae/` subfolder);
  - a hub id `owner/name[/subfolder][@revision]`, resolved by `huggingface_hub`
    in its cache first (no request at all when the files are there), downloaded
    only when absent and not offline;
  - an http(s) or file URL, downloaded once into torch hub's checkpoint cache
    (where pytorch-fid and torchvision put the same files) and checked against
    the sha256 prefix in its name, as `torch.hub` does.
`HF_HUB_OFFLINE=1` forbids every download, hub and URL alike: clusters without
a network get a one-line error naming what is missing and where it was looked for.
"""
from __future__ import annotations

import dataclasses
import hashlib
import os
import re
import urllib.request

from lct_jax import writer
from lct_jax.cache_dirs import xdg_cache_home
from lct_jax.untrusted import read_json

# pytorch-fid's FID InceptionV3 (pytorch_fid.inception.FID_WEIGHTS_URL) and
# torchvision's VGG16 (torchvision.models.VGG16_Weights.IMAGENET1K_V1).
FID_INCEPTION_URL = ('https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/'
                     'pt_inception-2015-12-05-6726825d.pth')
VGG16_URL = 'https://download.pytorch.org/models/vgg16-397923af.pth'

WEIGHTS_SUFFIXES = ('.safetensors', '.bin', '.pt', '.pth', '.npz', '.ckpt')
DIFFUSERS_WEIGHTS = ('diffusion_pytorch_model.safetensors', 'diffusion_pytorch_model.bin')
_HUB_ID = re.compile(r'^(?P<repo>[\w.-]+/[\w.-]+)(?:/(?P<sub>[\w./-]+?))?(?:@(?P<rev>[\w./-]+))?$')
_URL_HASH = re.compile(r'-([a-f0-9]+)\.')  # torch.hub's convention: name-<sha256 prefix>.ext


class WeightsNotFoundError(FileNotFoundError):
    """Named weights are neither on disk nor in a cache (and could not or may not be fetched)."""


def is_offline() -> bool:
    """HF_HUB_OFFLINE as huggingface_hub reads it, but at call time (tests and users set it late)."""
    value = os.environ.get('HF_HUB_OFFLINE') or os.environ.get('TRANSFORMERS_OFFLINE') or ''
    return value.upper() in ('1', 'ON', 'YES', 'TRUE')


def _offline_note() -> str:
    return 'HF_HUB_OFFLINE=1, so nothing was downloaded' if is_offline() else 'HF_HUB_OFFLINE is not set'


# --- diffusers autoencoders: file, folder or hub id ------------------------------------------

@dataclasses.dataclass
class DiffusersWeights:
    """A resolved diffusers model: its weights file and, when there is one, its config.json."""
    weights_file: str
    config: dict | None
    origin: str  # what the config named, for messages and provenance


def _read_config(path: str) -> dict | None:
    if not os.path.isfile(path):
        return None
    return read_json(path, "a diffusers model's config.json", expect=dict)


def _from_folder(folder: str, origin: str) -> DiffusersWeights:
    for candidate in (folder, os.path.join(folder, 'vae')):  # a model folder, or a whole pipeline's
        for name in DIFFUSERS_WEIGHTS:
            path = os.path.join(candidate, name)
            if os.path.isfile(path):
                return DiffusersWeights(path, _read_config(os.path.join(candidate, 'config.json')), origin)
    raise WeightsNotFoundError(f'{origin}: the folder {folder} holds none of {DIFFUSERS_WEIGHTS} '
                               f'(nor does a vae/ subfolder)')


def parse_hub_id(spec: str):
    """'owner/name[/subfolder][@revision]' -> (repo_id, subfolder or None, revision or None), else None."""
    m = _HUB_ID.match(spec)
    if not m or spec.startswith(('.', '/', '~')):
        return None
    return m.group('repo'), m.group('sub'), m.group('rev')


def _hub_file(repo_id, filename, subfolder, revision, cache_dir):
    """The cached file if there is one (no request), else a download unless offline; None if absent."""
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError, LocalEntryNotFoundError
    kwargs = dict(subfolder=subfolder, revision=revision, cache_dir=cache_dir)
    try:
        return hf_hub_download(repo_id, filename, local_files_only=True, **kwargs)
    except LocalEntryNotFoundError:
        if is_offline():
            return None
    try:
        return hf_hub_download(repo_id, filename, **kwargs)
    except EntryNotFoundError:
        return None


def _from_hub(spec: str, what: str) -> DiffusersWeights:
    from huggingface_hub import constants
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError
    repo_id, subfolder, revision = parse_hub_id(spec)
    cache_dir = constants.HF_HUB_CACHE
    try:
        weights = next((p for p in (_hub_file(repo_id, name, subfolder, revision, cache_dir)
                                    for name in DIFFUSERS_WEIGHTS) if p), None)
        config = _hub_file(repo_id, 'config.json', subfolder, revision, cache_dir) if weights else None
    except (HfHubHTTPError, LocalEntryNotFoundError, OSError) as e:
        raise WeightsNotFoundError(
            f'{what}={spec!r}: not a local file or folder, and the Hugging Face hub id could not be '
            f'fetched into the cache {cache_dir} ({_offline_note()}): {type(e).__name__}: '
            f'{str(e).splitlines()[0] if str(e) else ""}') from None
    if weights is None:
        raise WeightsNotFoundError(
            f'{what}={spec!r}: not a local file or folder, and the Hugging Face hub id is not in the cache '
            f'{cache_dir} ({_offline_note()}); fetch it once where there is a network '
            f'(`hf download {repo_id}{f" --revision {revision}" if revision else ""}`) or name a local file')
    return DiffusersWeights(weights, _read_config(config) if config else None, spec)


def resolve_diffusers(spec: str, what: str = 'autoencoder.weights') -> DiffusersWeights:
    """A local file, a local diffusers folder, or a hub id -> the weights file and its config.json.

    A local file takes the config.json beside it, if any (the layout of a
    downloaded diffusers folder), so the architecture always comes with the weights.
    """
    if not spec:
        raise ValueError(f'{what} is empty: name a local weights file, a diffusers folder or a hub id '
                         f'such as stabilityai/sd-vae-ft-ema')
    path = os.path.expanduser(spec)
    if os.path.isfile(path):
        return DiffusersWeights(path, _read_config(os.path.join(os.path.dirname(path), 'config.json')), spec)
    if os.path.isdir(path):
        return _from_folder(path, spec)
    if path.lower().endswith(WEIGHTS_SUFFIXES) or parse_hub_id(spec) is None:
        raise WeightsNotFoundError(f'{what}: weights file not found: {spec}')
    return _from_hub(spec, what)


# --- single files by URL: FID Inception, VGG16 -------------------------------------------------

def torch_hub_checkpoints_dir() -> str:
    """Where torch.hub (so pytorch-fid and torchvision) caches downloaded weights."""
    torch_home = os.environ.get('TORCH_HOME') or os.path.join(xdg_cache_home(), 'torch')
    return os.path.join(os.path.expanduser(torch_home), 'hub', 'checkpoints')


def _download(url: str, dest: str, hash_prefix: str | None) -> None:
    """Stream `url` to `dest` through a temporary file; keep it only if its sha256 starts as named."""
    digest = hashlib.sha256()
    with urllib.request.urlopen(url, timeout=60) as response, writer.atomic_file(dest, 'wb') as f:
        for chunk in iter(lambda: response.read(1 << 20), b''):
            digest.update(chunk)
            f.write(chunk)
        if hash_prefix and not digest.hexdigest().startswith(hash_prefix):
            raise ValueError(f'{url}: sha256 {digest.hexdigest()[:16]}... does not start with {hash_prefix} '
                             f'as its name says; the download is corrupt (nothing was kept)')


def resolve_file(spec: str, what: str, cache_dir: str | None = None) -> str:
    """A local path, or a URL fetched once into the cache (checked by the hash in its name)."""
    if not spec:
        raise ValueError(f'{what} is empty: name a local weights file or a URL')
    if not re.match(r'^(https?|file)://', spec):
        path = os.path.expanduser(spec)
        if not os.path.isfile(path):
            raise WeightsNotFoundError(f'{what}: weights file not found: {spec}')
        return path
    cache_dir = cache_dir or torch_hub_checkpoints_dir()
    name = os.path.basename(urllib.request.urlparse(spec).path)
    dest = os.path.join(cache_dir, name)
    if os.path.isfile(dest):
        return dest
    if is_offline():
        raise WeightsNotFoundError(f'{what}={spec}: {name} is not in the cache {cache_dir} '
                                   f'(HF_HUB_OFFLINE=1, so nothing was downloaded); put the file there '
                                   f'or name a local path')
    os.makedirs(cache_dir, exist_ok=True)
    match = _URL_HASH.search(name)
    try:
        _download(spec, dest, match.group(1) if match else None)
    except OSError as e:
        raise WeightsNotFoundError(f'{what}={spec}: download into {cache_dir} failed '
                                   f'({type(e).__name__}: {e}); put {name} there or name a local path') from None
    return dest


def inception_weights_file(spec: str = FID_INCEPTION_URL) -> str:
    return resolve_file(spec, 'evaluation.inception_weights')


def vgg16_weights_file(spec: str = VGG16_URL) -> str:
    return resolve_file(spec, 'evaluation.vgg16_weights')
