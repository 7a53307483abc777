"""Mutations of a file's bytes: generic (truncation, bit flips, random bytes, zero length, ...) and
format-aware (TFRecord length and CRC fields, JSON values and types, .npz headers, pickles).

Each mutator is `f(data: bytes, rng) -> bytes`; `mutators_for(kind)` lists the ones that make
sense for a kind of file, by name, so an outcome table can say what was tried.
"""
from __future__ import annotations

import json
import struct

import numpy as np


def truncate(data, rng):
    return data[:int(rng.integers(0, max(len(data), 1)))]


def zero_length(data, rng):
    return b''


def flip_bits(data, rng):
    if not data:
        return b'\x01'
    b = bytearray(data)
    for _ in range(int(rng.integers(1, 9))):
        i = int(rng.integers(0, len(b)))
        b[i] ^= 1 << int(rng.integers(0, 8))
    return bytes(b)


def random_chunk(data, rng):
    """A run of random bytes over part of the file."""
    if not data:
        return bytes(rng.integers(0, 256, 16, dtype=np.uint8))
    b = bytearray(data)
    i = int(rng.integers(0, len(b)))
    n = int(rng.integers(1, min(64, len(b) - i) + 1))
    b[i:i + n] = bytes(rng.integers(0, 256, n, dtype=np.uint8))
    return bytes(b)


def random_file(data, rng):
    return bytes(rng.integers(0, 256, max(len(data), 1), dtype=np.uint8))


def append_garbage(data, rng):
    return data + bytes(rng.integers(0, 256, int(rng.integers(1, 64)), dtype=np.uint8))


def delete_chunk(data, rng):
    if len(data) < 2:
        return b''
    i = int(rng.integers(0, len(data) - 1))
    return data[:i] + data[i + int(rng.integers(1, min(256, len(data) - i) + 1)):]


def duplicate_chunk(data, rng):
    if not data:
        return data
    i = int(rng.integers(0, len(data)))
    j = min(len(data), i + int(rng.integers(1, 256)))
    return data[:j] + data[i:j] + data[j:]


GENERIC = {'truncate': truncate, 'zero_length': zero_length, 'flip_bits': flip_bits,
           'random_chunk': random_chunk, 'random_file': random_file, 'append_garbage': append_garbage,
           'delete_chunk': delete_chunk, 'duplicate_chunk': duplicate_chunk}


# --- TFRecord framing ----------------------------------------------------------------

def _records(data: bytes) -> list[tuple[int, int]]:
    out, off = [], 0
    while off + 12 <= len(data):
        (n,) = struct.unpack('<Q', data[off:off + 8])
        out.append((off, n))
        off += 12 + n + 4
    return out


def _masked_crc(b: bytes) -> int:
    from lct_jax.data.tfrecord import masked_crc
    return masked_crc(b)


def tfrecord_length(data, rng):
    """A record's length field set to another value, its header CRC fixed up (so only the framing
    check can catch it) or left as is, at random."""
    recs = _records(data)
    if not recs:
        return flip_bits(data, rng)
    off, n = recs[int(rng.integers(0, len(recs)))]
    new = int(rng.choice([0, 1, n - 1, n + 1, n * 2, 2 ** 31, 2 ** 63 - 1, int(rng.integers(0, 2 ** 32))]))
    header = struct.pack('<Q', max(new, 0))
    crc = struct.pack('<I', _masked_crc(header)) if rng.random() < 0.7 else data[off + 8:off + 12]
    return data[:off] + header + crc + data[off + 12:]


def tfrecord_crc(data, rng):
    """A header or payload CRC zeroed / flipped."""
    recs = _records(data)
    if not recs:
        return flip_bits(data, rng)
    off, n = recs[int(rng.integers(0, len(recs)))]
    at = off + 8 if rng.random() < 0.5 else off + 12 + n
    b = bytearray(data)
    if at + 4 <= len(b):
        b[at:at + 4] = b'\0\0\0\0' if rng.random() < 0.5 else bytes(x ^ 0xFF for x in b[at:at + 4])
    return bytes(b)


def tfrecord_forged_payload(data, rng):
    """Payload bytes changed and its CRC recomputed: passes the checksum, so the Example decoder and
    the shape / index checks behind it must catch what is wrong."""
    recs = _records(data)
    if not recs:
        return flip_bits(data, rng)
    off, n = recs[int(rng.integers(0, len(recs)))]
    payload = data[off + 12:off + 12 + n]
    if rng.random() < 0.5:
        payload = payload[:int(rng.integers(0, max(n, 1)))]  # a shorter payload, header fixed too
    else:
        payload = flip_bits(payload, rng)
    header = struct.pack('<Q', len(payload))
    return (data[:off] + header + struct.pack('<I', _masked_crc(header)) + payload
            + struct.pack('<I', _masked_crc(payload)) + data[off + 12 + n + 4:])


