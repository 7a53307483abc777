"""TFRecord files without TensorFlow: framing, random access, and the latent Example.

Framing (what tf.data reads): uint64 length, uint32 masked crc32c of the
length, the payload, uint32 masked crc32c of the payload; all little-endian.
We write and check it ourselves (a few lines) so that every error names the
file and the record, and so a dataset can be indexed once and then read at
random offsets. The payload is a `tf.train.Example` with features:
  latent  bytes_list: the float32 array, C-order, raw bytes
  shape   int64_list: its shape (H, W, C)
  index   int64_list: the example's index in the source dataset
The Example is encoded and decoded by hand (`example_codec.py`): protobuf
classes for `tensorflow.*` messages from any package other than TensorFlow
collide with TensorFlow's own in protobuf's global pool when both are
imported, and this schema is four small messages.
"""
from __future__ import annotations

import os
import struct

import crc32c
import numpy as np

from lct_jax import writer
from lct_jax.data import example_codec

_MASK_DELTA = 0xA282EAD8


class CorruptRecordError(IOError):
    """A TFRecord file is truncated or fails its checksum; names the file and the record."""

    def __init__(self, path: str, record: int, offset: int, reason: str):
        super().__init__(f'corrupt TFRecord {path}: record {record} at byte {offset}: {reason}')
        self.path, self.record, self.offset = path, record, offset


def masked_crc(data: bytes) -> int:
    crc = crc32c.crc32c(data)
    return (((crc >> 15) | (crc << 17)) + _MASK_DELTA) & 0xFFFFFFFF


def frame(payload: bytes) -> bytes:
    header = struct.pack('<Q', len(payload))
    return header + struct.pack('<I', masked_crc(header)) + payload + struct.pack('<I', masked_crc(payload))


class TFRecordWriter:
    """Writes `path` atomically (lct_jax/writer.py): records go to a temporary file beside it,
    fsynced and renamed on close."""

    def __init__(self, path: str):
        self.path = path
        self._f = writer.AtomicFile(path, 'wb', durable=True)

    def write(self, payload: bytes) -> None:
        self._f.write(frame(payload))

    def close(self) -> None:
        self._f.commit()

    def __enter__(self):
        return self

    def __exit__(self, exc_type, *_):
        if exc_type is None:
            self.close()
        else:  # leave no half-written shard behind under the final name
            self._f.abort()


def index_records(path: str) -> list[tuple[int, int]]:
    """(payload offset, payload length) of every record, checking each header.

    Reads only the 12-byte headers (plus one seek per record); payload crcs
    are checked when a record is read.
    """
    size = os.path.getsize(path)
    out, offset = [], 0
    with open(path, 'rb') as f:
        while offset < size:
            f.seek(offset)
            header = f.read(12)
            if len(header) < 12:
                raise CorruptRecordError(path, len(out), offset, 'truncated header')
            (length,), (crc,) = struct.unpack('<Q', header[:8]), struct.unpack('<I', header[8:])
            if masked_crc(header[:8]) != crc:
                raise CorruptRecordError(path, len(out), offset, 'length checksum mismatch')
            if offset + 12 + length + 4 > size:
                raise CorruptRecordError(path, len(out), offset,
                                         f'truncated payload ({length} bytes announced)')
            out.append((offset + 12, length))
            offset += 12 + length + 4
    return out


def read_record(f, path: str, record: int, offset: int, length: int) -> bytes:
    """The payload at `offset` of the open file `f`, its checksum verified."""
    f.seek(offset)
    data = f.read(length + 4)
    if len(data) != length + 4:
        raise CorruptRecordError(path, record, offset - 12, 'truncated payload')
    payload, (crc,) = data[:length], struct.unpack('<I', data[length:])
    if masked_crc(payload) != crc:
        raise CorruptRecordError(path, record, offset - 12, 'payload checksum mismatch')
    return payload


def read_all(path: str) -> list[bytes]:
    with open(path, 'rb') as f:
        return [read_record(f, path, i, o, n) for i, (o, n) in enumerate(index_records(path))]


def encode_latent(latent: np.ndarray, index: int, label: int | None = None) -> bytes:
    """One example: the latent's float32 bytes, its shape, its source index, and its integer class
    label when the source has labels (class subfolders, a tfds `label`)."""
    latent = np.ascontiguousarray(latent, dtype=np.float32)
    features = {'latent': [latent.tobytes()], 'shape': list(latent.shape), 'index': [int(index)]}
    if label is not None:
        features['label'] = [int(label)]
    return example_codec.encode_example(features)


def decode_latent(payload: bytes) -> tuple[np.ndarray, int]:
    latent, index, _ = decode_labeled_latent(payload)
    return latent, index


def decode_labeled_latent(payload: bytes) -> tuple[np.ndarray, int, int | None]:
    """(latent, source index, class label or None when the example has none)."""
    feat = example_codec.decode_example(payload)
    missing = [k for k in ('latent', 'shape', 'index') if len(feat.get(k) or ()) != 1 + (k == 'shape') * 2]
    if missing:
        raise ValueError(f'features {missing} missing or of the wrong length (it has {sorted(map(str, feat))})')
    shape = tuple(feat['shape'])
    data = feat['latent'][0]
    if not isinstance(data, bytes) or any(d <= 0 for d in shape) or 4 * int(np.prod(shape)) != len(data):
        raise ValueError(f'latent of {len(data) if isinstance(data, bytes) else "no"} bytes does not hold '
                         f'a float32 array of shape {shape}')
    latent = np.frombuffer(data, np.float32).reshape(shape)
    label = feat.get('label')
    return latent, int(feat['index'][0]), (int(label[0]) if label else None)
