"""PyTorch state_dicts -> Flax params, strictly (missing, unexpected and mis-shaped keys).

Each converter builds the table {torch name: (flax path, layout transform)}
from the Flax model's own parameter shapes, then `strict_convert` fills it
from the state_dict and reports every problem at once.
"""
from __future__ import annotations

import os
import re
from typing import Callable, Iterable, Mapping

import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from lct_jax import untrusted
from lct_jax.models.dit import DiT, sincos_2d
from lct_jax.models.norms import has_scale
from lct_jax.models.vgg16 import BLOCKS
from lct_jax.untrusted import UnreadableFileError


class WeightsError(ValueError):
    """A weights file does not fit the model: lists everything that is wrong."""


class StateDict(dict):
    """{name: array} read from a file, which it remembers (`source`) so that a conversion error names it."""
    source: str = ''


def _from_file(arrays: dict, path: str) -> StateDict:
    sd = StateDict(arrays)
    sd.source = path
    return sd


def to_numpy(value) -> np.ndarray:
    if hasattr(value, 'detach'):  # a torch tensor; torch stays an optional dependency
        value = value.detach().cpu().float().numpy()
    return np.asarray(value)


def load_state_dict(path: str) -> dict[str, np.ndarray]:
    """Read a `.safetensors`, `.pt`/`.pth`/`.bin` (torch) or `.npz` file into numpy arrays.

    No format runs code from the file (lct_jax/untrusted.py); a damaged file, or one that
    holds no {name: array} table, is an UnreadableFileError naming it."""
    if not os.path.exists(path):
        raise FileNotFoundError(f'weights file not found: {path}')
    if path.endswith('.safetensors'):
        return _from_file(untrusted.load_safetensors(path, 'weights'), path)
    if path.endswith('.npz'):
        return _from_file(untrusted.load_npz(path, 'weights'), path)
    return _from_file(state_dict_arrays(untrusted.torch_load(path, 'weights'), path), path)


def state_dict_arrays(obj, path: str, what: str = 'weights') -> dict[str, np.ndarray]:
    """{name: numpy array} of a loaded state dict; UnreadableFileError if it is not one."""
    if not isinstance(obj, Mapping):
        raise UnreadableFileError(f'{path}: expected {what} as a state dict {{name: tensor}}, found a '
                                  f'{type(obj).__name__}')
    out = {}
    for k, v in obj.items():
        if not isinstance(k, str) or not (hasattr(v, 'detach') or isinstance(v, np.ndarray)):
            raise UnreadableFileError(f'{path}: {what}: entry {k!r:.60} is a {type(v).__name__}, not a '
                                      f'tensor; expected a state dict {{name: tensor}}')
        try:
            out[k] = to_numpy(v)
        except (RuntimeError, TypeError, ValueError) as e:
            raise UnreadableFileError(f'{path}: {what}: tensor {k!r:.60} cannot be read as numbers: '
                                      f'{type(e).__name__}: {e}') from None
    return _from_file(out, path)


def conv_from_torch(w):   # (O, I, kh, kw) -> (kh, kw, I, O)
    return np.transpose(w, (2, 3, 1, 0))


def dense_from_torch(w):  # (O, I) -> (I, O)
    return np.transpose(w)


def chw_from_torch(w):    # per-position norm params (C, H, W) -> (H, W, C)
    return np.transpose(w, (1, 2, 0)) if w.ndim == 3 else w


def identity(w):
    return w


Entry = tuple[tuple[str, ...], Callable[[np.ndarray], np.ndarray]]


def strict_convert(state_dict: Mapping, table: Mapping[str, Entry], target_shapes: Mapping,
                   what: str, allowed_extra: Mapping[str, Callable[[np.ndarray], str | None]] = None,
                   strip_prefixes: Iterable[str] = ('module.',)) -> dict:
    """Fill the Flax tree described by `table` from `state_dict`, or raise one WeightsError.

    allowed_extra: torch names not in the model that a file may hold (frozen
    scales, resampling buffers), each with a check returning an error or None.
    """
    sd = {}
    for k, v in state_dict.items():
        for p in strip_prefixes:
            if k.startswith(p):
                k = k[len(p):]
        sd[k] = v
    allowed_extra = allowed_extra or {}
    missing = sorted(k for k in table if k not in sd)
    unexpected, bad_shape, bad_value, flat = [], [], [], {}
    for k, v in sd.items():
        if k in table:
            path, transform = table[k]
            arr = transform(to_numpy(v))
            want = tuple(target_shapes[path])
            if tuple(arr.shape) != want:
                bad_shape.append(f'{k}: file {tuple(to_numpy(v).shape)} -> {tuple(arr.shape)}, model needs {want}')
            else:
                flat[path] = jnp.asarray(arr, jnp.float32)
        elif k in allowed_extra:
            problem = allowed_extra[k](to_numpy(v))
            if problem:
                bad_value.append(f'{k}: {problem}')
        else:
            unexpected.append(k)
    if missing or unexpected or bad_shape or bad_value:
        source = getattr(state_dict, 'source', '')
        lines = [f'{what}: the weights {f"in {source} " if source else ""}do not fit the model.']
        for title, items in (('missing keys', missing), ('unexpected keys', sorted(unexpected)),
                             ('wrong shapes', bad_shape), ('wrong values', bad_value)):
            if items:
                lines.append(f'  {title} ({len(items)}): ' + ', '.join(items[:50])
                             + (' ...' if len(items) > 50 else ''))
        raise WeightsError('\n'.join(lines))
    return traverse_util.unflatten_dict(flat)


