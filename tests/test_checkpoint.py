"""Checkpoint readers against transformers, and their safety.

The comparison tests build ONE Bort-size random transformers BertForMaskedLM per session (76 M
parameters; LayerNorm affines and every bias perturbed so that a dropped bias or LayerNorm shows),
write it as model.safetensors, as a float32 pytorch_model.bin, and as a hub-like float16 .bin with
the `position_ids` buffer and a random untied decoder (like amazon/bort's), then check that
minibort, without torch, reproduces transformers' hidden states within 1e-4.
"""

from __future__ import annotations

import shutil
import struct
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
from test_formats_mxnet import mx_save

import minibort.checkpoint as ckpt
from minibort import BortConfig, BortForMaskedLM, BortModel
from minibort.checkpoint import CheckpointError, find_weights, load_pretrained, load_state_dict
from minibort.formats import file_kind
from minibort.formats.safetensors import save_file
from minibort.formats.torch_zip import save_torch_zip

ROOT = Path(__file__).resolve().parents[1]
TOL = 1e-4
TINY = {"vocab_size": 99, "hidden_size": 16, "num_hidden_layers": 2, "num_attention_heads": 2,
        "intermediate_size": 12, "max_position_embeddings": 32}


def report(name: str, err: float, tol: float) -> None:
    print(f"{name}: max abs error {err:.3g} (tolerance {tol:g})")
    assert err < tol, f"{name}: max abs error {err} exceeds {tol}"


def tiny_state(seed: int = 0) -> tuple[BortConfig, dict[str, np.ndarray]]:
    """A small random BortForMaskedLM state dict (perturbed LayerNorms and biases) and its config."""
    cfg = BortConfig(**TINY)
    rng = np.random.default_rng(seed)
    params = BortForMaskedLM(cfg, seed=seed).params
    out = {}
    for k, v in params.items():
        v = v + rng.normal(0, 0.1, v.shape).astype(v.dtype) if ("LayerNorm" in k or k.endswith("bias")) else v
        out[k] = v
    return cfg, out


# =============================================================================== Gluon / MXNet files
def to_gluon(state: dict[str, np.ndarray], layers: int) -> dict[str, np.ndarray]:
    """transformers names -> GluonNLP 0.8.3 BERTModel names, spelled out from bort-facts section 3."""
    g = {"word_embed.0.weight": state["bert.embeddings.word_embeddings.weight"],
         "encoder.position_weight": state["bert.embeddings.position_embeddings.weight"],
         "encoder.layer_norm.gamma": state["bert.embeddings.LayerNorm.weight"],
         "encoder.layer_norm.beta": state["bert.embeddings.LayerNorm.bias"]}
    for i in range(layers):
        t, c = f"bert.encoder.layer.{i}.", f"encoder.transformer_cells.{i}."
        for gl, tf in [("attention_cell.proj_query", "attention.self.query"),
                       ("attention_cell.proj_key", "attention.self.key"),
                       ("attention_cell.proj_value", "attention.self.value"),
                       ("proj", "attention.output.dense"), ("ffn.ffn_1", "intermediate.dense"),
                       ("ffn.ffn_2", "output.dense")]:
            g[c + gl + ".weight"], g[c + gl + ".bias"] = state[t + tf + ".weight"], state[t + tf + ".bias"]
        for gl, tf in [("layer_norm", "attention.output.LayerNorm"), ("ffn.layer_norm", "output.LayerNorm")]:
            g[c + gl + ".gamma"], g[c + gl + ".beta"] = state[t + tf + ".weight"], state[t + tf + ".bias"]
    g["decoder.0.weight"] = state["cls.predictions.transform.dense.weight"]
    g["decoder.0.bias"] = state["cls.predictions.transform.dense.bias"]
    g["decoder.2.gamma"] = state["cls.predictions.transform.LayerNorm.weight"]
    g["decoder.2.beta"] = state["cls.predictions.transform.LayerNorm.bias"]
    g["decoder.3.weight"] = state["bert.embeddings.word_embeddings.weight"]
    g["decoder.3.bias"] = state["cls.predictions.bias"]
    return g


