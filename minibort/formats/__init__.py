"""The bytes on disk: every checkpoint format minibort reads, one format per file.

| file                  | format                                      | who writes it                          |
|-----------------------|---------------------------------------------|----------------------------------------|
| `common.py`           | (shared) `CheckpointError`, the file buffer (memory map or copy), bfloat16, int64 checks | |
| `safetensors.py`      | `model.safetensors`: u64 length, JSON header, raw tensors | minibort, transformers |
| `torch_zip.py`        | `pytorch_model.bin`: a zip of a pickle + raw storages | `torch.save` (amazon/bort on the hub), minibort |
| `mxnet.py`            | `bort.params`: an MXNet NDArray list         | GluonNLP (the original Bort release)   |

`file_kind(path)` tells the kind from the file's signature, and `load_state_dict(path)` reads any of
them into `{name: array}` under the file's own names (for `bort.params` those are Gluon's names;
`minibort.checkpoint` renames them and applies the hub's policies).

Every reader validates sizes and offsets against the file before it touches tensor data, so a
truncated, bit-flipped or hostile file raises `CheckpointError` instead of crashing, hanging or
allocating more memory than the file holds. Arrays are views of a copy-on-write memory map by
default (`mmap=True`): fast, but tied to the file staying unchanged; `mmap=False` reads the file
into memory, for long-running processes (see `common.py`).
"""

from __future__ import annotations

import os

import numpy as np

from .common import CheckpointError
from .mxnet import LIST_MAGIC, ND_MAGICS, load_mxnet_params
from .safetensors import load_file
from .torch_zip import load_torch_zip

__all__ = ["CheckpointError", "file_kind", "load_state_dict"]


def file_kind(path: str | os.PathLike) -> str:
    """Tell a checkpoint's kind from its signature: 'safetensors', 'torch-zip', 'torch-legacy' or 'mxnet'.

    Each format is recognised by all of its fixed bytes, not a prefix that another format can share:
    a safetensors file whose JSON header is 274 (0x112) bytes long starts with MXNet's magic number,
    and one of 640 (0x280) bytes with a protocol-2 pickle's first two bytes.
    """
    path = os.fspath(path)
    try:
        with open(path, "rb") as f:
            head = f.read(4096)
            size = os.fstat(f.fileno()).st_size
    except OSError as e:
        raise CheckpointError(f"cannot read {path}: {e}") from None
    first_u64 = int.from_bytes(head[:8], "little") if len(head) >= 8 else -1
    if head[:4] == b"PK\x03\x04":
        return "torch-zip"
    # safetensors: u64 header length that fits in the file, then the JSON object's "{" (after any
    # JSON whitespace, which the reference reader accepts too).
    if 2 <= first_u64 <= size - 8 and head[8:8 + first_u64].lstrip(b" \t\r\n")[:1] == b"{":
        return "safetensors"
    # MXNet: u64 0x112, u64 reserved = 0, u64 count, then (if count > 0) the first array's magic.
    if len(head) >= 24 and first_u64 == LIST_MAGIC and head[8:16] == bytes(8):
        count = int.from_bytes(head[16:24], "little")
        if count == 0 or (len(head) >= 28 and int.from_bytes(head[24:28], "little") in ND_MAGICS):
            return "mxnet"
    if head[:1] == b"\x80" and len(head) >= 2 and head[1] <= 5:
        return "torch-legacy"                        # a bare pickle: torch.save before 1.6
    raise CheckpointError(f"{path}: not a checkpoint minibort can read (expected safetensors, a "
                          "PyTorch zip archive or an MXNet .params file)")


def load_state_dict(path: str | os.PathLike, dtype: np.dtype | type | None = np.float32,
                    mmap: bool = True) -> dict[str, np.ndarray]:
    """Load one weights file of any supported kind into `{name in the file: array}`.

    Floating tensors become `dtype` (None keeps the stored dtype). `mmap=True` returns views of a
    copy-on-write memory map of the file; `mmap=False` returns arrays that own their memory (use it
    when the file may change while the arrays are in use).
    """
    path = os.fspath(path)
    kind = file_kind(path)
    if kind == "safetensors":
        return load_file(path, dtype=dtype, mmap=mmap)
    if kind == "torch-zip":
        return load_torch_zip(path, dtype=dtype, mmap=mmap)
    if kind == "mxnet":
        return load_mxnet_params(path, dtype=dtype, mmap=mmap)
    raise CheckpointError(
        f"{path} is a legacy (pre-1.6, non-zip) PyTorch pickle, which minibort does not read: it "
        "cannot be loaded safely without torch. Re-save it where torch is installed, e.g. "
        "`torch.save(torch.load(p, weights_only=True), 'pytorch_model.bin')` (torch >= 1.6 writes "
        "the zip format) or save it as model.safetensors.")
