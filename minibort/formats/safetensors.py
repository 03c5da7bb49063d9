"""safetensors in NumPy: read through a memory map, write atomically.

The format (https://github.com/huggingface/safetensors) is three parts, back to back:

    u64 little-endian N | N bytes of JSON header | data buffer

The header maps each tensor name to `{"dtype": "F32", "shape": [2, 3], "data_offsets": [begin, end]}`
(offsets in bytes, relative to the start of the data buffer) and may hold a `"__metadata__"` object
of string -> string. Tensors are stored row-major (C order), little-endian, with no padding inside.

Reading checks the whole header before any tensor byte is looked at: the header fits in the file,
no key appears twice, every dtype is known, every dimension is an int64 and `prod(shape) * itemsize`
equals the tensor's byte span, and the spans tile the data buffer exactly (no overlap, no gap, no
trailing bytes), as the reference implementation requires. A file that fails any check raises
`CheckpointError`; nothing is allocated beyond the header's own size, so a hostile header cannot
make us allocate more than the file holds.

Tensors come back as NumPy views of a copy-on-write memory map (`np.memmap(mode="c")`): nothing is
read until it is used, writing to an array never changes the file (`mmap=False` reads the file into
memory instead; see `formats.common`). NumPy has no bfloat16, so BF16 tensors are widened to
float32 (`formats.common.widen_bf16`).
"""

from __future__ import annotations

import json
import os

import numpy as np

from .._files import atomic_open
from .common import CheckpointError, cast_float, checked_numel, file_bytes, widen_bf16

# safetensors dtype name -> NumPy dtype (little-endian). BF16 is read as raw uint16 and widened.
DTYPES: dict[str, np.dtype] = {
    "F64": np.dtype("<f8"), "F32": np.dtype("<f4"), "F16": np.dtype("<f2"), "BF16": np.dtype("<u2"),
    "I64": np.dtype("<i8"), "I32": np.dtype("<i4"), "I16": np.dtype("<i2"), "I8": np.dtype("i1"),
    "U8": np.dtype("u1"), "BOOL": np.dtype("?"),
}
# NumPy dtype -> safetensors dtype name, for writing.
_NAMES: dict[np.dtype, str] = {np.dtype(v).newbyteorder("="): k for k, v in DTYPES.items() if k != "BF16"}

# The reference implementation refuses headers above 100 MB; so do we (a JSON parse of a huge
# header would be the one allocation not bounded by the tensors' sizes).
MAX_HEADER_BYTES = 100_000_000
MAX_NDIM = 64


def read_header(path: str | os.PathLike) -> tuple[dict[str, dict], dict[str, str], int, int]:
    """Read and validate a safetensors header without touching the data.

    Returns `(entries, metadata, data_start, file_size)`, where `entries` maps each tensor name to
    `{"dtype": str, "shape": tuple[int, ...], "begin": int, "end": int}` (absolute file offsets).
    """
    path = os.fspath(path)
    try:
        with open(path, "rb") as f:
            file_size = os.fstat(f.fileno()).st_size
            if file_size < 8:
                raise CheckpointError(f"{path}: {file_size} bytes is too short for a safetensors file")
            n = int.from_bytes(f.read(8), "little")
            if n > file_size - 8 or n > MAX_HEADER_BYTES:
                raise CheckpointError(
                    f"{path}: header length {n} does not fit in the file ({file_size} bytes)")
            raw = f.read(n)
    except OSError as e:
        raise CheckpointError(f"cannot read {path}: {e}") from None
    if len(raw) != n:
        raise CheckpointError(f"{path}: file shrank while reading the header")
    try:
        header = json.loads(raw.decode("utf-8"), object_pairs_hook=_refuse_duplicate_keys)
    except CheckpointError as e:
        raise CheckpointError(f"{path}: {e}") from None
    except (UnicodeDecodeError, ValueError, RecursionError) as e:
        # ValueError covers JSONDecodeError and over-long integers; RecursionError a nesting bomb.
        raise CheckpointError(f"{path}: header is not valid JSON ({type(e).__name__}: {e})"[:300]) from None
    if not isinstance(header, dict):
        raise CheckpointError(f"{path}: header must be a JSON object, got {type(header).__name__}")

    data_start = 8 + n
    data_size = file_size - data_start
    metadata = header.pop("__metadata__", None) or {}
    if not isinstance(metadata, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()):
        raise CheckpointError(f"{path}: __metadata__ must map strings to strings")

    entries: dict[str, dict] = {}
    for name, info in header.items():
        entries[name] = _check_entry(path, name, info, data_size, data_start)

    # The tensors tile the data buffer exactly, as the reference implementation requires: sorted by
    # offset, each starts where the previous one ended, and the last ends at the end of the file.
    # (Gaps could hide data; overlaps would make two tensors share bytes.)
    expected = data_start
    for begin, end, name in sorted((e["begin"], e["end"], name) for name, e in entries.items()):
        if begin != expected:
            what = "overlaps the tensor before it" if begin < expected else "leaves a gap before it"
            raise CheckpointError(f"{path}: tensor {name!r} starts at byte {begin - data_start} of the data "
                                  f"buffer and {what} (expected byte {expected - data_start})"[:300])
        expected = end
    if expected != file_size:
        raise CheckpointError(f"{path}: {file_size - expected} bytes after the last tensor belong to no tensor")
    return entries, metadata, data_start, file_size