def test_mxnet_params_map_to_transformers_names(tmp_path):
    cfg, state = tiny_state()
    mx_save(tmp_path / "bort.params", to_gluon(state, cfg.num_hidden_layers))
    assert file_kind(tmp_path / "bort.params") == "mxnet"
    got = load_state_dict(tmp_path / "bort.params")
    expected = {k for k in state if k != "bert.embeddings.token_type_embeddings.weight"}
    assert expected <= set(got)
    for k in expected:
        np.testing.assert_array_equal(got[k], state[k], err_msg=k)
    np.testing.assert_array_equal(got["bert.embeddings.token_type_embeddings.weight"], np.zeros((1, 16)))
    assert "cls.predictions.decoder.weight" not in got            # re-tied by the model


def test_folder_with_only_bort_params_gets_bort_like_config(tmp_path):
    cfg, state = tiny_state()
    mx_save(tmp_path / "bort.params", to_gluon(state, cfg.num_hidden_layers))
    config, _ = load_pretrained(tmp_path)
    assert (config.vocab_size, config.hidden_size, config.num_hidden_layers, config.intermediate_size,
            config.max_position_embeddings, config.num_attention_heads) == (99, 16, 2, 12, 32, 8)
    assert config.mlm_layer_norm_eps == 1e-12 and config.layer_norm_eps == 1e-5
    # With a config.json beside it, that config is used, and the Gluon head's eps still set.
    cfg.to_json(tmp_path / "config.json")
    config, _ = load_pretrained(tmp_path)
    assert config.num_attention_heads == 2 and config.mlm_layer_norm_eps == 1e-12
    model = BortForMaskedLM.from_pretrained(tmp_path)
    assert model(np.array([[0, 5, 7, 2]])).shape == (1, 4, 99)


def test_mxnet_unknown_names_and_sparse_are_refused(tmp_path):
    mx_save(tmp_path / "a.params", {"bertmodel0_word_embed_embedding0_weight": np.zeros((3, 2), np.float32)})
    with pytest.raises(CheckpointError, match="unexpected Gluon parameter names"):
        load_state_dict(tmp_path / "a.params")
    raw = bytearray((tmp_path / "a.params").read_bytes())
    raw[28:32] = struct.pack("<i", 1)                             # storage type: row_sparse
    (tmp_path / "b.params").write_bytes(bytes(raw))
    with pytest.raises(CheckpointError, match="sparse"):
        load_state_dict(tmp_path / "b.params")


def test_find_weights_prefers_safetensors_then_bin_then_params(tmp_path):
    with pytest.raises(CheckpointError, match="no weights"):
        find_weights(tmp_path)
    (tmp_path / "other.params").write_bytes(b"")
    assert find_weights(tmp_path).endswith("other.params")
    for name in ("bort.params", "pytorch_model.bin", "model.safetensors"):
        (tmp_path / name).write_bytes(b"")
        assert find_weights(tmp_path).endswith(name)


def test_tiny_model_round_trips_through_every_format(tmp_path):
    cfg, state = tiny_state()
    ids = np.array([[0, 5, 9, 33, 2, 1], [0, 7, 8, 2, 1, 1]])
    mask = (ids != 1).astype(np.int64)
    want = BortForMaskedLM(cfg, state)(ids, mask)
    # Gluon's Bort has no token-type embedding (read as zeros) and its MLM head normalises with eps
    # 1e-12, which load_pretrained sets for .params files.
    gluon_state = {**state, "bert.embeddings.token_type_embeddings.weight": np.zeros((1, 16), np.float32)}
    want_gluon = BortForMaskedLM(BortConfig(**TINY, mlm_layer_norm_eps=1e-12), gluon_state)(ids, mask)
    for fmt in ("st", "bin", "bin16", "params"):
        d = tmp_path / fmt
        d.mkdir()
        cfg.to_json(d / "config.json")
        if fmt == "st":
            save_file(state, d / "model.safetensors")
        elif fmt == "bin":
            save_torch_zip(state, d / "pytorch_model.bin")
        elif fmt == "bin16":
            save_torch_zip({k: v.astype(np.float16) for k, v in state.items()}, d / "pytorch_model.bin")
        else:
            mx_save(d / "bort.params", to_gluon(state, cfg.num_hidden_layers))
        got = BortForMaskedLM.from_pretrained(d)(ids, mask)
        tol = 5e-2 if fmt == "bin16" else 1e-5
        ref = want_gluon if fmt == "params" else want
        report(f"tiny model via {fmt}", float(np.abs(got - ref)[mask == 1].max()), tol)


