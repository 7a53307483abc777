"""An .npz of one array written chunk by chunk: `--mode=sample`'s images.npz without holding them all.

np.savez_compressed needs the whole array in memory (50,000 x 256 x 256 x 3 bytes, about 9.8 GB
at ImageNet-256). The .npz format is a zip of .npy members, and a .npy is a header then the raw
C-order bytes, so the header (with the final shape) is written first and the rows streamed after
it into a deflated zip member. np.load and lct_jax/untrusted.py's load_npz read the result as
they read savez_compressed's. The file appears under its name only when complete.
"""
from __future__ import annotations

import zipfile

import numpy as np

from lct_jax import writer


class StreamedNpz:
    """StreamedNpz(path, 'images', (N, H, W, C), uint8); .write(rows) in order; .close()."""

    def __init__(self, path: str, name: str, shape: tuple, dtype):
        self.path, self.shape, self.dtype = path, tuple(int(n) for n in shape), np.dtype(dtype)
        self.out = writer.AtomicFile(path, 'wb')
        self.rows = 0
        self.zip = zipfile.ZipFile(self.out.file, 'w', compression=zipfile.ZIP_DEFLATED, allowZip64=True)
        self.member = self.zip.open(f'{name}.npy', 'w', force_zip64=True)
        np.lib.format.write_array_header_2_0(self.member, {
            'descr': np.lib.format.dtype_to_descr(self.dtype), 'fortran_order': False, 'shape': self.shape})

    def write(self, rows) -> None:
        rows = np.ascontiguousarray(rows, self.dtype)
        if rows.shape[1:] != self.shape[1:] or self.rows + len(rows) > self.shape[0]:
            raise ValueError(f'{self.path}: rows of shape {rows.shape} after {self.rows} do not fit {self.shape}')
        self.member.write(rows.tobytes())
        self.rows += len(rows)

    def close(self) -> str:
        self.member.close()
        self.zip.close()
        if self.rows != self.shape[0]:
            self.out.abort()
            raise ValueError(f'{self.path}: {self.rows} rows written of {self.shape[0]}; nothing kept')
        return self.out.commit()