def param_shapes(model, *init_args) -> dict:
    """Flat {path: shape} of a Linen model's params, without allocating them."""
    shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), *init_args))
    return {k: v.shape for k, v in traverse_util.flatten_dict(shapes['params']).items()}


def expect_ones(arr):
    return None if np.all(arr == 1) else 'a frozen scale must be all ones'


def expect_box_filter(arr):
    want = np.full((1, 1, 2, 2), 0.25, np.float32)
    return None if arr.shape == want.shape and np.allclose(arr, want) else \
        'only the [1,1] resampling filter is supported'


# --- UNet ---------------------------------------------------------------------

def _unet_torch_module(flax_module: str) -> str:
    if flax_module.startswith(('enc_', 'dec_')):
        return flax_module.replace('_', '.', 1)
    return flax_module


def unet_params_from_torch(state_dict: Mapping, model) -> dict:
    """Params for `lct_jax.models.unet.UNet` from a DhariwalUNet state_dict (EDM names)."""
    r = model.img_resolution
    shapes = param_shapes(model, jnp.zeros((1, r, r, model.in_channels)), jnp.zeros((1,)))
    table = {}
    for path in shapes:
        *mods, leaf = path
        torch_mod = '.'.join([_unet_torch_module(mods[0])] + list(mods[1:]))
        is_norm = 'norm' in mods[-1]
        if leaf == 'kernel':
            transform = conv_from_torch if len(shapes[path]) == 4 else dense_from_torch
            table[f'{torch_mod}.weight'] = (path, transform)
        else:
            table[f'{torch_mod}.{"weight" if leaf == "scale" else "bias"}'] = \
                (path, chw_from_torch if is_norm else identity)
    extra = {}
    _, enc, dec = model.layout()
    for spec in enc + dec:
        if spec.up or spec.down:
            extra[f'{spec.name}.conv0.resample_filter'] = expect_box_filter
            extra[f'{spec.name}.skip.resample_filter'] = expect_box_filter
        norms = ['norm0', 'norm1'] + (['norm2'] if spec.attention else [])
        if not has_scale(model.block_norm):
            for n in norms:
                extra[f'{spec.name}.{n}.weight'] = expect_ones
    if not has_scale(model.out_norm):
        extra['out_norm.weight'] = expect_ones
    return strict_convert(state_dict, table, shapes, 'UNet', extra)


# --- SD VAE (diffusers AutoencoderKL) -------------------------------------------

_LEGACY_VAE_ATTENTION = {'query': 'to_q', 'key': 'to_k', 'value': 'to_v', 'proj_attn': 'to_out.0'}


def _torch_vae_module(part: str) -> str:
    # 'down_blocks_0_resnets_1' -> 'down_blocks.0.resnets.1', 'to_out_0' -> 'to_out.0'
    return re.sub(r'_(\d+)(?=_|$)_?', lambda m: '.' + m.group(1) + ('.' if m.end() < len(part) else ''), part)


def _modernise_vae_keys(state_dict: Mapping) -> dict:
    """Old diffusers files name the mid-block attention query/key/value/proj_attn (maybe as 1x1 convs)."""
    out = {}
    for k, v in state_dict.items():
        parts = k.split('.')
        if len(parts) >= 2 and parts[-2] in _LEGACY_VAE_ATTENTION:
            parts[-2] = _LEGACY_VAE_ATTENTION[parts[-2]]
            v = to_numpy(v)
            if v.ndim == 4:
                v = v[:, :, 0, 0]
        out['.'.join(parts)] = v
    return _from_file(out, getattr(state_dict, 'source', ''))


def vae_params_from_torch(state_dict: Mapping, model) -> dict:
    """Params for `autoencoder.AutoencoderKL` from a diffusers AutoencoderKL state_dict."""
    x = jnp.zeros((1, 8 * 2 ** (len(model.block_out_channels) - 1), 8 * 2 ** (len(model.block_out_channels) - 1),
                   model.in_channels))
    shapes = param_shapes(model, x)
    table = {}
    for path in shapes:
        *mods, leaf = path
        torch_mod = '.'.join(_torch_vae_module(m) for m in mods)
        if leaf == 'kernel':
            transform = conv_from_torch if len(shapes[path]) == 4 else dense_from_torch
            table[f'{torch_mod}.weight'] = (path, transform)
        else:
            table[f'{torch_mod}.{"weight" if leaf == "scale" else "bias"}'] = (path, identity)
    return strict_convert(_modernise_vae_keys(state_dict), table, shapes, 'AutoencoderKL')