def test_untied_decoder_warns_once(tmp_path, monkeypatch):
    monkeypatch.setattr(ckpt, "_warned_mlm_head", False)
    _, state = tiny_state()
    state["cls.predictions.decoder.weight"] = np.ones_like(state["bert.embeddings.word_embeddings.weight"])
    save_torch_zip(state, tmp_path / "pytorch_model.bin")
    with pytest.warns(UserWarning, match="MLM head was never trained"):
        load_state_dict(tmp_path / "pytorch_model.bin")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        load_state_dict(tmp_path / "pytorch_model.bin")            # the second time: silent
    # A tied copy does not warn.
    monkeypatch.setattr(ckpt, "_warned_mlm_head", False)
    state["cls.predictions.decoder.weight"] = state["bert.embeddings.word_embeddings.weight"]
    save_torch_zip(state, tmp_path / "tied.bin")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        load_state_dict(tmp_path / "tied.bin")


def test_loading_does_not_import_torch(tmp_path):
    cfg, state = tiny_state()
    save_torch_zip(state, tmp_path / "m.bin")
    save_file(state, tmp_path / "m.safetensors")
    mx_save(tmp_path / "bort.params", to_gluon(state, cfg.num_hidden_layers))
    code = (f"import sys; sys.path.insert(0, {str(ROOT)!r}); import minibort; "
            "from minibort.checkpoint import load_state_dict; "
            f"[load_state_dict(p) for p in ({str(tmp_path / 'm.bin')!r}, {str(tmp_path / 'm.safetensors')!r}, "
            f"{str(tmp_path / 'bort.params')!r})]; "
            "bad = [m for m in sys.modules if m.split('.')[0] in ('torch', 'mxnet', 'transformers')]; "
            "print(bad); assert not bad")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False)
    assert r.returncode == 0, r.stdout + r.stderr


# =============================================================================== against transformers
@pytest.fixture(scope="module")
def bort_files(tmp_path_factory):
    """A Bort-size random BertForMaskedLM written three ways, its inputs and transformers' outputs."""
    torch = pytest.importorskip("torch", reason="torch (reference extra) is absent: needed for the reference")
    transformers = pytest.importorskip("transformers", reason="transformers (reference extra) is absent")
    torch.manual_seed(0)
    cfg = transformers.BertConfig(
        vocab_size=50265, hidden_size=1024, num_hidden_layers=4, num_attention_heads=8, intermediate_size=768,
        max_position_embeddings=512, type_vocab_size=1, layer_norm_eps=1e-5, pad_token_id=1,
        hidden_act="gelu", attn_implementation="eager")
    model = transformers.BertForMaskedLM(cfg).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "LayerNorm" in name or name.endswith("bias"):
                p.add_(torch.randn_like(p) * 0.1)
    root = tmp_path_factory.mktemp("bort")
    model.save_pretrained(root / "st")
    sd = model.state_dict()
    (root / "bin32").mkdir()
    torch.save(sd, root / "bin32" / "pytorch_model.bin")
    shutil.copy(root / "st" / "config.json", root / "bin32" / "config.json")
    # Hub-like: float16, the position_ids buffer, and a random decoder stored apart from the embeddings.
    sd16 = {k: v.half() for k, v in sd.items()}
    sd16["bert.embeddings.position_ids"] = torch.arange(512)[None]
    sd16["cls.predictions.decoder.weight"] = torch.randn(50265, 1024).half()
    (root / "bin16").mkdir()
    torch.save(sd16, root / "bin16" / "pytorch_model.bin")
    shutil.copy(root / "st" / "config.json", root / "bin16" / "config.json")

    g = torch.Generator().manual_seed(1)
    ids = torch.randint(3, 50265, (2, 16), generator=g)
    ids[:, 0], ids[0, -1], ids[1, 10] = 0, 2, 2
    ids[1, 11:] = 1
    mask = (ids != 1).long()
    positions = torch.zeros_like(ids, dtype=torch.bool)
    positions[0, [3, 7]] = positions[1, [1, 5, 9]] = True
    with torch.no_grad():
        hidden = model.bert(input_ids=ids, attention_mask=mask).last_hidden_state.numpy()
        logits = model(input_ids=ids, attention_mask=mask).logits[positions].numpy()
        up = {k: v.float() for k, v in sd16.items() if k != "bert.embeddings.position_ids"}
        up["cls.predictions.decoder.weight"] = up["bert.embeddings.word_embeddings.weight"]
        model.load_state_dict(up, strict=False)
        hidden16 = model.bert(input_ids=ids, attention_mask=mask).last_hidden_state.numpy()
    del model, sd, sd16, up
    return {"root": root, "ids": ids.numpy(), "mask": mask.numpy(), "positions": positions.numpy(),
            "hidden": hidden, "logits": logits, "hidden16": hidden16}


