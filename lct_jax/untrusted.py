"""Reading files other people made: every byte is treated as hostile.

Users load checkpoints and datasets made elsewhere (the authors' `.pt` files from a
drive link, shards copied between buckets, a colleague's work directory). Every
reader of such a file goes through this module, which guarantees two things:

  - nothing in a file runs code: PyTorch files are unpickled with
    `weights_only=True` and only the plain types the authors' checkpoints hold
    (`SAFE_TORCH_GLOBALS`); `.npz` files are read with `allow_pickle=False`;
    JSON is parsed as JSON. No `pickle`, `eval` or `yaml.load` touches a file.
  - a damaged or malformed file is one `UnreadableFileError` that names the file
    and says what was expected (a `ValueError`: `lct_jax.main` prints it as one
    line and exits with code 2), never a library's bare exception from deep inside.

The formats read, and how:
  JSON (manifest.json, config.json, run.json, lock.json, results.json, study files,
       tfds metadata, diffusers config.json): `json.load`, top-level type checked;
  .npz (latent statistics, FID statistics): numpy, no pickles, each member's declared
       shape checked against its stored size before anything is allocated;
  .safetensors: the safetensors library (a JSON header and raw arrays, no code);
  .pt / .pth / .bin / .ckpt: `torch.load(weights_only=True)` with `SAFE_TORCH_GLOBALS`.
"""
from __future__ import annotations

import argparse
import json
import os
import tokenize
import zipfile
import zlib

import numpy as np


class UnreadableFileError(ValueError):
    """A file is damaged, or is not the kind of file it should be: names it and what was expected."""


class MissingDependencyError(ValueError):
    """Reading a file needs an optional package that is not installed: names the file and the command."""


TORCH_INSTALL = "pip install torch --index-url https://download.pytorch.org/whl/cpu  (or pip install -e '.[test]')"


def import_torch(path: str, what: str):
    """torch, or one MissingDependencyError naming `path` and how to install it (torch is needed only
    to read PyTorch files: an authors' .pt checkpoint, .pth / .bin weights)."""
    try:
        import torch
    except ImportError:
        raise MissingDependencyError(f'{path}: reading {what} (a PyTorch file) needs PyTorch, which is not '
                                     f'installed: {TORCH_INSTALL}') from None
    return torch


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return f'{type(e).__name__}: {text.splitlines()[0] if text else ""}'.rstrip(': ')


# --- JSON ----------------------------------------------------------------------

def read_json(path: str, what: str = 'a JSON file', expect: type | tuple | None = None):
    """The parsed content of `path`; FileNotFoundError if absent, UnreadableFileError if it is not
    valid JSON (truncated, bit-flipped, not UTF-8, nested past the parser's depth) or its top
    level is not of type `expect`."""
    try:
        with open(path, 'rb') as f:
            data = f.read()
        value = json.loads(data.decode('utf-8'))
    except FileNotFoundError:
        raise FileNotFoundError(f'{what} not found: {path}') from None
    except IsADirectoryError:
        raise UnreadableFileError(f'{path}: expected {what}, found a directory') from None
    except (ValueError, UnicodeDecodeError, RecursionError) as e:
        raise UnreadableFileError(f'{path} is not valid JSON ({what}): {_first_line(e)}; the file is '
                                  f'damaged (truncated or overwritten): restore it or remake it') from None
    if expect is not None and not isinstance(value, expect):
        names = ' or '.join(t.__name__ for t in (expect if isinstance(expect, tuple) else (expect,)))
        raise UnreadableFileError(f'{path}: expected {what} holding a JSON {_json_name(names)}, '
                                  f'found a {_json_name(type(value).__name__)}')
    return value


def _json_name(python_names: str) -> str:
    for py, js in (('dict', 'object'), ('list', 'array'), ('str', 'string'), ('float', 'number'),
                   ('int', 'integer'), ('NoneType', 'null'), ('bool', 'boolean')):
        python_names = python_names.replace(py, js)
    return python_names


def field(path: str, mapping: dict, key: str, kind, what: str, check=None):
    """mapping[key], which must be of `kind` (and pass `check`, a predicate) or the file is malformed."""
    if key not in mapping:
        raise UnreadableFileError(f'{path}: {what} has no {key!r} (it has {sorted(mapping)[:12]})')
    value = mapping[key]
    if isinstance(value, bool) and kind in (int, float, (int, float)):
        ok = False  # JSON true is no count
    else:
        ok = isinstance(value, kind)
    if not ok or (check is not None and not check(value)):
        raise UnreadableFileError(f'{path}: {what}: {key!r} = {_short(value)} is not a valid value')
    return value


