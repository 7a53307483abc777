"""`tf.train.Example` wire format for bytes and int64 features, without protobuf classes.

  Example   { Features features = 1; }
  Features  { map<string, Feature> feature = 1; }   (entries: key = 1, value = 2)
  Feature   { BytesList bytes_list = 1; FloatList float_list = 2; Int64List int64_list = 3; }
  BytesList { repeated bytes value = 1; }   Int64List { repeated int64 value = 1 [packed]; }
Decoding accepts packed and unpacked int64 lists (writers differ).
"""
from __future__ import annotations

_VARINT, _LEN = 0, 2


def _varint(n: int) -> bytes:
    n &= (1 << 64) - 1  # int64 as two's complement, as protobuf does
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def _field(number: int, payload: bytes) -> bytes:
    return _varint(number << 3 | _LEN) + _varint(len(payload)) + payload


def encode_example(features: dict) -> bytes:
    """features: name -> list of bytes (bytes_list) or list of ints (int64_list)."""
    entries = b''
    for name, values in features.items():
        if all(isinstance(v, (bytes, bytearray)) for v in values):
            feature = _field(1, b''.join(_field(1, bytes(v)) for v in values))
        else:
            feature = _field(3, _field(1, b''.join(_varint(int(v)) for v in values)))
        entries += _field(1, _field(1, name.encode()) + _field(2, feature))
    return _field(1, entries)


def _read_varint(buf: bytes, pos: int) -> tuple[int, int]:
    shift = result = 0
    while True:
        if pos >= len(buf):
            raise ValueError('truncated varint in Example')
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, pos
        shift += 7


def _fields(buf: bytes):
    """(field number, wire type, value) of each field of one message."""
    pos = 0
    while pos < len(buf):
        tag, pos = _read_varint(buf, pos)
        number, wire = tag >> 3, tag & 7
        if wire == _VARINT:
            value, pos = _read_varint(buf, pos)
        elif wire == _LEN:
            n, pos = _read_varint(buf, pos)
            value, pos = buf[pos:pos + n], pos + n
        elif wire == 5:
            value, pos = buf[pos:pos + 4], pos + 4
        elif wire == 1:
            value, pos = buf[pos:pos + 8], pos + 8
        else:
            raise ValueError(f'unsupported wire type {wire} in Example')
        if pos > len(buf):  # a length running past the message: a damaged Example, not a shorter value
            raise ValueError(f'field {number} runs {pos - len(buf)} bytes past the end of its message')
        yield number, wire, value


def _signed(n: int) -> int:
    return n - (1 << 64) if n >= 1 << 63 else n


def decode_example(payload: bytes) -> dict:
    """name -> list of bytes or list of ints, for the bytes and int64 features of an Example."""
    out = {}
    for number, _, features in _fields(payload):
        if number != 1:
            continue
        for entry_number, _, entry in _fields(features):
            if entry_number != 1:
                continue
            name, feature = None, b''
            for k, _, v in _fields(entry):
                if k == 1:
                    name = bytes(v).decode()
                elif k == 2:
                    feature = v
            values = []
            for kind, _, lst in _fields(feature):
                for f, wire, v in _fields(lst):
                    if f != 1:
                        continue
                    if kind == 1:
                        values.append(bytes(v))
                    elif kind == 3 and wire == _LEN:  # packed
                        pos = 0
                        while pos < len(v):
                            n, pos = _read_varint(v, pos)
                            values.append(_signed(n))
                    elif kind == 3:
                        values.append(_signed(v))
            out[name] = values
    return out