@pytest.mark.reference
@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["st", "bin32", "bin16"])
def test_bort_size_hidden_states_match_transformers(bort_files, fmt, monkeypatch):
    monkeypatch.setattr(ckpt, "_warned_mlm_head", False)
    f = bort_files
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model = BortModel.from_pretrained(f["root"] / fmt)
    warned = any("MLM head was never trained" in str(w.message) for w in caught)
    assert warned == (fmt == "bin16"), [str(w.message) for w in caught]
    h = model(f["ids"], f["mask"])
    want = f["hidden16"] if fmt == "bin16" else f["hidden"]
    report(f"Bort-size {fmt} last_hidden_state vs transformers", float(np.abs(h - want)[f["mask"] == 1].max()), TOL)


@pytest.mark.reference
@pytest.mark.slow
def test_bort_size_mlm_logits_match_transformers(bort_files):
    f = bort_files
    model = BortForMaskedLM.from_pretrained(f["root"] / "st")
    logits = model(f["ids"], f["mask"], positions=f["positions"])
    report("Bort-size MLM logits at masked positions", float(np.abs(logits - f["logits"]).max()), TOL)


@pytest.mark.reference
def test_bin32_shares_the_tied_storage_and_maps_the_file(bort_files):
    from test_safetensors import backed_by_mmap
    sd = load_state_dict(bort_files["root"] / "bin32" / "pytorch_model.bin")
    emb, dec = sd["bert.embeddings.word_embeddings.weight"], sd["cls.predictions.decoder.weight"]
    assert np.shares_memory(emb, dec) and backed_by_mmap(emb)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")                          # the untrained-MLM-head warning
        sd16 = load_state_dict(bort_files["root"] / "bin16" / "pytorch_model.bin", dtype=None)
    assert sd16["bert.embeddings.position_ids"].dtype == np.int64
    assert sd16["bert.embeddings.word_embeddings.weight"].dtype == np.float16


@pytest.mark.reference
def test_minibort_save_pretrained_loads_in_transformers(tmp_path):
    torch = pytest.importorskip("torch", reason="torch (reference extra) is absent")
    transformers = pytest.importorskip("transformers", reason="transformers (reference extra) is absent")
    cfg, state = tiny_state()
    ours = BortForMaskedLM(cfg, state)
    ours.save_pretrained(tmp_path)
    theirs = transformers.BertForMaskedLM.from_pretrained(tmp_path, attn_implementation="eager").eval()
    ids = np.array([[0, 5, 9, 33, 2]])
    with torch.no_grad():
        want = theirs(input_ids=torch.from_numpy(ids)).logits.numpy()
    report("minibort-written safetensors in transformers (logits)", float(np.abs(ours(ids) - want).max()), 1e-5)