# --- FID InceptionV3 (pytorch-fid's pt_inception-2015-12-05 file) ------------------

def inception_params_from_torch(state_dict: Mapping, model) -> dict:
    """Variables {'params', 'batch_stats'} for `inception.InceptionV3` from a pt_inception state_dict."""
    shapes_tree = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, 299, 299, 3))))
    shapes = {k: v.shape for k, v in traverse_util.flatten_dict(shapes_tree).items()}
    leaf_names = {'kernel': 'conv.weight', 'bn_scale': 'bn.weight', 'bn_bias': 'bn.bias',
                  'mean': 'bn.running_mean', 'var': 'bn.running_var'}
    table = {}
    for path in shapes:
        collection, *mods, leaf = path
        if leaf == 'kernel':
            mods = mods[:-1]  # the inner nn.Conv is named 'conv' already
        torch_name = '.'.join(mods + [leaf_names[leaf]])
        table[torch_name] = (path, conv_from_torch if leaf == 'kernel' else identity)
    extra = {'fc.weight': lambda a: None, 'fc.bias': lambda a: None}
    for name in table:
        if name.endswith('bn.weight'):
            extra[name.replace('bn.weight', 'bn.num_batches_tracked')] = lambda a: None
    return strict_convert(state_dict, table, shapes, 'InceptionV3', extra)


# --- VGG16 (torchvision's vgg16-397923af.pth; precision / recall features) -------------------

def vgg16_torch_names() -> dict[tuple[str, str], str]:
    """{(flax module, 'kernel' | 'bias'): torchvision name}: convs are features.<i>, fc1/fc2 classifier.0/3."""
    names, index = {}, 0
    for stage, (convs, _) in enumerate(BLOCKS, start=1):
        for i in range(1, convs + 1):
            names[(f'conv{stage}_{i}', 'kernel')] = f'features.{index}.weight'
            names[(f'conv{stage}_{i}', 'bias')] = f'features.{index}.bias'
            index += 2          # conv, ReLU
        index += 1              # max-pool
    for module, i in (('fc1', 0), ('fc2', 3)):
        names[(module, 'kernel')] = f'classifier.{i}.weight'
        names[(module, 'bias')] = f'classifier.{i}.bias'
    return names


def vgg16_params_from_torch(state_dict: Mapping, model) -> dict:
    """Params for `vgg16.VGG16` from a torchvision VGG16 state_dict (the classifier's fc3 is unused)."""
    shapes = param_shapes(model, jnp.zeros((1, 32, 32, 3)))
    table = {}
    for path, torch_name in vgg16_torch_names().items():
        transform = identity if path[1] == 'bias' else (conv_from_torch if path[0].startswith('conv')
                                                         else dense_from_torch)
        table[torch_name] = (path, transform)
    extra = {'classifier.6.weight': lambda a: None, 'classifier.6.bias': lambda a: None}
    return strict_convert(state_dict, table, shapes, 'VGG16', extra)


# --- DiT (the authors' models/network_dit.py = facebookresearch/DiT) ----------------

def _dit_torch_module(flax_module: str) -> str:
    # 'blocks_3' -> 'blocks.3', 'adaLN_modulation_1' -> 'adaLN_modulation.1'; 'fc1' stays
    return re.sub(r'_(\d+)$', r'.\1', flax_module)


def dit_params_from_torch(state_dict: Mapping, model) -> dict:
    """Params for `lct_jax.models.dit.DiT` from a DiT state_dict (the authors' / facebookresearch names).

    `pos_embed` is not a parameter here (a fixed sin-cos table); the file's copy must equal ours.
    """
    r = model.input_size
    shapes = param_shapes(model, jnp.zeros((1, r, r, model.in_channels)), jnp.zeros((1,)))
    leaf_names = {'kernel': 'weight', 'embedding': 'weight', 'bias': 'bias'}
    table = {}
    for path in shapes:
        *mods, leaf = path
        torch_name = '.'.join([_dit_torch_module(m) for m in mods] + [leaf_names[leaf]])
        if leaf == 'kernel':
            transform = conv_from_torch if len(shapes[path]) == 4 else dense_from_torch
        else:
            transform = identity
        table[torch_name] = (path, transform)
    pos = sincos_2d(model.hidden_size, r // model.patch_size)[None]

    def expect_pos_embed(arr):
        if arr.shape != pos.shape:
            return f'shape {arr.shape}, model needs {pos.shape}'
        return None if np.allclose(arr, pos, atol=1e-5) else 'not the fixed 2-D sin-cos table of this size'

    return strict_convert(state_dict, table, shapes, 'DiT', {'pos_embed': expect_pos_embed})


def model_params_from_torch(state_dict: Mapping, model) -> dict:
    """The authors' state_dict of either backbone: a DhariwalUNet for a UNet, a DiT for a DiT."""
    if isinstance(model, DiT):
        return dit_params_from_torch(state_dict, model)
    return unet_params_from_torch(state_dict, model)