def _refuse_duplicate_keys(pairs: list[tuple[str, object]]) -> dict:
    """`json.loads` hook: a JSON object naming one key twice is refused (json keeps the last silently)."""
    out: dict[str, object] = {}
    for key, value in pairs:
        if key in out:
            raise CheckpointError(f"the header names {key!r} more than once; the safetensors format "
                                  "refuses such a file (which entry counts would be a guess)"[:300])
        out[key] = value
    return out


def _check_entry(path: str, name: str, info: object, data_size: int, data_start: int) -> dict:
    """Validate one header entry: known dtype, sane shape, byte span equal to prod(shape) * itemsize."""
    where = f"{path}: tensor {name!r}"
    if not isinstance(info, dict):
        raise CheckpointError(f"{where}: entry must be an object")
    dtype, shape, offsets = info.get("dtype"), info.get("shape"), info.get("data_offsets")
    if not isinstance(dtype, str) or dtype not in DTYPES:
        raise CheckpointError(f"{where}: unknown dtype {dtype!r} (known: {', '.join(DTYPES)})"[:300])
    if not isinstance(shape, list) or len(shape) > MAX_NDIM:
        raise CheckpointError(f"{where}: shape must be a list of at most {MAX_NDIM} non-negative integers")
    if (not isinstance(offsets, list) or len(offsets) != 2
            or not all(type(o) is int for o in offsets)):
        raise CheckpointError(f"{where}: data_offsets must be two integers")
    begin, end = offsets
    if not 0 <= begin <= end <= data_size:
        raise CheckpointError(
            f"{where}: data_offsets [{begin}, {end}] lie outside the data buffer ({data_size} bytes)")
    numel = checked_numel(shape, DTYPES[dtype].itemsize, "shape", where)   # each dim an int64, first
    if numel * DTYPES[dtype].itemsize != end - begin:
        raise CheckpointError(
            f"{where}: shape {shape} of {dtype} needs {numel * DTYPES[dtype].itemsize} bytes "
            f"but data_offsets span {end - begin}"[:300])
    return {"dtype": dtype, "shape": tuple(shape), "begin": data_start + begin, "end": data_start + end}


def load_file(path: str | os.PathLike, dtype: np.dtype | type | None = None,
              mmap: bool = True) -> dict[str, np.ndarray]:
    """Load every tensor of a safetensors file as NumPy arrays, views of the file's bytes.

    `dtype=None` keeps each tensor's stored dtype (BF16 becomes float32); a floating `dtype`
    converts floating tensors to it (a copy only where the dtype differs); integer and bool
    tensors are never converted. `mmap=True` maps the file (see `formats.common.file_bytes` for
    what that means if the file changes); `mmap=False` reads it into memory first.
    """
    entries, _, _, _ = read_header(path)
    if not entries:
        return {}
    buf = file_bytes(path, mmap)                  # (file size,) uint8
    dtype = None if dtype is None else np.dtype(dtype)
    out: dict[str, np.ndarray] = {}
    for name, e in entries.items():
        raw = buf[e["begin"]:e["end"]]
        if e["dtype"] == "BF16":
            arr = widen_bf16(raw.view(DTYPES["BF16"])).reshape(e["shape"])
        else:
            arr = raw.view(DTYPES[e["dtype"]]).reshape(e["shape"])
        out[name] = cast_float(arr, dtype)
    return out


def load_metadata(path: str | os.PathLike) -> dict[str, str]:
    """The `__metadata__` of a safetensors file (an empty dict if it has none)."""
    return read_header(path)[1]


def save_file(tensors: dict[str, np.ndarray], path: str | os.PathLike,
              metadata: dict[str, str] | None = None) -> None:
    """Write `tensors` to a safetensors file atomically (temporary file in the same folder, then rename).

    Tensors are written in name order, C-contiguous and little-endian. Arrays that share memory are
    written once each (safetensors has no aliasing): drop tied copies before saving.
    """
    path = os.fspath(path)
    header: dict[str, object] = {}
    if metadata:
        if not all(isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()):
            raise TypeError("safetensors metadata must map strings to strings")
        header["__metadata__"] = dict(metadata)
    arrays: list[np.ndarray] = []
    offset = 0
    for name in sorted(tensors):
        if not isinstance(name, str):
            raise TypeError(f"tensor names must be strings, got {name!r}")
        a = np.asarray(tensors[name])
        key = a.dtype.newbyteorder("=")
        if key not in _NAMES:
            raise TypeError(f"tensor {name!r}: dtype {a.dtype} cannot be stored in safetensors")
        a = a.astype(a.dtype.newbyteorder("<"), order="C", copy=False)   # a view if already so
        header[name] = {"dtype": _NAMES[key], "shape": list(a.shape), "data_offsets": [offset, offset + a.nbytes]}
        arrays.append(a)
        offset += a.nbytes
    blob = json.dumps(header, separators=(",", ":")).encode("utf-8")
    blob += b" " * (-len(blob) % 8)                                  # pad so the data starts 8-aligned
    with atomic_open(path) as f:
        f.write(len(blob).to_bytes(8, "little"))
        f.write(blob)
        for a in arrays:
            f.write(a.reshape(-1).view(np.uint8).data)
