"""minibort.formats.torch_zip: torch.save's zip format read and written without torch, and hostile pickles.

Also the format dispatch (`minibort.formats.file_kind`) where a pickle and another format look alike.
"""

from __future__ import annotations

import json
import pickle
import struct
import subprocess
import zipfile
from pathlib import Path

import numpy as np
import pytest
from test_checkpoint import tiny_state

import minibort.formats.torch_zip as tz
from minibort.formats import file_kind, load_state_dict
from minibort.formats.common import CheckpointError
from minibort.formats.torch_zip import load_torch_zip, save_torch_zip


# =============================================================================== torch zips, no torch
def test_own_torch_zip_writer_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    t = {"a": rng.standard_normal((3, 5)).astype(np.float32), "h": rng.standard_normal(4).astype(np.float16),
         "i": np.arange(7), "s": np.array(1.5), "e": np.zeros((0, 3), np.float32), "big": np.array([2 ** 40])}
    save_torch_zip(t, tmp_path / "m.bin", top="anything_at_all")
    back = load_torch_zip(tmp_path / "m.bin", dtype=None)
    for k, v in t.items():
        assert back[k].dtype == v.dtype and back[k].shape == v.shape, k
        np.testing.assert_array_equal(back[k], v)
    assert load_torch_zip(tmp_path / "m.bin")["h"].dtype == np.float32   # floats converted, ints kept
    assert load_torch_zip(tmp_path / "m.bin")["i"].dtype == np.int64


def test_float32_bin_is_memory_mapped(tmp_path):
    from test_safetensors import backed_by_mmap
    save_torch_zip({"w": np.arange(100, dtype=np.float32)}, tmp_path / "m.bin")
    w = load_torch_zip(tmp_path / "m.bin")["w"]
    assert backed_by_mmap(w)


# =============================================================================== hostile pickles
def zip_pickle(path: Path, pkl: bytes, top: str = "archive") -> None:
    """Wrap a pickle the way torch.save does: <top>/data.pkl in a zip."""
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr(f"{top}/data.pkl", pkl)
        zf.writestr(f"{top}/byteorder", "little")


class Reduce:
    """Pickles as a call `func(*args)`: how a malicious pickle runs code."""

    def __init__(self, func, args) -> None:
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args


def _hostile_pickles(marker: Path) -> dict[str, bytes]:
    import builtins
    import os
    cmd = f"touch {marker}"
    return {
        "os.system (protocol 2, GLOBAL)": pickle.dumps({"w": Reduce(os.system, (cmd,))}, protocol=2),
        "os.system (protocol 4, STACK_GLOBAL)": pickle.dumps({"w": Reduce(os.system, (cmd,))}, protocol=4),
        "builtins.eval": pickle.dumps(Reduce(builtins.eval, (f"open({str(marker)!r}, 'w')",)), protocol=2),
        "builtins.exec": pickle.dumps(Reduce(builtins.exec, (f"open({str(marker)!r}, 'w')",)), protocol=2),
        "subprocess.Popen": pickle.dumps(Reduce(subprocess.Popen, (["touch", str(marker)],)), protocol=2),
        "posix.system by hand": b"\x80\x02cposix\nsystem\nX" + struct.pack("<I", len(cmd)) + cmd.encode()
                                + b"\x85R.",
        "INST opcode (protocol 0)": f"(S'{cmd}'\nios\nsystem\n.".encode(),
        "after a valid entry": (b"\x80\x02}(X\x01\x00\x00\x00a" + b"ccollections\nOrderedDict\n)R"
                                + b"X\x01\x00\x00\x00bcos\nsystem\nX" + struct.pack("<I", len(cmd))
                                + cmd.encode() + b"\x85Ru."),
        "torch.load itself": b"\x80\x02ctorch\nload\nX\x01\x00\x00\x00x\x85R.",
        "getattr chain": b"\x80\x02cbuiltins\ngetattr\n.",
    }


@pytest.mark.parametrize("case", list(_hostile_pickles(Path("/x"))))
def test_hostile_pickle_is_refused_and_nothing_runs(tmp_path, case):
    marker = tmp_path / "pwned"
    zip_pickle(tmp_path / "evil.bin", _hostile_pickles(marker)[case])
    with pytest.raises(CheckpointError) as e:
        load_state_dict(tmp_path / "evil.bin")
    print(case, "->", e.value)
    assert not marker.exists(), "the pickle ran code"
    assert "refusing" in str(e.value) or "not allowed" in str(e.value)


