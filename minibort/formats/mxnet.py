"""MXNet NDArray lists (`bort.params`, the original GluonNLP Bort release) read with NumPy alone.

Layout (little-endian), as `mx.nd.save` and Gluon's `save_parameters` write it:

    u64 magic 0x112 | u64 reserved (0) | u64 count
    per array:  u32 magic 0xF993FAC9 (V2) or 0xF993FACA (V3) | i32 storage type (0 = dense)
                | u32 ndim | i64 dims[ndim] | i32 dev_type | i32 dev_id | i32 dtype flag | raw data
    u64 name count | per name: u64 length + UTF-8 bytes

The names are Gluon's own (`word_embed.0.weight`, `encoder.transformer_cells.0.proj.weight`, ...);
`minibort.checkpoint.gluon_to_transformers` maps them to transformers' names.
"""

from __future__ import annotations

import os
import struct

import numpy as np

from .common import CheckpointError, cast_float, checked_numel, file_bytes, widen_bf16

LIST_MAGIC = 0x112
ND_MAGICS = {0xF993FAC9: 2, 0xF993FACA: 3}         # NDArray V2 (MXNet 1.x), V3 (numpy-shape mode)
# MXNet's dtype flags (mshadow type codes); 12 is bfloat16.
MX_DTYPES = {0: "<f4", 1: "<f8", 2: "<f2", 3: "u1", 4: "<i4", 5: "i1", 6: "<i8", 7: "?", 8: "<i2",
             9: "<u2", 10: "<u4", 11: "<u8", 12: "<u2"}


def load_mxnet_params(path: str | os.PathLike, dtype: np.dtype | type | None = np.float32,
                      mmap: bool = True) -> dict[str, np.ndarray]:
    """Read an MXNet NDArray-list file (`mx.nd.save`, Gluon's `save_parameters`) with its own names.

    Layout in the module docstring. Floating arrays are converted to `dtype` (None keeps them;
    bfloat16 becomes float32). `mmap=False` reads the file into memory (see `formats.common`).
    """
    path = os.fspath(path)
    dtype = None if dtype is None else np.dtype(dtype)
    buf = file_bytes(path, mmap)                          # (file size,) uint8
    file_size = buf.shape[0]
    r = _Reader(buf, path)
    magic, _reserved, count = r.unpack("<QQQ")
    if magic != LIST_MAGIC:
        raise CheckpointError(f"{path}: not an MXNet NDArray file (magic {magic:#x}, expected 0x112)")
    if count > file_size // 24:                       # each array needs far more than 24 bytes
        raise CheckpointError(f"{path}: declares {count} arrays, more than the file can hold")
    arrays = []
    for i in range(count):
        (nd_magic,) = r.unpack("<I")
        version = ND_MAGICS.get(nd_magic)
        if version is None:
            raise CheckpointError(f"{path}: array {i}: unknown NDArray magic {nd_magic:#x}")
        (stype,) = r.unpack("<i")
        if stype != 0:
            raise CheckpointError(f"{path}: array {i}: sparse storage type {stype} is not supported")
        (ndim,) = r.unpack("<i")
        if version == 3 and ndim == -1 or version == 2 and ndim == 0:
            arrays.append(np.zeros((0,), np.float32))  # "none" array: no context, dtype or data follow
            continue
        if not 0 <= ndim <= 32:
            raise CheckpointError(f"{path}: array {i}: bad number of dimensions {ndim}")
        shape = r.unpack(f"<{ndim}q")
        _dev_type, _dev_id, flag = r.unpack("<iii")
        if flag not in MX_DTYPES:
            raise CheckpointError(f"{path}: array {i}: unknown dtype flag {flag}")
        dt = np.dtype(MX_DTYPES[flag])
        numel = checked_numel(shape, dt.itemsize, f"array {i} shape", path)   # no negative or huge dims
        raw = r.take(numel * dt.itemsize, f"array {i} data ({shape}, {dt})")
        arr = raw.view(dt).reshape(shape)
        if flag == 12:
            arr = widen_bf16(arr)
        arrays.append(cast_float(arr, dtype))
    (n_names,) = r.unpack("<Q")
    if n_names not in (0, count):
        raise CheckpointError(f"{path}: {n_names} names for {count} arrays")
    names = []
    for i in range(n_names):
        (length,) = r.unpack("<Q")
        try:
            names.append(bytes(r.take(length, f"name {i}")).decode("utf-8"))
        except UnicodeDecodeError:
            raise CheckpointError(f"{path}: name {i} is not UTF-8") from None
    if not names:
        names = [str(i) for i in range(count)]
    if len(set(names)) != len(names):
        raise CheckpointError(f"{path}: duplicate array names")
    return dict(zip(names, arrays))


class _Reader:
    """Sequential little-endian reads from a byte array, each checked against the end of the file."""

    def __init__(self, buf: np.ndarray, where: str) -> None:
        self.buf, self.pos, self.where = buf, 0, where

    def take(self, n: int, what: str) -> np.ndarray:
        if n < 0 or n > self.buf.shape[0] - self.pos:
            raise CheckpointError(f"{self.where}: {what} needs {n} bytes at offset {self.pos}, "
                                  f"past the end of the file ({self.buf.shape[0]} bytes)"[:300])
        out = self.buf[self.pos:self.pos + n]
        self.pos += n
        return out

    def unpack(self, fmt: str) -> tuple:
        return struct.unpack(fmt, bytes(self.take(struct.calcsize(fmt), f"field {fmt}")))


