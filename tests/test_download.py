"""python -m minibort.download against a local HTTP server: a hub-like float16 .bin converted to a
float32 model.safetensors without the random decoder, and the original-style bort.params (the
GluonNLP fixture) converted with its MLM head, both matching what they were made from."""

from __future__ import annotations

import json
import os
import shutil
import socket
import threading
import warnings
from pathlib import Path

import numpy as np
import pytest
from test_checkpoint import tiny_state
from test_hub import Server

import minibort.checkpoint as ckpt
from minibort import BortForMaskedLM
from minibort.download import main
from minibort.formats.safetensors import load_file
from minibort.formats.torch_zip import save_torch_zip

GLUON = Path(__file__).resolve().parent / "fixtures" / "gluon"


@pytest.fixture
def hub(tmp_path, monkeypatch):
    """A hub-like repository test/tiny: float16 .bin with position_ids and a random decoder."""
    cfg, state = tiny_state()
    repo = tmp_path / "served" / "test" / "tiny" / "resolve" / "main"
    repo.mkdir(parents=True)
    cfg.to_json(repo / "config.json")
    (repo / "vocab.json").write_text('{"<s>": 0}')
    (repo / "merges.txt").write_text("#version: 0.2\n")
    sd16 = {k: v.astype(np.float16) for k, v in state.items()}
    sd16["bert.embeddings.position_ids"] = np.arange(32)[None]
    sd16["cls.predictions.decoder.weight"] = np.random.default_rng(5).standard_normal((99, 16)).astype(np.float16)
    sd16["cls.predictions.decoder.bias"] = sd16["cls.predictions.bias"]
    save_torch_zip(sd16, repo / "pytorch_model.bin")
    shutil.copy(GLUON / "bort.params", tmp_path / "served" / "bort.params")
    srv = Server([tmp_path / "served"])
    threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    monkeypatch.setenv("HF_ENDPOINT", srv.url)
    monkeypatch.setenv("MINIBORT_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    for name in ("HF_HUB_OFFLINE", "HF_TOKEN", "MINIBORT_HUB_TIMEOUT", "MINIBORT_HUB_DEADLINE", "MINIBORT_HUB_MIN_RATE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(ckpt, "_warned_mlm_head", False)
    yield srv, cfg, {k: v.astype(np.float32) for k, v in sd16.items()}
    srv.shutdown()
    srv.server_close()


def test_hub_bin_converted_to_float32_safetensors(hub, tmp_path):
    _, cfg, sd = hub
    out = tmp_path / "out"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert main(["test/tiny", "--out", str(out)]) == 0
    assert any("never trained" in str(w.message) for w in caught)
    st = load_file(out / "model.safetensors")
    assert not any(k.endswith("position_ids") or k.startswith("cls.predictions.decoder") for k in st)
    assert all(v.dtype == np.float32 for v in st.values())
    for k, v in st.items():
        np.testing.assert_array_equal(v, sd[k], err_msg=k)
    assert json.loads((out / "config.json").read_text())["minibort_untrained_mlm_head"] is True
    assert (out / "vocab.json").is_file() and (out / "merges.txt").is_file()
    ids = np.array([[0, 5, 9, 2]])
    ckpt._warned_mlm_head = False
    with pytest.warns(UserWarning, match="never trained"):
        model = BortForMaskedLM.from_pretrained(out)            # config.json carries the flag
    got = model(ids)
    want = BortForMaskedLM(cfg, {k: v for k, v in sd.items() if "decoder" not in k})(ids)   # re-tied decoder
    np.testing.assert_array_equal(got, want)


def test_default_out_is_the_cache_and_from_pretrained_uses_it(hub, tmp_path):
    srv, _, _ = hub
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert main(["test/tiny", "--dtype", "float16"]) == 0
    cached = tmp_path / "cache" / "test" / "tiny" / "main" / "model.safetensors"
    assert load_file(cached)["bert.embeddings.word_embeddings.weight"].dtype == np.float16
    n = len(srv.requests)
    model = BortForMaskedLM.from_pretrained("test/tiny")       # served from the cache: no new request
    assert len(srv.requests) == n and model.params["cls.predictions.bias"].dtype == np.float32


def test_original_params_converted_with_mlm_head(hub, tmp_path):
    srv, _, _ = hub
    out = tmp_path / "orig"
    assert main(["original", "--url", f"{srv.url}/bort.params", "--tokenizer-repo", "test/tiny",
                 "--out", str(out)]) == 0
    config = json.loads((out / "config.json").read_text())
    assert config["mlm_layer_norm_eps"] == 1e-12
    assert "cls.predictions.transform.dense.weight" in load_file(out / "model.safetensors")
    with np.load(GLUON / "reference.npz") as z:
        ids, valid, pos, want = z["input_ids"], z["valid_length"], z["masked_positions"], z["mlm_logits"]
    (out / "bort.params").unlink()                              # from here on, only model.safetensors
    mask = (np.arange(ids.shape[1])[None] < valid[:, None]).astype(np.int64)
    logits = BortForMaskedLM.from_pretrained(out)(ids, mask, positions=pos)
    err = float(np.abs(logits - want).max())
    print(f"original-style bort.params -> model.safetensors, MLM logits vs GluonNLP: {err:.3g}")
    assert err < 1e-5


def closed_port() -> int:
    with socket.socket() as s:                                     # bound, never listening: refused
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_unreachable_source_exits_nonzero(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{closed_port()}")
    monkeypatch.setenv("MINIBORT_CACHE", str(tmp_path))
    monkeypatch.setenv("MINIBORT_HUB_TIMEOUT", "2")
    assert main(["amazon/bort"]) == 1
    assert "by hand" in capsys.readouterr().err


def test_files_placed_by_hand_convert_offline(hub, tmp_path, monkeypatch):
    srv, _, sd = hub
    hand = tmp_path / "cache" / "test" / "tiny" / "main"                # where the hint says to put them
    hand.mkdir(parents=True)
    for name in ("config.json", "vocab.json", "merges.txt", "pytorch_model.bin"):
        shutil.copy(srv.find(f"/test/tiny/resolve/main/{name}"), hand / name)
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{closed_port()}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert main(["test/tiny"]) == 0
    np.testing.assert_array_equal(load_file(hand / "model.safetensors")["cls.predictions.bias"],
                                  sd["cls.predictions.bias"])


def test_converted_files_follow_the_umask(hub, tmp_path):
    """The files download.py writes itself (config.json is BortConfig.to_json's)."""
    old = os.umask(0o022)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            assert main(["test/tiny", "--out", str(tmp_path / "out")]) == 0
            assert main(["test/tiny"]) == 0                            # into the cache, with a sidecar
    finally:
        os.umask(old)
    cached = tmp_path / "cache" / "test" / "tiny" / "main"
    written = [tmp_path / "out" / name for name in ("vocab.json", "merges.txt", "model.safetensors",
                                                    "model.safetensors.meta.json")]
    for path in (*written, cached / "model.safetensors", cached / "model.safetensors.meta.json"):
        assert path.stat().st_mode & 0o777 == 0o644, path
