"""Writing files so that nothing is ever half-written: the one atomic writer every module uses.

A file is written to a unique temporary name in its destination folder, flushed, and renamed over
the destination only when whole. `os.replace` is atomic on one file system, so a reader (or a run
interrupted by Ctrl-C, or a second run writing the same file) sees the old file or the new one,
never a mixture. The temporary name is unique (`tempfile.mkstemp`), so two processes writing the
same path cannot collide on it. Files get the permissions the user's umask gives a new file (mkstemp
alone would give 0600).
"""
from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Callable, Iterator
from typing import BinaryIO

import numpy as np


def _umask_mode() -> int:
    """The mode `open(path, "w")` would give a new file: 0o666 minus the process's umask."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike, overwrite: bool = True) -> Iterator[BinaryIO]:
    """`with atomic_open(path) as f: f.write(...)`: a binary file renamed onto `path` when the block
    ends without an exception, and deleted otherwise. `overwrite=False` refuses an existing `path`."""
    path = os.fspath(path)
    if not overwrite and os.path.exists(path):
        raise FileExistsError(f"{path} exists; minibort does not overwrite files it did not write "
                              "(remove it or choose another name)")
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path) or ".", prefix="." + os.path.basename(path) + ".",
                               suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, _umask_mode())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def write_bytes_atomic(path: str | os.PathLike, data: bytes | Callable[[BinaryIO], None]) -> None:
    """Write `data` (bytes, or a function that writes into the open file) to `path` atomically."""
    with atomic_open(path) as f:
        if callable(data):
            data(f)
        else:
            f.write(data)


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    """Write `text` as UTF-8 with "\\n" line ends to `path` atomically."""
    write_bytes_atomic(path, text.encode("utf-8"))


def savez_atomic(path: str | os.PathLike, arrays: dict[str, np.ndarray]) -> None:
    """`np.savez` to `path` atomically (np.savez would append ".npz" to a name without it)."""
    write_bytes_atomic(path, lambda f: np.savez(f, **arrays))
