from __future__ import annotations

import json

import pytest

from minibort import BortConfig, ConfigError


def test_bort_preset_is_amazon_bort():
    c = BortConfig.bort()
    assert (c.hidden_size, c.num_hidden_layers, c.num_attention_heads, c.intermediate_size) == (1024, 4, 8, 768)
    assert (c.vocab_size, c.max_position_embeddings, c.type_vocab_size) == (50265, 512, 1)
    assert c.layer_norm_eps == 1e-5 and c.pad_token_id == 1 and c.head_dim == 128


def test_hub_config_loads(mirror_dir):
    c = BortConfig.from_json(mirror_dir / "config.json")
    assert c == BortConfig.bort(architectures=["BertForMaskedLM"], extra=c.extra)
    assert c.extra["gradient_checkpointing"] is False        # unknown keys are kept


def test_roundtrip(tmp_path):
    c = BortConfig.bort(hidden_size=64, intermediate_size=48, mlm_layer_norm_eps=1e-12)
    c.to_json(tmp_path / "config.json")
    d = BortConfig.from_json(tmp_path / "config.json")
    assert d == c and d.mlm_eps == 1e-12
    assert not list(tmp_path.glob(".tmp-*"))                  # written atomically, nothing left over


def test_transformers_reads_our_config(tmp_path):
    transformers = pytest.importorskip("transformers", reason="needs transformers (reference extra)")
    BortConfig.bort(hidden_size=64, num_labels=3).to_json(tmp_path / "config.json")
    t = transformers.BertConfig.from_pretrained(tmp_path)
    assert t.hidden_size == 64 and t.num_labels == 3 and t.intermediate_size == 768


@pytest.mark.parametrize("field,value,words", [
    ("num_attention_heads", 7, "divisible"),
    ("hidden_act", "relu", "hidden_act"),
    ("hidden_size", -4, "hidden_size"),
    ("vocab_size", 0, "vocab_size"),
    ("intermediate_size", 1.5, "intermediate_size"),
    ("layer_norm_eps", 0.0, "layer_norm_eps"),
    ("hidden_dropout_prob", 1.0, "hidden_dropout_prob"),
    ("pad_token_id", 60000, "pad_token_id"),
])
def test_bad_values_are_refused_naming_the_field(field, value, words):
    with pytest.raises(ConfigError, match=words):
        BortConfig.bort(**{field: value})


def test_bad_files(tmp_path):
    with pytest.raises(ConfigError, match="no config file"):
        BortConfig.from_json(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ConfigError, match="not valid JSON"):
        BortConfig.from_json(tmp_path / "bad.json")
    (tmp_path / "gpt.json").write_text(json.dumps({"model_type": "gpt2"}))
    with pytest.raises(ConfigError, match="model_type"):
        BortConfig.from_json(tmp_path / "gpt.json")
