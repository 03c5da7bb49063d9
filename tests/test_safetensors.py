"""minibort.formats.safetensors: round trips, memory mapping, bfloat16, header validation, interop with the
`safetensors` package (skipped without it)."""

from __future__ import annotations

import json
import mmap
import os

import numpy as np
import pytest

from minibort.formats.common import CheckpointError
from minibort.formats.safetensors import load_file, load_metadata, read_header, save_file

ALL_DTYPES = [np.float64, np.float32, np.float16, np.int64, np.int32, np.int16, np.int8, np.uint8, np.bool_]


def _tensors(rng: np.random.Generator) -> dict[str, np.ndarray]:
    out = {}
    for dt in ALL_DTYPES:
        a = rng.standard_normal((3, 5)) * 50
        out[f"t.{np.dtype(dt).name}"] = (a > 0) if dt is np.bool_ else a.astype(dt)
    out["scalar"] = np.array(2.5, np.float32)
    out["empty"] = np.zeros((4, 0), np.float32)
    out["fortran"] = np.asfortranarray(rng.standard_normal((4, 3)).astype(np.float32))
    return out


def write_raw(path, header: dict, data: bytes = b"", header_bytes: bytes | None = None) -> None:
    """A safetensors file from a header dict (or raw header bytes) and data, with no validation."""
    blob = header_bytes if header_bytes is not None else json.dumps(header).encode()
    with open(path, "wb") as f:
        f.write(len(blob).to_bytes(8, "little") + blob + data)


def backed_by_mmap(a: np.ndarray) -> bool:
    """True if the array's memory belongs to a memory map (no copy was made)."""
    b = a
    while b is not None:
        if isinstance(b, np.memmap | mmap.mmap):
            return True
        b = getattr(b, "base", None)
    return False


def test_round_trip_every_dtype(tmp_path):
    t = _tensors(np.random.default_rng(0))
    save_file(t, tmp_path / "a.safetensors", metadata={"format": "np", "note": "x"})
    back = load_file(tmp_path / "a.safetensors")
    assert set(back) == set(t)
    for k in t:
        assert back[k].dtype == t[k].dtype and back[k].shape == t[k].shape, k
        np.testing.assert_array_equal(back[k], t[k], err_msg=k)
    assert load_metadata(tmp_path / "a.safetensors") == {"format": "np", "note": "x"}


def test_dtype_conversion_touches_only_floats(tmp_path):
    t = {"f": np.arange(6, dtype=np.float16).reshape(2, 3), "i": np.arange(3), "b": np.array([True])}
    save_file(t, tmp_path / "a.safetensors")
    back = load_file(tmp_path / "a.safetensors", dtype=np.float32)
    assert back["f"].dtype == np.float32 and back["i"].dtype == np.int64 and back["b"].dtype == np.bool_


def test_memory_mapped_and_copy_on_write(tmp_path):
    path = tmp_path / "a.safetensors"
    save_file({"w": np.arange(1024, dtype=np.float32)}, path)
    before = path.read_bytes()
    w = load_file(path)["w"]
    assert backed_by_mmap(w)
    w[:] = -1.0                                    # writable, but private to this process
    assert path.read_bytes() == before
    assert load_file(path)["w"][5] == 5.0


def test_header_is_padded_and_data_aligned(tmp_path):
    save_file({"a": np.ones(3, np.float32), "b": np.ones(1, np.int8)}, tmp_path / "a.safetensors")
    n = int.from_bytes((tmp_path / "a.safetensors").read_bytes()[:8], "little")
    assert (8 + n) % 8 == 0


def test_bfloat16_is_widened_by_shifting(tmp_path):
    x = np.array([1.0, -2.5, 3.140625, 1e-3, -65504.0], np.float32)
    top = (x.view(np.uint32) >> 16).astype("<u2")          # bf16 = top 16 bits (truncation)
    write_raw(tmp_path / "b.safetensors", {"x": {"dtype": "BF16", "shape": [5], "data_offsets": [0, 10]}},
              top.tobytes())
    got = load_file(tmp_path / "b.safetensors")["x"]
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got, (top.astype(np.uint32) << 16).view(np.float32))
    np.testing.assert_allclose(got, x, rtol=2 ** -7)


def test_atomic_write_keeps_old_file_on_failure(tmp_path):
    path = tmp_path / "a.safetensors"
    save_file({"a": np.ones(2, np.float32)}, path)
    with pytest.raises(TypeError):
        save_file({"a": np.ones(2, np.float32), "b": np.array(["text"])}, path)
    np.testing.assert_array_equal(load_file(path)["a"], np.ones(2))
    assert [p.name for p in tmp_path.iterdir()] == ["a.safetensors"]     # no temporary left behind