def _short(value, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + '...'


# --- .npz ----------------------------------------------------------------------

def load_npz(path: str, what: str, required: tuple = (), only: tuple | None = None) -> dict[str, np.ndarray]:
    """{name: array} of an .npz file, read without pickles; `required` names must be there. With
    `only`, just those members are read (ADM's reference batch stores 10,000 images beside its mu
    and sigma)."""
    if not os.path.exists(path):
        raise FileNotFoundError(f'{what} not found: {path}')
    try:
        with zipfile.ZipFile(path) as z:
            _check_npz_members(path, z)
        with np.load(path, allow_pickle=False) as f:
            arrays = {k: np.asarray(f[k]) for k in f.files if only is None or k in only}
    except UnreadableFileError:
        raise
    except (OSError, EOFError, ValueError, KeyError, zipfile.BadZipFile, zlib.error, NotImplementedError,
            RuntimeError, OverflowError, MemoryError, TypeError, SyntaxError, tokenize.TokenError) as e:
        # numpy parses a .npy header with ast.literal_eval: a damaged one is a SyntaxError or TokenError
        raise UnreadableFileError(f'{path} is not a readable .npz file ({what}): {_first_line(e)}') from None
    missing = [k for k in required if k not in arrays]
    if missing:
        raise UnreadableFileError(f'{path}: {what} needs arrays {list(required)}; it has {sorted(arrays)}')
    return arrays


def _check_npz_members(path: str, z: zipfile.ZipFile) -> None:
    """Each member's .npy header against its stored size, so a header that declares a huge
    shape is an error here, not a multi-terabyte allocation in numpy."""
    for info in z.infolist():
        if not info.filename.endswith('.npy'):
            continue
        with z.open(info) as f:
            version = np.lib.format.read_magic(f)
            if version == (1, 0):
                shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
            else:
                shape, fortran, dtype = np.lib.format.read_array_header_2_0(f)
            header = f.tell()
        if dtype.hasobject:
            raise UnreadableFileError(f'{path}: member {info.filename} holds Python objects (a pickle); '
                                      'only plain numeric arrays are read')
        need = int(np.prod(shape, dtype=object)) * dtype.itemsize
        if header + need != info.file_size:
            raise UnreadableFileError(f'{path}: member {info.filename} declares shape {shape} of {dtype} '
                                      f'({need} bytes) but stores {info.file_size - header} bytes')


def finite_array(path: str, arrays: dict, key: str, what: str, ndim: int | None = None) -> np.ndarray:
    """arrays[key] as a finite floating-point array of `ndim` dimensions, or the file is malformed."""
    a = arrays[key]
    if a.dtype.kind not in 'fiu' or (ndim is not None and a.ndim != ndim):
        raise UnreadableFileError(f'{path}: {what}: {key!r} is a {a.dtype} array of shape {a.shape}; '
                                  f'expected a {ndim}-d array of numbers')
    if not np.isfinite(a).all():
        raise UnreadableFileError(f'{path}: {what}: {key!r} holds {int((~np.isfinite(a)).sum())} '
                                  f'non-finite values')
    return a


# --- PyTorch files ---------------------------------------------------------------

def _safe_torch_globals() -> list:
    """The non-tensor types the authors' checkpoints hold ({'model', 'ema', 'target', 'opt', 'args',
    'epoch', 'train_steps'}: `args` is the training script's argparse.Namespace), plus numpy
    scalars and dtypes, which training scripts store as counters and losses. Each only builds data."""
    out = [argparse.Namespace]
    core = getattr(np, '_core', None) or np.core
    out += [core.multiarray.scalar, np.dtype]
    out += [type(np.dtype(t)) for t in ('float16', 'float32', 'float64', 'int32', 'int64', 'bool', 'uint8')]
    return out


SAFE_TORCH_GLOBALS = tuple(_safe_torch_globals())


def torch_load(path: str, what: str = 'a PyTorch file'):
    """`torch.load` that runs no code from the file: weights_only=True, the globals above only."""
    import pickle
    if not os.path.exists(path):
        raise FileNotFoundError(f'{what} not found: {path}')
    torch = import_torch(path, what)
    try:
        with torch.serialization.safe_globals(list(SAFE_TORCH_GLOBALS)):
            return torch.load(path, map_location='cpu', weights_only=True)
    except pickle.UnpicklingError as e:
        asked = _asked_global(str(e))
        if asked:
            raise UnreadableFileError(
                f'{path}: refused to load: its pickle asks for {asked}, which is not a plain type a '
                f'checkpoint needs (allowed: tensors, containers, numbers, strings, '
                f'{", ".join(sorted(_qualname(t) for t in SAFE_TORCH_GLOBALS))}); unpickling it could '
                f'run code. If you trust the file, convert it once in a trusted environment: '
                f'`sd = torch.load(path, weights_only=False); torch.save({{k: v for k, v in sd.items() '
                f'if k in ("model", "ema", "target")}}, "plain.pt")` (or save the state dicts with '
                f'safetensors) and load that') from None
        raise UnreadableFileError(f'{path} is not a readable PyTorch file ({what}): '
                                  f'{_first_line(e)}') from None
    except (RuntimeError, OSError, EOFError, ValueError, KeyError, IndexError, TypeError, AttributeError,
            zipfile.BadZipFile, OverflowError, MemoryError, UnicodeDecodeError, struct_error()) as e:
        raise UnreadableFileError(f'{path} is not a readable PyTorch file ({what}): '
                                  f'{_first_line(e)}') from None


def struct_error():
    import struct
    return struct.error


def _qualname(t) -> str:
    return f'{t.__module__}.{t.__qualname__}'


def _asked_global(message: str) -> str:
    """The global a refused pickle asked for, from torch's UnpicklingError message."""
    import re
    m = re.search(r'GLOBAL ([\w.]+)', message, re.IGNORECASE)
    if m:
        return f'the global {m.group(1)}'
    m = re.search(r'Unsupported operand (\d+)', message)
    if m:
        return f'the pickle opcode {m.group(1)}'
    first = message.strip().splitlines()[0] if message.strip() else ''
    return f'something weights-only loading forbids ({first[:160]})' if 'weights_only' in message else ''


# --- safetensors ---------------------------------------------------------------------

def load_safetensors(path: str, what: str = 'a safetensors file') -> dict[str, np.ndarray]:
    from safetensors.numpy import load_file
    if not os.path.exists(path):
        raise FileNotFoundError(f'{what} not found: {path}')
    try:
        return dict(load_file(path))
    except Exception as e:  # noqa: BLE001 - SafetensorError derives from Exception only
        raise UnreadableFileError(f'{path} is not a readable safetensors file ({what}): '
                                  f'{_first_line(e)}') from None
