"""Hostile checkpoint files (issue 14, findings 1-3, 9, 14-17), each built here byte by byte.

Crash-class files (a million-deep tuple, opcode floods, huge integers) are loaded in a child process
under a memory limit (`resource.setrlimit(RLIMIT_AS)`) and a deadline, so a regression fails the test
with the child's fate (killed by a signal, out of memory, timed out) instead of killing pytest.
"""

from __future__ import annotations

import json
import os
import signal
import struct
import subprocess
import sys
import textwrap
import warnings
import zipfile
from pathlib import Path

import numpy as np
import pytest
from test_formats_mxnet import mx_save
from test_safetensors import backed_by_mmap, write_raw

from minibort.formats import file_kind, load_state_dict
from minibort.formats.common import CheckpointError
from minibort.formats.safetensors import load_file, save_file
from minibort.formats.torch_zip import MAX_PICKLE_NESTING, MAX_PICKLE_OBJECTS, save_torch_zip

ROOT = Path(__file__).resolve().parents[1]
CHILD_MEMORY = 1536 * 2 ** 20         # address space of the child: Python + NumPy need ~400 MB of it
CHILD_SECONDS = 60

# The child loads one file and reports "refused: <message>" or "loaded: <names>" on stdout.
CHILD = textwrap.dedent("""
    import resource, sys
    resource.setrlimit(resource.RLIMIT_AS, ({mem}, {mem}))
    sys.path.insert(0, {root!r})
    from minibort.formats import load_state_dict
    from minibort.formats.common import CheckpointError
    try:
        out = load_state_dict(sys.argv[1])
    except CheckpointError as e:
        print("refused:", e)
    else:
        print("loaded:", sorted(out))
""")


def load_in_child(path: Path) -> str:
    """Load `path` in a child process under a memory limit and a deadline; its stdout, or a failure."""
    code = CHILD.format(mem=CHILD_MEMORY, root=str(ROOT))
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}
    try:
        r = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True,
                           timeout=CHILD_SECONDS, env=env, check=False)
    except subprocess.TimeoutExpired:
        pytest.fail(f"loading {path.name} ran past {CHILD_SECONDS} s")
    if r.returncode < 0:
        pytest.fail(f"loading {path.name} killed the process with {signal.Signals(-r.returncode).name}")
    assert r.returncode == 0, f"loading {path.name} failed:\n{r.stderr[-2000:]}"
    print(r.stdout.strip()[:300])
    return r.stdout


def zip_pickle(path: Path, pkl: bytes, extra: dict[str, bytes] | None = None) -> Path:
    """`archive/data.pkl` (+ other members) stored in a zip, the way torch.save lays it out."""
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("archive/data.pkl", pkl)
        for name, data in (extra or {}).items():
            zf.writestr(name, data)
    return path


def bin_str(s: str) -> bytes:
    """BINUNICODE: a pickled str."""
    return b"X" + struct.pack("<I", len(s.encode())) + s.encode()


