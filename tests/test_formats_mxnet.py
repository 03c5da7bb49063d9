"""minibort.formats.mxnet: MXNet NDArray lists (`bort.params`) written by hand, read without MXNet."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np

from minibort.formats.mxnet import load_mxnet_params


def mx_save(path: Path, arrays: dict[str, np.ndarray], magic: int = 0xF993FAC9) -> None:
    """Write an MXNet NDArray list the way `mx.nd.save` does (bort-facts section 3), with no MXNet."""
    flags = {np.dtype(np.float32): 0, np.dtype(np.float64): 1, np.dtype(np.float16): 2, np.dtype(np.uint8): 3,
             np.dtype(np.int32): 4, np.dtype(np.int8): 5, np.dtype(np.int64): 6}
    out = [struct.pack("<QQQ", 0x112, 0, len(arrays))]
    for a in arrays.values():
        out += [struct.pack("<IiI", magic, 0, a.ndim), struct.pack(f"<{a.ndim}q", *a.shape),
                struct.pack("<iii", 1, 0, flags[a.dtype]), np.ascontiguousarray(a).tobytes()]
    out.append(struct.pack("<Q", len(arrays)))
    out += [struct.pack("<Q", len(n.encode())) + n.encode() for n in arrays]
    path.write_bytes(b"".join(out))


def test_mxnet_v3_magic_float16_and_unnamed(tmp_path):
    a = np.arange(6, dtype=np.float16).reshape(2, 3)
    mx_save(tmp_path / "a.params", {"x": a}, magic=0xF993FACA)
    np.testing.assert_array_equal(load_mxnet_params(tmp_path / "a.params")["x"], a.astype(np.float32))
    raw = (tmp_path / "a.params").read_bytes()
    name_part = struct.pack("<Q", 1) + struct.pack("<Q", 1) + b"x"
    (tmp_path / "b.params").write_bytes(raw[: -len(name_part)] + struct.pack("<Q", 0))
    assert list(load_mxnet_params(tmp_path / "b.params")) == ["0"]
