"""What every checkpoint reader shares: the one error type, the file buffer, and the dtype rules.

- `CheckpointError`: the one exception for a file that is missing, truncated, corrupt, hostile or
  of an unsupported kind. It is a `ValueError`, so `except ValueError` keeps working.
- `file_bytes(path, mmap)`: the whole file as a uint8 array. With `mmap=True` it is a copy-on-write
  memory map (`np.memmap(mode="c")`): nothing is read until used, and writing into a returned array
  never changes the file. But the arrays stay *views of the file*: if another program truncates or
  rewrites the file in place (`cp new.bin old.bin`), reading them gives SIGBUS or silently new
  values. A long-running process (a server, a training run) should load with `mmap=False`, which
  reads the file into memory once; the arrays then own their bytes.
- `widen_bf16(bits)`: NumPy has no bfloat16. A bfloat16 number is the top 16 bits of a float32, so
  shifting its bits left by 16 gives the float32 with the same value, exactly.
- `cast_float(arr, dtype)`: floating tensors are converted to the caller's dtype; integer and bool
  tensors (e.g. `position_ids`) never are.
- `checked_int(value, what, where)` / `checked_numel(shape, itemsize, what, where)`: every size, stride,
  offset and count a file declares is a Python int in the int64 range, checked *before* it is
  multiplied, so a hostile file cannot make us compute with numbers of a million digits.
"""

from __future__ import annotations

import os

import numpy as np

INT64_MAX = 2 ** 63 - 1


class CheckpointError(ValueError):
    """A checkpoint file is missing, truncated, corrupt, hostile or of an unsupported kind."""


def file_bytes(path: str | os.PathLike, mmap: bool = True) -> np.ndarray:
    """The whole file as a (file size,) uint8 array: a copy-on-write memory map, or an owned copy."""
    path = os.fspath(path)
    try:
        size = os.path.getsize(path)
        if size == 0:
            return np.zeros(0, np.uint8)              # np.memmap refuses empty files
        if mmap:
            return np.memmap(path, dtype=np.uint8, mode="c", shape=(size,)).view(np.ndarray)
        return np.fromfile(path, dtype=np.uint8)
    except (OSError, ValueError) as e:
        raise CheckpointError(f"cannot read {path}: {e}") from None


def widen_bf16(bits: np.ndarray) -> np.ndarray:
    """bfloat16 stored as uint16 bits -> float32 with the same values (bf16 = top half of a float32)."""
    return (bits.astype(np.uint32) << 16).view(np.float32)


def cast_float(arr: np.ndarray, dtype: np.dtype | None) -> np.ndarray:
    """`arr` in native byte order, floating arrays converted to `dtype` (None: keep); a view when possible."""
    if arr.dtype.byteorder == ">":                    # only big-endian files or hosts
        arr = arr.astype(arr.dtype.newbyteorder("="))
    if dtype is not None and arr.dtype.kind == "f" and arr.dtype != dtype:
        arr = arr.astype(dtype)
    return arr


def checked_int(value: object, what: str, where: str) -> int:
    """`value` if it is an int in [0, 2**63 - 1], else a CheckpointError naming `what`."""
    if type(value) is not int or not 0 <= value <= INT64_MAX:
        text = repr(value) if type(value) is not int or value.bit_length() < 200 else f"a {value.bit_length()}-bit integer"
        raise CheckpointError(f"{where}: {what} must be an integer in [0, 2**63), got {text}"[:300])
    return value


def checked_numel(shape: tuple[int, ...] | list[int], itemsize: int, what: str, where: str) -> int:
    """The element count of `shape`, after checking that NumPy can make an array of it.

    Each dimension must be an int in [0, 2**63). NumPy also refuses a shape whose non-zero dimensions
    multiply (times the item size) past 2**63 even when another dimension is 0 and the array would
    be empty, e.g. (0, 2**62) of float32; such a shape is refused here too, as a CheckpointError.
    """
    dims = [checked_int(d, f"{what} dimension {i}", where) for i, d in enumerate(shape)]
    span = itemsize
    for d in dims:
        span *= max(d, 1)
        if span > INT64_MAX:
            raise CheckpointError(f"{where}: {what} {dims} is too large for an array (more than 2**63 bytes, "
                                  "counting only its non-zero dimensions)"[:300])
    numel = 1
    for d in dims:
        numel *= d
    return numel