def test_refusal_names_the_global(tmp_path):
    import os
    zip_pickle(tmp_path / "evil.bin", pickle.dumps(Reduce(os.system, ("true",)), protocol=4))
    with pytest.raises(CheckpointError, match=r"refusing to load global (os|posix)\.system"):
        load_state_dict(tmp_path / "evil.bin")


def test_rebuild_with_fake_storage_is_refused(tmp_path):
    # _rebuild_tensor_v2 is allowed, but only on storages that come from the archive.
    pkl = (b"\x80\x02}X\x01\x00\x00\x00actorch._utils\n_rebuild_tensor_v2\n(X\x01\x00\x00\x00sK\x00K\x01\x85K\x01"
           b"\x85\x89ccollections\nOrderedDict\n)RtRs.")
    zip_pickle(tmp_path / "m.bin", pkl)
    with pytest.raises(CheckpointError, match="persistent storage"):
        load_state_dict(tmp_path / "m.bin")


def test_build_cannot_modify_allowed_functions(tmp_path):
    # GLOBAL _rebuild_tensor_v2, then BUILD with slot state {"__defaults__": (1,)}: would patch our module.
    pkl = b"\x80\x02ctorch._utils\n_rebuild_tensor_v2\nN}X\x0c\x00\x00\x00__defaults__K\x01\x85s\x86b."
    zip_pickle(tmp_path / "m.bin", pkl)
    before = tz._rebuild_tensor_v2.__defaults__
    with pytest.raises(CheckpointError, match="set attributes"):
        load_state_dict(tmp_path / "m.bin")
    assert tz._rebuild_tensor_v2.__defaults__ == before


def test_huge_memo_index_is_refused(tmp_path):
    zip_pickle(tmp_path / "m.bin", b"\x80\x02}r\xff\xff\xff\xff.")          # LONG_BINPUT 4294967295
    with pytest.raises(CheckpointError, match="memo index"):
        load_state_dict(tmp_path / "m.bin")


@pytest.mark.parametrize("header_len", [128, 640, 1408])
def test_safetensors_whose_length_looks_like_a_pickle(tmp_path, header_len):
    # A header length of 0x280 is stored as bytes 80 02 ..., the start of a protocol-2 pickle.
    blob = json.dumps({"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}).encode()
    blob += b" " * (header_len - len(blob))
    (tmp_path / "m.safetensors").write_bytes(header_len.to_bytes(8, "little") + blob + bytes(4))
    assert file_kind(tmp_path / "m.safetensors") == "safetensors"
    assert load_state_dict(tmp_path / "m.safetensors")["a"].shape == (1,)


def test_legacy_pickle_is_refused_with_the_fix(tmp_path):
    # torch.save(..., _use_new_zipfile_serialization=False) starts with a pickled magic number.
    (tmp_path / "old.bin").write_bytes(b"\x80\x02\x8a\nl\xfc\x9cF\xf9 j\xa8P\x19.\x80\x02M\xe9\x03.")
    with pytest.raises(CheckpointError, match="legacy.*torch.save"):
        load_state_dict(tmp_path / "old.bin")


@pytest.mark.reference
def test_torch_loads_our_torch_zip_and_we_load_torch_views(tmp_path):
    torch = pytest.importorskip("torch", reason="torch (reference extra) is absent")
    _, state = tiny_state()
    save_torch_zip(state, tmp_path / "ours.bin")
    theirs = torch.load(tmp_path / "ours.bin", weights_only=True)
    assert set(theirs) == set(state)
    for k in state:
        np.testing.assert_array_equal(theirs[k].numpy(), state[k])
    # Views with offsets and strides into one storage, bfloat16, parameters, int buffers.
    base = torch.randn(6, 8)
    sd = {"base": base, "row": base[2], "cols": base[1:, ::3], "t": base.t(), "bf": torch.randn(5).bfloat16(),
          "param": torch.nn.Parameter(torch.randn(3)), "ids": torch.arange(4)}
    torch.save(sd, tmp_path / "views.bin")
    got = load_torch_zip(tmp_path / "views.bin", dtype=None)
    for k, v in sd.items():
        np.testing.assert_array_equal(got[k], v.detach().float().numpy() if k == "bf" else v.detach().numpy(), k)
    assert np.shares_memory(got["base"], got["row"])


@pytest.mark.reference
def test_legacy_torch_file_is_refused(tmp_path):
    torch = pytest.importorskip("torch", reason="torch (reference extra) is absent")
    torch.save({"a": torch.ones(2)}, tmp_path / "old.bin", _use_new_zipfile_serialization=False)
    with pytest.raises(CheckpointError, match="legacy"):
        load_state_dict(tmp_path / "old.bin")