def long4(n: int) -> bytes:
    """LONG4: a pickled int of any size (little-endian two's complement)."""
    raw = n.to_bytes((n.bit_length() + 8) // 8, "little", signed=True)
    return b"\x8b" + struct.pack("<I", len(raw)) + raw


def ints(values: tuple[bytes, ...]) -> bytes:
    """MARK ... TUPLE over already-pickled ints."""
    return b"(" + b"".join(values) + b"t"


def tensor_pickle(numel: bytes, offset: bytes, size: tuple[bytes, ...], stride: tuple[bytes, ...]) -> bytes:
    """{'w': _rebuild_tensor_v2(storage 'archive/data/0' of FloatStorage, offset, size, stride)}."""
    return (b"\x80\x02}" + bin_str("w") + b"ctorch._utils\n_rebuild_tensor_v2\n(("
            + bin_str("storage") + b"ctorch\nFloatStorage\n" + bin_str("0") + bin_str("cpu") + numel + b"tQ"
            + offset + ints(size) + ints(stride) + b"\x89ccollections\nOrderedDict\n)RtRs.")


def small_int(n: int) -> bytes:
    return b"J" + struct.pack("<i", n)                                     # BININT


# =============================================================================== 1: nesting depth
# Each pickle builds a dict whose key (or value) nests a million levels deep. Hashing such a key
# recursed in C until the stack overflowed (SIGSEGV) before the pre-scan existed.
DEEP = 1_000_000
NESTING_BOMBS = {
    "TUPLE1 x 1e6 as a dict key": b"\x80\x02})" + b"\x85" * DEEP + b"Ns.",
    "MARK ... TUPLE x 1e5": b"\x80\x02}" + b"(" * 100_000 + b")" + b"t" * 100_000 + b"Ns.",
    "tuple re-wrapped through the memo": (b"\x80\x02})q\x000" + b"h\x00\x85q\x000" * 200_000
                                          + b"h\x00Ns."),
    "lists APPENDed into lists": b"\x80\x02}" + bin_str("k") + b"]" * 300_000 + b"a" * 299_999 + b"s.",
    "dicts SETITEMed into dicts": (b"\x80\x02}" + (bin_str("k") + b"}") * 100_000
                                   + b"s" * 100_000 + b"."),
}


@pytest.mark.parametrize("case", list(NESTING_BOMBS))
def test_deep_nesting_is_refused_before_unpickling(tmp_path, case):
    out = load_in_child(zip_pickle(tmp_path / "deep.bin", NESTING_BOMBS[case]))
    assert out.startswith("refused:") and f"more than {MAX_PICKLE_NESTING} levels deep" in out


def test_nesting_at_the_limit_is_not_refused_for_depth(tmp_path):
    # A key nested exactly to the limit: the dict holding it is one level more, so depth - 1 tuples.
    ok = b"\x80\x02})" + b"\x85" * (MAX_PICKLE_NESTING - 2) + b"Ns."
    with pytest.raises(CheckpointError, match="holds no tensors"):          # passes the scan, no tensors
        load_state_dict(zip_pickle(tmp_path / "ok.bin", ok))
    deep = b"\x80\x02})" + b"\x85" * (MAX_PICKLE_NESTING - 1) + b"Ns."
    with pytest.raises(CheckpointError, match="levels deep"):
        load_state_dict(zip_pickle(tmp_path / "deep.bin", deep))


def test_deep_json_in_a_safetensors_header_is_refused(tmp_path):
    write_raw(tmp_path / "deep.safetensors", {},
              header_bytes=b'{"a":' + b"[" * 1_000_000 + b"]" * 1_000_000 + b"}")
    out = load_in_child(tmp_path / "deep.safetensors")
    assert out.startswith("refused:") and "not valid JSON" in out


# =============================================================================== 2: size and object floods
def test_opcode_flood_is_refused_by_its_object_count(tmp_path):
    # EMPTY_LIST then (NONE APPEND) repeated: 2 bytes of file per list slot. 76 MiB of it took 5.6 GiB.
    n = MAX_PICKLE_OBJECTS + 10
    pkl = b"\x80\x02}" + bin_str("k") + b"]" + b"Na" * n + b"s."
    out = load_in_child(zip_pickle(tmp_path / "flood.bin", pkl))
    assert out.startswith("refused:") and f"more than {MAX_PICKLE_OBJECTS} objects" in out


def test_memo_get_flood_is_refused(tmp_path):
    # GET pushes a reference without creating an object, but the list slot it fills costs memory too.
    n = MAX_PICKLE_OBJECTS + 10
    pkl = b"\x80\x02}" + bin_str("k") + b"]Nq\x000" + b"h\x00a" * n + b"s."
    out = load_in_child(zip_pickle(tmp_path / "gets.bin", pkl))
    assert out.startswith("refused:") and "objects" in out


def test_oversized_pickle_is_refused(tmp_path):
    pkl = b"\x80\x04\x8e" + struct.pack("<Q", 17 * 2 ** 20) + bytes(17 * 2 ** 20) + b"."   # BINBYTES8
    out = load_in_child(zip_pickle(tmp_path / "big.bin", pkl))
    assert out.startswith("refused:") and "data.pkl is" in out and "bytes, more than" in out


# =============================================================================== 3: huge integers
HUGE = 2 ** (8 * 300_000) - 1                  # a 300 kB integer


@pytest.mark.parametrize("where", ["size", "stride", "offset", "storage numel"])
def test_huge_integers_are_refused_before_any_arithmetic(tmp_path, where):
    # Sizes as 300 kB LONG4 integers with stride 0 pass a last-element bounds check; multiplying
    # them took minutes. Each one is refused by the pre-scan before anything is multiplied.
    big, one, zero = long4(HUGE), small_int(1), small_int(0)
    args = {"numel": small_int(4), "offset": zero, "size": (one, one), "stride": (zero, zero)}
    if where == "size":
        args["size"] = (big, big, big)
        args["stride"] = (zero, zero, zero)
    elif where == "stride":
        args["stride"] = (big, zero)
    elif where == "offset":
        args["offset"] = big
    else:
        args["numel"] = big
    pkl = tensor_pickle(**args)
    out = load_in_child(zip_pickle(tmp_path / "ints.bin", pkl, {"archive/data/0": bytes(16)}))
    assert out.startswith("refused:") and "2400000-bit integer" in out


@pytest.mark.parametrize("size, stride, match", [
    ((2 ** 62, 2 ** 62, 0), (0, 0, 0), "too large for an array"),       # int64 each, product too big
    ((2 ** 63 - 1, 2), (0, 0), "too large for an array"),
    ((1, 2), (-1, 1), r"stride.*\[0, 2\*\*63\)"),                          # negative stride
    ((-1, 2), (1, 1), r"size.*\[0, 2\*\*63\)"),
])
def test_int64_sizes_that_overflow_are_refused(tmp_path, size, stride, match):
    pkl = tensor_pickle(small_int(4), small_int(0), tuple(long4(v) for v in size), tuple(long4(v) for v in stride))
    zip_pickle(tmp_path / "m.bin", pkl, {"archive/data/0": bytes(16)})
    with pytest.raises(CheckpointError, match=match):
        load_state_dict(tmp_path / "m.bin")


def test_stride_of_a_size_one_dimension_is_never_used(tmp_path):
    # torch allows any stride on a dimension of size 1 (it never steps); a huge one loads as usual.
    pkl = tensor_pickle(small_int(4), small_int(0), (long4(1), long4(4)), (long4(2 ** 63 - 1), long4(1)))
    zip_pickle(tmp_path / "m.bin", pkl, {"archive/data/0": np.arange(4, dtype=np.float32).tobytes()})
    np.testing.assert_array_equal(load_state_dict(tmp_path / "m.bin")["w"], [[0, 1, 2, 3]])


def test_text_integer_opcodes_are_bounded(tmp_path):
    # INT and LONG written as decimal text: in range of int64 or refused; 5000 digits is malformed.
    for pkl, match in [(b"\x80\x02I" + b"9" * 30 + b"\n.", "bit integer"),
                       (b"\x80\x02L" + b"9" * 5000 + b"L\n.", "malformed pickle")]:
        zip_pickle(tmp_path / "m.bin", pkl)
        with pytest.raises(CheckpointError, match=match):
            load_state_dict(tmp_path / "m.bin")


# =============================================================================== 9: memory mapping
def _three_files(tmp_path: Path) -> dict[str, Path]:
    a = {"w": np.arange(4096, dtype=np.float32)}
    save_file(a, tmp_path / "m.safetensors")
    save_torch_zip(a, tmp_path / "m.bin")
    mx_save(tmp_path / "m.params", a)
    return {"safetensors": tmp_path / "m.safetensors", "torch": tmp_path / "m.bin", "mxnet": tmp_path / "m.params"}


@pytest.mark.parametrize("kind", ["safetensors", "torch", "mxnet"])
def test_mmap_false_gives_arrays_that_survive_the_file_changing(tmp_path, kind):
    path = _three_files(tmp_path)[kind]
    mapped = load_state_dict(path)["w"]
    owned = load_state_dict(path, mmap=False)["w"]
    assert backed_by_mmap(mapped) and not backed_by_mmap(owned)
    raw = bytearray(path.read_bytes())
    i = raw.find(np.arange(4096, dtype=np.float32).tobytes())
    raw[i:i + 4096 * 4] = np.full(4096, 7, np.float32).tobytes()
    with open(path, "r+b") as f:                    # rewrite in place, as `cp new old` does
        f.write(bytes(raw))
    np.testing.assert_array_equal(owned, np.arange(4096, dtype=np.float32))
    assert mapped[100] == 7                         # the documented hazard of a mapped load
    owned[0] = -1                                   # owned arrays are writable
    assert path.read_bytes() == bytes(raw)


def test_truncating_a_mapped_file_kills_a_reader_but_not_a_copying_one(tmp_path):
    """Why `mmap=False` exists: reading a mapped array after the file shrank raises SIGBUS."""
    save_file({"w": np.ones(2 ** 20, np.float32)}, tmp_path / "m.safetensors")
    code = textwrap.dedent(f"""
        import sys, numpy as np
        sys.path.insert(0, {str(ROOT)!r})
        from minibort.formats import load_state_dict
        w = load_state_dict(sys.argv[1], mmap=sys.argv[2] == "1")["w"]
        open(sys.argv[1], "r+b").truncate(64)
        print(float(w.sum()))
    """)
    fates = {}
    for mmap in ("1", "0"):
        save_file({"w": np.ones(2 ** 20, np.float32)}, tmp_path / "m.safetensors")
        r = subprocess.run([sys.executable, "-c", code, str(tmp_path / "m.safetensors"), mmap],
                           capture_output=True, text=True, timeout=CHILD_SECONDS, check=False)
        fates[mmap] = r.returncode, r.stdout.strip()
    print(fates)
    assert fates["1"][0] == -signal.SIGBUS
    assert fates["0"] == (0, str(float(2 ** 20)))


# =============================================================================== 14: no bare errors
@pytest.mark.parametrize("entry", [
    {"dtype": "F32", "shape": [0, 2 ** 62], "data_offsets": [0, 0]},
    {"dtype": "F32", "shape": [2 ** 63 - 1, 0], "data_offsets": [0, 0]},
    {"dtype": "F32", "shape": [0, 2 ** 64], "data_offsets": [0, 0]},
    {"dtype": "F32", "shape": [0, -1], "data_offsets": [0, 0]},
    {"dtype": ["F32"], "shape": [1], "data_offsets": [0, 4]},
    {"dtype": {"F32": 1}, "shape": [1], "data_offsets": [0, 4]},
    {"dtype": 32, "shape": [1], "data_offsets": [0, 4]},
    {"dtype": None, "shape": [1], "data_offsets": [0, 4]},
    {"dtype": "F32", "shape": [True], "data_offsets": [0, 4]},
    {"dtype": "F32", "shape": [1.0], "data_offsets": [0, 4]},
])
def test_safetensors_odd_entries_raise_checkpoint_error(tmp_path, entry):
    write_raw(tmp_path / "x.safetensors", {"a": entry}, bytes(4 if entry["data_offsets"][1] else 0))
    with pytest.raises(CheckpointError) as e:
        load_file(tmp_path / "x.safetensors")
    assert type(e.value) is CheckpointError and "'a'" in str(e.value)


@pytest.mark.parametrize("shape", [(0, 2 ** 62), (2 ** 63 - 1, 0), (0, -1), (-5,), (0, 2 ** 40, 2 ** 40)])
def test_mxnet_zero_size_with_huge_dims_raise_checkpoint_error(tmp_path, shape):
    raw = (struct.pack("<QQQ", 0x112, 0, 1) + struct.pack("<IiI", 0xF993FAC9, 0, len(shape))
           + struct.pack(f"<{len(shape)}q", *shape) + struct.pack("<iii", 1, 0, 0) + struct.pack("<Q", 0))
    (tmp_path / "x.params").write_bytes(raw)
    with pytest.raises(CheckpointError, match="array 0 shape"):
        load_state_dict(tmp_path / "x.params")


# =============================================================================== 15: duplicates and gaps
def header_text(*pairs: tuple[str, str]) -> bytes:
    """A JSON object written by hand, so that a key can appear twice (json.dumps cannot do that)."""
    return ("{" + ",".join(f'"{key}":{value}' for key, value in pairs) + "}").encode()


def f32(n: int, begin: int, end: int) -> str:
    """One safetensors entry: n float32 values at data_offsets [begin, end]."""
    return f'{{"dtype":"F32","shape":[{n}],"data_offsets":[{begin},{end}]}}'


def test_safetensors_duplicate_keys_are_refused(tmp_path):
    for header in [header_text(("a", f32(1, 0, 4)), ("a", f32(1, 4, 8))),   # json.loads would keep the 2nd
                   header_text(("a", f32(1, 0, 4)), ("b", f32(1, 4, 8)), ("a", f32(1, 0, 4))),
                   header_text(("__metadata__", '{"k":"1","k":"2"}'), ("a", f32(1, 0, 4)), ("b", f32(1, 4, 8)))]:
        write_raw(tmp_path / "x.safetensors", {}, np.array([1, 2], np.float32).tobytes(), header)
        with pytest.raises(CheckpointError, match="more than once"):
            load_file(tmp_path / "x.safetensors")


@pytest.mark.parametrize("offsets, data_len, match", [
    ([[4, 8]], 8, "leaves a gap"),                                          # gap before the first
    ([[0, 4], [8, 12]], 12, "leaves a gap"),                                # gap between two
    ([[0, 4]], 8, "4 bytes after the last tensor"),                         # trailing bytes
    ([[0, 8], [4, 8]], 8, "overlaps"),
    ([[0, 4], [0, 4]], 4, "overlaps"),                                      # two names, one span
])
def test_safetensors_gaps_and_overlaps_are_refused(tmp_path, offsets, data_len, match):
    header = {f"t{i}": {"dtype": "F32", "shape": [(e - b) // 4], "data_offsets": [b, e]}
              for i, (b, e) in enumerate(offsets)}
    write_raw(tmp_path / "x.safetensors", header, bytes(data_len))
    with pytest.raises(CheckpointError, match=match):
        load_file(tmp_path / "x.safetensors")


def _reference_cases() -> dict[str, tuple[bytes, bytes]]:
    data = np.arange(4, dtype=np.float32).tobytes()                        # 16 bytes
    return {
        "valid": (header_text(("a", f32(1, 0, 4)), ("b", f32(3, 4, 16))), data),
        "valid, leading space": (b" " + header_text(("a", f32(4, 0, 16))), data),
        "valid, empty tensor between": (header_text(("a", f32(1, 0, 4)), ("z", f32(0, 4, 4)),
                                                    ("b", f32(3, 4, 16))), data),
        "valid, no tensors": (b"{}", b""),
        "gap first": (header_text(("a", f32(3, 4, 16))), data),
        "gap between": (header_text(("a", f32(1, 0, 4)), ("b", f32(2, 8, 16))), data),
        "trailing bytes": (header_text(("a", f32(3, 0, 12))), data),
        "trailing bytes, no tensors": (b"{}", data),
        "overlap": (header_text(("a", f32(2, 0, 8)), ("b", f32(3, 4, 16))), data),
        "duplicate, different spans": (header_text(("a", f32(1, 0, 4)), ("a", f32(3, 4, 16))), data),
        "duplicate, different shapes": (header_text(("a", f32(4, 0, 16)), ("a", f32(1, 0, 4))), data),
        "size mismatch": (header_text(("a", f32(3, 0, 16))), data),
        "dtype not a string": (b'{"a":{"dtype":1,"shape":[4],"data_offsets":[0,16]}}', data),
    }


@pytest.mark.reference
@pytest.mark.parametrize("case", list(_reference_cases()))
def test_safetensors_verdicts_match_the_reference_package(tmp_path, case):
    """Each file is accepted by both readers (with equal tensors) or refused by both."""
    st = pytest.importorskip("safetensors.numpy", reason="safetensors (reference extra) is absent")
    header, data = _reference_cases()[case]
    write_raw(tmp_path / "x.safetensors", {}, data, header)
    try:
        theirs = st.load_file(str(tmp_path / "x.safetensors"))
    except Exception as e:  # noqa: BLE001 -- any refusal of theirs
        theirs = f"refused ({type(e).__name__}: {e})"
    try:
        ours = load_file(tmp_path / "x.safetensors")
    except CheckpointError as e:
        ours = f"refused ({e})"
    print(case, "| theirs:", theirs, "| ours:", ours)
    assert isinstance(ours, str) == isinstance(theirs, str)
    if not isinstance(ours, str):
        assert ours.keys() == theirs.keys()
        for k in ours:
            np.testing.assert_array_equal(ours[k], theirs[k])


@pytest.mark.reference
def test_identical_duplicate_keys_we_refuse_and_the_reference_accepts(tmp_path):
    """The one place we are stricter than the `safetensors` package: a key repeated with the same entry."""
    st = pytest.importorskip("safetensors.numpy", reason="safetensors (reference extra) is absent")
    write_raw(tmp_path / "x.safetensors", {}, bytes(4), header_text(("a", f32(1, 0, 4)), ("a", f32(1, 0, 4))))
    assert list(st.load_file(str(tmp_path / "x.safetensors"))) == ["a"]
    with pytest.raises(CheckpointError, match="more than once"):
        load_file(tmp_path / "x.safetensors")


# =============================================================================== 16: whole signatures
@pytest.mark.parametrize("header_len", [0x112, 0x280, 0x112 + 2 ** 32])
def test_safetensors_header_length_that_spells_another_magic(tmp_path, header_len):
    # A 274-byte header's length field is MXNet's magic 0x112; 640 starts like a protocol-2 pickle.
    blob = json.dumps({"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}).encode()
    if header_len > 2 ** 20:
        # Not a real file: the length does not fit, so it is neither safetensors nor MXNet.
        (tmp_path / "m.safetensors").write_bytes(header_len.to_bytes(8, "little") + blob + bytes(4))
        with pytest.raises(CheckpointError, match="not a checkpoint"):
            file_kind(tmp_path / "m.safetensors")
        return
    blob += b" " * (header_len - len(blob))
    (tmp_path / "m.safetensors").write_bytes(header_len.to_bytes(8, "little") + blob + bytes(4))
    assert file_kind(tmp_path / "m.safetensors") == "safetensors"
    assert load_state_dict(tmp_path / "m.safetensors")["a"].shape == (1,)


def test_safetensors_header_with_leading_whitespace_is_still_safetensors(tmp_path):
    blob = b" \n\t" + json.dumps({"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}).encode()
    (tmp_path / "m.safetensors").write_bytes(len(blob).to_bytes(8, "little") + blob + bytes(4))
    assert file_kind(tmp_path / "m.safetensors") == "safetensors"
    assert load_state_dict(tmp_path / "m.safetensors")["a"].shape == (1,)


def test_mxnet_is_recognised_by_its_whole_header(tmp_path):
    mx_save(tmp_path / "a.params", {"x": np.ones(3, np.float32)})
    assert file_kind(tmp_path / "a.params") == "mxnet"
    raw = (tmp_path / "a.params").read_bytes()
    (tmp_path / "empty.params").write_bytes(struct.pack("<QQQQ", 0x112, 0, 0, 0))
    assert file_kind(tmp_path / "empty.params") == "mxnet"
    for bad in (raw[:8] + b"\x01" + raw[9:],                                 # reserved field not 0
                raw[:24] + b"\0\0\0\0" + raw[28:],                          # no NDArray magic
                raw[:20]):                                                  # cut inside the header
        (tmp_path / "b.params").write_bytes(bad)
        with pytest.raises(CheckpointError, match="not a checkpoint"):
            file_kind(tmp_path / "b.params")


# =============================================================================== 17: duplicate zip entries
@pytest.mark.parametrize("member", ["archive/data.pkl", "archive/data/0", "archive/byteorder"])
def test_duplicate_zip_entries_are_refused(tmp_path, member):
    save_torch_zip({"w": np.ones(4, np.float32)}, tmp_path / "m.bin")
    with zipfile.ZipFile(tmp_path / "m.bin") as zf:
        entries = [(i.filename, zf.read(i)) for i in zf.infolist()]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")                                     # zipfile: "Duplicate name"
        with zipfile.ZipFile(tmp_path / "dup.bin", "w") as zf:
            for name, data in entries:
                zf.writestr(name, data)
                if name == member:
                    zf.writestr(name, data if name.endswith("byteorder") else data[::-1])
    with pytest.raises(CheckpointError, match="more than once"):
        load_state_dict(tmp_path / "dup.bin")
