"""Property-based fuzzing of the three readers: truncated, bit-flipped and hand-built hostile files.

The property: loading either succeeds (and every returned array can be read) or raises
CheckpointError. Never another exception, never a hang, and (checked with tracemalloc) never an
allocation beyond a few times the file's size, whatever sizes the file declares.
"""

from __future__ import annotations

import json
import struct
import tracemalloc
import warnings
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_formats_mxnet import mx_save

from minibort.formats import load_state_dict, torch_zip
from minibort.formats.common import CheckpointError
from minibort.formats.safetensors import save_file
from minibort.formats.torch_zip import (
    MAX_PICKLE_NESTING,
    _pickle_int,
    _pickle_ints,
    _pickle_str,
    save_torch_zip,
)

FUZZ = settings(max_examples=120, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
SMALL = {"a": np.arange(12, dtype=np.float32).reshape(4, 3), "b": np.linspace(-1, 1, 5).astype(np.float16),
         "c": np.arange(4).reshape(2, 2), "d": np.array([True, False, True])}


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("fuzz")


@pytest.fixture(scope="module")
def samples(work) -> dict[str, bytes]:
    """One small valid file of each kind."""
    save_file(SMALL, work / "s.safetensors")
    save_torch_zip(SMALL, work / "t.bin")
    mx_save(work / "m.params", {"word_embed.0.weight": np.ones((5, 3), np.float32),
                                "encoder.position_weight": np.zeros((4, 3), np.float16),
                                "encoder.layer_norm.gamma": np.ones(3, np.float32)})
    return {k: (work / f).read_bytes() for k, f in
            [("safetensors", "s.safetensors"), ("torch", "t.bin"), ("mxnet", "m.params")]}


def load_or_refuse(path: Path) -> dict | None:
    """The property under test: a clean load (every byte readable) or CheckpointError, and bounded memory."""
    size = path.stat().st_size
    tracemalloc.start()
    try:
        out = load_state_dict(path, dtype=np.float32)
        for a in out.values():
            np.asarray(a).tobytes()                        # actually read the (memory-mapped) data
    except CheckpointError:
        out = None
    finally:
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    assert peak < 4 * size + 2 ** 20, f"peak allocation {peak} bytes for a {size}-byte file"
    return out


KINDS = ["safetensors", "torch", "mxnet"]


@pytest.mark.parametrize("kind", KINDS)
@FUZZ
@given(data=st.data())
def test_truncated_files(samples, work, kind, data):
    raw = samples[kind]
    n = data.draw(st.integers(0, len(raw) - 1), label="kept bytes")
    (work / "x").write_bytes(raw[:n])
    assert load_or_refuse(work / "x") is None      # every byte of these files is needed: a cut is refused


@pytest.mark.parametrize("kind", KINDS)
@FUZZ
@given(data=st.data())
def test_bit_flipped_files(samples, work, kind, data):
    raw = bytearray(samples[kind])
    flips = data.draw(st.lists(st.tuples(st.integers(0, len(raw) - 1), st.integers(0, 7)), min_size=1,
                               max_size=6), label="flips")
    for pos, bit in flips:
        raw[pos] ^= 1 << bit
    (work / "x").write_bytes(bytes(raw))
    load_or_refuse(work / "x")


# ---------------------------------------------------------------------------- hand-built hostile headers
big_ints = st.one_of(st.integers(-3, 40), st.integers(-(2 ** 70), 2 ** 70),
                     st.sampled_from([2 ** 31 - 1, 2 ** 32, 2 ** 63 - 1, 2 ** 64 - 1, -(2 ** 63)]))
json_scalars = st.one_of(st.none(), st.booleans(), big_ints, st.floats(allow_nan=False), st.text(max_size=5))


@FUZZ
@given(entries=st.dictionaries(
    st.text(max_size=4),
    st.one_of(
        st.fixed_dictionaries({
            "dtype": st.sampled_from(["F32", "F16", "BF16", "I64", "BOOL", "U8", "F8", "f32", "", "F64"]),
            "shape": st.one_of(st.lists(big_ints, max_size=4), json_scalars),
            "data_offsets": st.one_of(st.lists(big_ints, min_size=2, max_size=2), st.lists(big_ints, max_size=3),
                                      json_scalars)}),
        json_scalars, st.lists(json_scalars, max_size=3)),
    max_size=4), data_len=st.integers(0, 64))
def test_hostile_safetensors_headers(work, entries, data_len):
    blob = json.dumps(entries).encode()
    (work / "x.safetensors").write_bytes(len(blob).to_bytes(8, "little") + blob + bytes(data_len))
    load_or_refuse(work / "x.safetensors")


@FUZZ
@given(count=big_ints, ndim=big_ints, dims=st.lists(big_ints, max_size=5), flag=st.integers(-1, 14),
       stype=st.integers(-1, 2), magic=st.sampled_from([0xF993FAC9, 0xF993FACA, 0xF993FAC8, 0]),
       tail=st.binary(max_size=64), names=st.lists(big_ints, max_size=3))
def test_hostile_mxnet_headers(work, count, ndim, dims, flag, stype, magic, tail, names):
    def u64(v: int) -> bytes:
        return struct.pack("<Q", v % 2 ** 64)
    raw = (struct.pack("<QQ", 0x112, 0) + u64(count) + struct.pack("<I", magic) + struct.pack("<i", stype)
           + struct.pack("<I", ndim % 2 ** 32) + b"".join(u64(d) for d in dims) + struct.pack("<iii", 1, 0, flag)
           + tail + b"".join(u64(n) for n in names))
    (work / "x.params").write_bytes(raw)
    load_or_refuse(work / "x.params")


def _tensor_pickle(storage: str, key: str, numel: int, offset: int, size: tuple, stride: tuple) -> bytes:
    return (b"\x80\x02}(" + _pickle_str("w") + b"ctorch._utils\n_rebuild_tensor_v2\n(("
            + _pickle_str("storage") + f"ctorch\n{storage}\n".encode() + _pickle_str(key) + _pickle_str("cpu")
            + _pickle_int(numel) + b"tQ" + _pickle_int(offset) + _pickle_ints(size) + _pickle_ints(stride)
            + b"\x89ccollections\nOrderedDict\n)RtRu.")


def _zip(path: Path, entries: dict[str, bytes]) -> None:
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in entries.items():
            zf.writestr(name, data)


ITEMSIZE = {"FloatStorage": 4, "HalfStorage": 2, "BFloat16Storage": 2, "LongStorage": 8, "BoolStorage": 1}
small_or_big = st.one_of(st.integers(0, 20), big_ints)


@FUZZ
@given(storage=st.sampled_from(sorted(ITEMSIZE)), numel=st.integers(0, 16), offset=small_or_big,
       size=st.lists(small_or_big, max_size=4), stride=st.lists(st.one_of(st.just(0), small_or_big), max_size=4),
       extra=st.sampled_from([0, 0, 0, 1, -1]), key=st.sampled_from(["0", "0", "0", "1", "../0"]))
def test_hostile_tensor_views(work, storage, numel, offset, size, stride, extra, key):
    """Offsets, shapes and strides that lie about a (correctly sized) storage: refused, nothing huge built."""
    stored = max(0, numel * ITEMSIZE[storage] + extra)
    _zip(work / "x.bin", {"archive/data.pkl": _tensor_pickle(storage, key, numel, offset, tuple(size), tuple(stride)),
                          "archive/data/0": bytes(stored)})
    out = load_or_refuse(work / "x.bin")
    if out is not None:                            # what loaded must have been a view inside its storage
        count = int(np.prod([float(n) for n in size])) if size else 1
        assert key == "0" and stored == numel * ITEMSIZE[storage] and len(size) == len(stride)
        assert count <= numel and 0 <= offset <= numel
        assert count == 0 or offset + sum((n - 1) * s for n, s in zip(size, stride, strict=True)) < numel
        assert out["w"].shape == tuple(size)


@FUZZ
@given(data=st.data())
def test_mutated_pickles_with_valid_crc(samples, work, data):
    """Flip bytes of data.pkl and re-zip it with a correct CRC, so the unpickler itself sees the damage."""
    (work / "orig.bin").write_bytes(samples["torch"])
    with zipfile.ZipFile(work / "orig.bin") as zf:
        entries = {i.filename: zf.read(i) for i in zf.infolist()}
    pkl = bytearray(entries["archive/data.pkl"])
    for pos, val in data.draw(st.lists(st.tuples(st.integers(0, len(pkl) - 1), st.integers(0, 255)),
                                       min_size=1, max_size=4), label="byte changes"):
        pkl[pos] = val
    entries["archive/data.pkl"] = bytes(pkl)
    _zip(work / "x.bin", entries)
    load_or_refuse(work / "x.bin")


def test_zip_bombs_are_refused(work):
    # data.pkl deflated from 64 MiB of zeros: declares more than the file holds.
    with zipfile.ZipFile(work / "bomb.bin", "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("archive/data.pkl", bytes(64 * 2 ** 20))
    assert load_or_refuse(work / "bomb.bin") is None
    # The same, with its declared sizes patched down to 100 bytes: zipfile stops at 100 and the CRC fails.
    raw = bytearray((work / "bomb.bin").read_bytes())
    for sig, off in ((b"PK\x03\x04", 22), (b"PK\x01\x02", 24)):
        i = raw.find(sig)
        raw[i + off:i + off + 4] = struct.pack("<I", 100)
    (work / "bomb2.bin").write_bytes(bytes(raw))
    assert load_or_refuse(work / "bomb2.bin") is None
    # A stored storage whose central-directory size claims 4 GiB.
    save_torch_zip({"w": np.ones(4, np.float32)}, work / "t.bin")
    raw = bytearray((work / "t.bin").read_bytes())
    i = raw.find(b"PK\x01\x02", raw.find(b"archive/data/0") + 1)
    while i != -1 and raw[i + 46:i + 46 + 14] != b"archive/data/0":
        i = raw.find(b"PK\x01\x02", i + 1)
    raw[i + 20:i + 28] = struct.pack("<II", 2 ** 32 - 1, 2 ** 32 - 1)
    (work / "t2.bin").write_bytes(bytes(raw))
    assert load_or_refuse(work / "t2.bin") is None


def test_many_tensors_viewing_one_storage_are_refused(work):
    """1000 float16 tensors sharing one storage would each be converted: more than 4x the file."""
    entry = (b"ctorch._utils\n_rebuild_tensor_v2\n((" + _pickle_str("storage") + b"ctorch\nHalfStorage\n"
             + _pickle_str("0") + _pickle_str("cpu") + _pickle_int(50_000) + b"tQ" + _pickle_int(0)
             + _pickle_ints((50_000,)) + _pickle_ints((1,)) + b"\x89ccollections\nOrderedDict\n)RtR")
    pkl = b"\x80\x02}(" + b"".join(_pickle_str(f"w{i}") + entry for i in range(1000)) + b"u."
    _zip(work / "x.bin", {"archive/data.pkl": pkl, "archive/data/0": bytes(100_000)})
    with pytest.raises(CheckpointError, match="4x"):
        load_state_dict(work / "x.bin")


def test_crc_mismatch_in_a_storage_is_refused(work):
    save_torch_zip({"w": np.ones(64, np.float32)}, work / "t.bin")
    raw = bytearray((work / "t.bin").read_bytes())
    data = np.ones(64, np.float32).tobytes()
    i = raw.find(data)
    raw[i + 5] ^= 1
    assert zlib.crc32(bytes(raw[i:i + len(data)])) != zlib.crc32(data)
    (work / "t2.bin").write_bytes(bytes(raw))
    with pytest.raises(CheckpointError, match="CRC"):
        load_state_dict(work / "t2.bin")


# ---------------------------------------------------------------------------- issue 14's shapes of attack
def _refusal(path: Path) -> str:
    """The CheckpointError message for `path` (the load must be refused)."""
    with pytest.raises(CheckpointError) as e:
        load_or_refuse_strict(path)
    return str(e.value)


def load_or_refuse_strict(path: Path) -> None:
    """Like load_or_refuse, but let the CheckpointError through so its message can be checked."""
    out = load_state_dict(path, dtype=np.float32)
    for a in out.values():
        np.asarray(a).tobytes()


def _key(k: str) -> bytes:
    return _pickle_str(k)


# Four ways to nest: each builds a dict holding one value of nesting depth `d + 1` (so the dict is d + 2).
NESTINGS = {
    "TUPLE1 chain": lambda d: b"\x80\x02})" + b"\x85" * d + b"Ns.",
    "MARK/TUPLE chain": lambda d: b"\x80\x02}" + b"(" * d + b")" + b"t" * d + b"Ns.",
    "memo re-wrapping": lambda d: b"\x80\x02})q\x000" + b"h\x00\x85q\x000" * d + b"h\x00Ns.",
    "APPEND chain": lambda d: b"\x80\x02}" + _key("k") + b"]" * (d + 1) + b"a" * d + b"s.",
    "SETITEM chain": lambda d: b"\x80\x02}" + (_key("k") + b"}") * d + b"]" + b"s" * d + _key("k") + b"Ns.",
}


@FUZZ
@given(kind=st.sampled_from(sorted(NESTINGS)), depth=st.integers(0, 3 * MAX_PICKLE_NESTING))
def test_nesting_depth_is_refused_exactly_beyond_the_limit(work, kind, depth):
    _zip(work / "x.bin", {"archive/data.pkl": NESTINGS[kind](depth)})
    message = _refusal(work / "x.bin")                   # no tensors either way: always refused
    assert ("levels deep" in message) == (depth + 2 > MAX_PICKLE_NESTING), message


FLOODS = {                                                 # pattern, values pushed per repetition
    "NONE APPEND": (b"Na", 1),
    "BINGET APPEND": (b"h\x00a", 1),
    "NONE POP": (b"N0", 1),
    "DUP POP": (b"20", 1),
    "EMPTY_TUPLE APPEND": (b")a", 1),
    "BININT1 NONE SETITEM": (b"K\x01Ns", 2),
}


@FUZZ
@given(kind=st.sampled_from(sorted(FLOODS)), n=st.integers(0, 600))
def test_opcode_floods_are_refused_by_object_count(work, monkeypatch, kind, n):
    """A small object budget, and floods around it: refused exactly when the pushes exceed it."""
    monkeypatch.setattr(torch_zip, "MAX_PICKLE_OBJECTS", 500)
    pattern, per = FLOODS[kind]
    container = b"}" if kind.endswith("SETITEM") else b"]"
    # EMPTY_DICT, key, [a None memoized as 0, popped], container, flood, SETITEM: 3 pushes + (1) + flood.
    pkl = b"\x80\x02}" + _key("k") + b"Nq\x000" + container + pattern * n + b"s."
    _zip(work / "x.bin", {"archive/data.pkl": pkl})
    message = _refusal(work / "x.bin")
    pushed = 4 + per * n
    assert ("objects" in message) == (pushed > 500), message


@FUZZ
@given(value=st.one_of(st.integers(-(2 ** 80), 2 ** 80), st.integers(0, 2 ** 4000),
                       st.sampled_from([2 ** 63 - 1, 2 ** 63, -(2 ** 63), -(2 ** 63) - 1])),
       slot=st.sampled_from(["size", "stride", "offset", "numel"]))
def test_big_integers_anywhere_in_a_tensor_are_refused_or_bounded(work, value, slot):
    """LONG4 integers of any size in any slot: outside int64 -> refused by the pre-scan, else checked."""
    raw = value.to_bytes((value.bit_length() + 8) // 8, "little", signed=True)
    big = b"\x8b" + struct.pack("<I", len(raw)) + raw
    one, zero = _pickle_int(1), _pickle_int(0)
    parts = {"numel": _pickle_int(4), "offset": zero, "size": b"(" + one + b"t", "stride": b"(" + one + b"t"}
    parts[slot] = big if slot in ("numel", "offset") else b"(" + big + b"t"
    pkl = (b"\x80\x02}(" + _key("w") + b"ctorch._utils\n_rebuild_tensor_v2\n((" + _key("storage")
           + b"ctorch\nFloatStorage\n" + _key("0") + _key("cpu") + parts["numel"] + b"tQ" + parts["offset"]
           + parts["size"] + parts["stride"] + b"\x89ccollections\nOrderedDict\n)RtRu.")
    _zip(work / "x.bin", {"archive/data.pkl": pkl, "archive/data/0": bytes(16)})
    out = load_or_refuse(work / "x.bin")
    if not -(2 ** 63) <= value < 2 ** 63:
        assert out is None and "bit integer" in _refusal(work / "x.bin")


@FUZZ
@given(names=st.lists(st.sampled_from(["a", "b", "c", "__metadata__"]), min_size=1, max_size=5))
def test_safetensors_duplicate_keys_are_refused(work, names):
    """Headers written by hand with keys drawn with repetition: refused exactly when a key repeats."""
    parts, offset = [], 0
    for name in names:
        if name == "__metadata__":
            parts.append('"__metadata__":{"k":"v"}')
        else:
            parts.append(f'"{name}":{{"dtype":"F32","shape":[1],"data_offsets":[{offset},{offset + 4}]}}')
            offset += 4
    blob = ("{" + ",".join(parts) + "}").encode()
    (work / "x.safetensors").write_bytes(len(blob).to_bytes(8, "little") + blob + bytes(offset))
    out = load_or_refuse(work / "x.safetensors")
    repeated = len(set(names)) != len(names)
    assert (out is None) == repeated
    if repeated:
        assert "more than once" in _refusal(work / "x.safetensors")


@FUZZ
@given(sizes=st.lists(st.integers(0, 3), min_size=1, max_size=4), gaps=st.lists(st.integers(0, 2), min_size=5,
                                                                                     max_size=5))
def test_safetensors_gaps_are_refused(work, sizes, gaps):
    """Tensors laid out with random gaps before each and after the last: loads iff there are none."""
    header, offset = {}, 0
    for i, n in enumerate(sizes):
        offset += 4 * gaps[i]
        header[f"t{i}"] = {"dtype": "F32", "shape": [n], "data_offsets": [offset, offset + 4 * n]}
        offset += 4 * n
    offset += 4 * gaps[len(sizes)]
    blob = json.dumps(header).encode()
    (work / "x.safetensors").write_bytes(len(blob).to_bytes(8, "little") + blob + bytes(offset))
    out = load_or_refuse(work / "x.safetensors")
    assert (out is None) == any(gaps[:len(sizes) + 1])


@FUZZ
@given(dup=st.lists(st.sampled_from(["archive/data.pkl", "archive/data/0", "archive/data/1", "archive/byteorder",
                                     "archive/version"]), max_size=3))
def test_duplicate_zip_entries_are_refused(samples, work, dup):
    two = {"a": np.ones(2, np.float32), "b": np.zeros(3, np.float32)}
    save_torch_zip(two, work / "two.bin")
    with zipfile.ZipFile(work / "two.bin") as zf:
        entries = [(i.filename, zf.read(i)) for i in zf.infolist()]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")                      # zipfile warns "Duplicate name"
        with zipfile.ZipFile(work / "x.bin", "w") as zf:
            for name, data in entries + [(n, d) for n, d in entries if n in dup]:
                zf.writestr(name, data)
    out = load_or_refuse(work / "x.bin")
    assert (out is None) == bool(dup)
    if dup:
        assert "more than once" in _refusal(work / "x.bin")