@pytest.mark.parametrize("case", [
    "too_short", "header_past_end", "not_json", "not_object", "unknown_dtype", "shape_mismatch",
    "negative_dim", "float_dim", "offsets_past_end", "offsets_reversed", "overlap", "bad_metadata",
    "huge_shape", "json_nesting_bomb", "huge_int", "entry_not_object",
])
def test_bad_headers_raise_checkpoint_error(tmp_path, case):
    p = tmp_path / "bad.safetensors"
    ok = {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}
    data = bytes(16)
    if case == "too_short":
        p.write_bytes(b"\x01\x00")
    elif case == "header_past_end":
        p.write_bytes((10 ** 6).to_bytes(8, "little") + b"{}")
    elif case == "not_json":
        write_raw(p, {}, data, header_bytes=b"{not json")
    elif case == "not_object":
        write_raw(p, [1, 2], data)
    elif case == "unknown_dtype":
        write_raw(p, {"a": {**ok, "dtype": "F8_E4M3"}}, data)
    elif case == "shape_mismatch":
        write_raw(p, {"a": {**ok, "shape": [3]}}, data)
    elif case == "negative_dim":
        write_raw(p, {"a": {**ok, "shape": [-2, -1], "data_offsets": [0, 8]}}, data)
    elif case == "float_dim":
        write_raw(p, {"a": {**ok, "shape": [2.0]}}, data)
    elif case == "offsets_past_end":
        write_raw(p, {"a": {**ok, "shape": [8], "data_offsets": [0, 32]}}, data)
    elif case == "offsets_reversed":
        write_raw(p, {"a": {**ok, "shape": [0], "data_offsets": [8, 0]}}, data)
    elif case == "overlap":
        write_raw(p, {"a": ok, "b": {**ok, "data_offsets": [4, 12]}}, data)
    elif case == "bad_metadata":
        write_raw(p, {"__metadata__": {"a": 1}, "x": ok}, data)
    elif case == "huge_shape":
        write_raw(p, {"a": {**ok, "shape": [2 ** 40, 2 ** 40]}}, data)
    elif case == "json_nesting_bomb":
        write_raw(p, {}, data, header_bytes=b"[" * 100_000 + b"]" * 100_000)
    elif case == "huge_int":
        write_raw(p, {}, data, header_bytes=b'{"a": {"dtype": "F32", "shape": [' + b"9" * 50_000 + b"]}}")
    elif case == "entry_not_object":
        write_raw(p, {"a": 3}, data)
    with pytest.raises(CheckpointError) as e:
        load_file(p)
    print(case, "->", e.value)


def test_missing_file_is_checkpoint_error(tmp_path):
    with pytest.raises(CheckpointError, match="cannot read"):
        read_header(tmp_path / "nope.safetensors")


# ---------------------------------------------------------------------------- the safetensors package
def test_our_files_load_in_safetensors_package(tmp_path):
    sn = pytest.importorskip("safetensors.numpy", reason="the safetensors package (reference extra) is absent")
    t = _tensors(np.random.default_rng(1))
    save_file(t, tmp_path / "ours.safetensors", metadata={"format": "np"})
    theirs = sn.load_file(tmp_path / "ours.safetensors")
    for k in t:
        assert theirs[k].dtype == t[k].dtype and theirs[k].shape == t[k].shape, k
        np.testing.assert_array_equal(theirs[k], t[k], err_msg=k)


def test_their_files_load_in_minibort(tmp_path):
    sn = pytest.importorskip("safetensors.numpy", reason="the safetensors package (reference extra) is absent")
    t = _tensors(np.random.default_rng(2))
    t["fortran"] = np.ascontiguousarray(t["fortran"])
    sn.save_file(t, os.fspath(tmp_path / "theirs.safetensors"), metadata={"k": "v"})
    back = load_file(tmp_path / "theirs.safetensors")
    for k in t:
        assert back[k].dtype == t[k].dtype, k
        np.testing.assert_array_equal(back[k], t[k], err_msg=k)
    assert load_metadata(tmp_path / "theirs.safetensors") == {"k": "v"}


def test_their_bfloat16_loads(tmp_path):
    torch = pytest.importorskip("torch", reason="torch (reference extra) is absent: needed to write bfloat16")
    st_torch = pytest.importorskip("safetensors.torch", reason="the safetensors package is absent")
    x = torch.randn(4, 6)
    st_torch.save_file({"x": x.bfloat16()}, os.fspath(tmp_path / "bf.safetensors"))
    got = load_file(tmp_path / "bf.safetensors")["x"]
    np.testing.assert_array_equal(got, x.bfloat16().float().numpy())