TFRECORD = {'tfrecord_length': tfrecord_length, 'tfrecord_crc': tfrecord_crc,
            'tfrecord_forged_payload': tfrecord_forged_payload}


# --- JSON values ---------------------------------------------------------------------------

_ODD_VALUES = [None, True, -1, 0, 2 ** 70, 1e308, -0.5, '', '../../escape', 'a/b', '/abs', [], {}, [[[]]],
               'x' * 300, {'k': 'v'}, [1, 'a', None], float('nan'), 'NaN']


def json_value(data, rng):
    """One value somewhere in the JSON tree replaced by one of another type or an odd one."""
    try:
        tree = json.loads(data)
    except ValueError:
        return flip_bits(data, rng)
    slots = []

    def walk(node):
        items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
        for k, v in items:
            slots.append((node, k))
            walk(v)
    walk(tree)
    if not slots:
        return json.dumps(_ODD_VALUES[int(rng.integers(0, len(_ODD_VALUES)))]).encode()
    node, key = slots[int(rng.integers(0, len(slots)))]
    node[key] = _ODD_VALUES[int(rng.integers(0, len(_ODD_VALUES)))]
    return json.dumps(tree, indent=1).encode()


def json_delete(data, rng):
    """A key of an object (or an item of a list) removed."""
    try:
        tree = json.loads(data)
    except ValueError:
        return truncate(data, rng)
    slots = []

    def walk(node):
        items = list(node.items()) if isinstance(node, dict) else list(enumerate(node)) if isinstance(node, list) else ()
        for k, v in items:
            slots.append((node, k))
            walk(v)
    walk(tree)
    if slots:
        node, key = slots[int(rng.integers(0, len(slots)))]
        del node[key]
    return json.dumps(tree, indent=1).encode()


def json_deep(data, rng):
    """Nesting deeper than the parser's recursion limit."""
    depth = int(rng.choice([2000, 100000]))
    return b'[' * depth + b']' * depth


def json_not_utf8(data, rng):
    return data.replace(b'"', b'"\xff\xfe', 1) if b'"' in data else b'\xff' + data


JSON = {'json_value': json_value, 'json_delete': json_delete, 'json_deep': json_deep,
        'json_not_utf8': json_not_utf8}


# --- .npz: headers and pickles ----------------------------------------------------------------

def npz_header_shape(data, rng):
    """A member's .npy header declaring another shape (huge, empty, other rank), the zip's CRC and
    sizes kept consistent (so only the reader's own checks can catch it)."""
    import io
    import zipfile
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as z:
            members = {i.filename: z.read(i.filename) for i in z.infolist()}
    except (zipfile.BadZipFile, ValueError, OSError):
        return flip_bits(data, rng)
    name = sorted(members)[int(rng.integers(0, len(members)))]
    raw = members[name]
    end = raw.index(b'\n') + 1 if b'\n' in raw else len(raw)
    header = raw[:end].decode('latin1')
    shape = ['(100000000000,)', '(0,)', '(3, 3, 3, 3)', '()', '(2,)', "(-1,)"][int(rng.integers(0, 6))]
    import re
    header = re.sub(r"'shape': \([^)]*\)", f"'shape': {shape}", header)
    members[name] = header.encode('latin1') + raw[end:]
    out = io.BytesIO()
    with zipfile.ZipFile(out, 'w') as z:
        for k, v in members.items():
            z.writestr(k, v)
    return out.getvalue()


def npz_object_array(data, rng):
    """An .npz whose member is an object array: loading it would unpickle."""
    import io
    out = io.BytesIO()
    np.savez(out, mu=np.array([{'a': 1}, None], dtype=object), sigma=np.eye(2), mean=np.zeros(2), std=np.ones(2))
    return out.getvalue()


NPZ = {'npz_header_shape': npz_header_shape, 'npz_object_array': npz_object_array}


# --- pickles that run code --------------------------------------------------------------

def evil_pickle_payload(marker: str) -> bytes:
    """A torch file whose pickle, if unpickled without weights_only, creates `marker`."""
    import io
    import os

    import torch

    class Evil:
        def __reduce__(self):
            return (os.mkdir, (marker,))
    buf = io.BytesIO()
    torch.save({'model': {'w': torch.zeros(1)}, 'ema_0.99': {'w': torch.zeros(1)}, 'x': Evil()}, buf)
    return buf.getvalue()


def mutators_for(kind: str) -> dict:
    extra = {'tfrecord': TFRECORD, 'json': JSON, 'npz': NPZ}.get(kind, {})
    return {**GENERIC, **extra}
