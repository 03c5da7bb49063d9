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


def test_roundtrip_leaves_only_the_file(tmp_path):
    BortConfig.bort(hidden_size=64, intermediate_size=48).to_json(tmp_path / "config.json")
    assert [p.name for p in tmp_path.iterdir()] == ["config.json"]          # no temporary file left


# ------------------------------------------------------------------ config.json from a stranger (issue 14, 18)
@pytest.mark.parametrize("key,value,words", [
    ("pad_token_id", True, "pad_token_id must be an integer or null, got true"),
    ("pad_token_id", 1.0, "pad_token_id must be an integer or null, got 1.0"),
    ("pad_token_id", "1", "pad_token_id"),
    ("num_labels", 4_000_000, "num_labels is 4000000, more than the 100000"),
    ("num_labels", True, "num_labels must be an integer, got true"),
    ("vocab_size", 10 ** 12, "vocab_size is 1000000000000"),
    ("num_hidden_layers", False, "num_hidden_layers must be an integer, got false"),
    ("hidden_size", "1024", "hidden_size must be an integer"),
    ("hidden_dropout_prob", True, "hidden_dropout_prob must be a finite number, got true"),
    ("hidden_dropout_prob", None, "hidden_dropout_prob must be a finite number, got null"),
    ("layer_norm_eps", "1e-5", "layer_norm_eps must be a finite number"),
    ("initializer_range", [0.02], "initializer_range"),
    ("hidden_act", ["gelu"], "hidden_act"),
    ("model_type", None, "model_type"),
    ("architectures", "BertForMaskedLM", "architectures must be a list of strings"),
    ("tokenizer_class", 3, "tokenizer_class must be a string"),
    ("id2label", {"0": "a", "0x1": "b"}, "id2label: key '0x1' is not a class id"),
    ("id2label", {"0": "a", "2": "b"}, r"id2label's ids must be 0 \.\. 1"),
    ("id2label", {"0": 5}, "the name of class 0 must be a string"),
    ("id2label", {"0": "a", "1": "a"}, "same name"),
    ("id2label", [], "id2label must map class ids to names"),
])
def test_config_json_values_are_checked_naming_the_field_and_file(tmp_path, key, value, words):
    d = BortConfig.bort(hidden_size=64, intermediate_size=48).to_dict()
    d[key] = value
    (tmp_path / "config.json").write_text(json.dumps(d))
    with pytest.raises(ConfigError, match=words) as e:
        BortConfig.from_json(tmp_path / "config.json")
    assert str(tmp_path / "config.json") in str(e.value)


def test_non_finite_floats_are_refused(tmp_path):
    for text in ('"layer_norm_eps": Infinity', '"initializer_range": NaN', '"attention_probs_dropout_prob": -Infinity'):
        (tmp_path / "config.json").write_text("{" + text + "}")
        with pytest.raises(ConfigError, match="finite number"):
            BortConfig.from_json(tmp_path / "config.json")


def test_a_model_too_big_in_total_is_refused():
    with pytest.raises(ConfigError, match="parameters, more than"):
        BortConfig(vocab_size=2 ** 22, hidden_size=2 ** 15, num_attention_heads=8)


def test_json_parse_errors_name_the_file_and_line(tmp_path):
    (tmp_path / "config.json").write_text('{\n  "hidden_size": 64,\n  "vocab_size": 99,,\n}\n')
    with pytest.raises(ConfigError, match=r"config\.json, line 3 column 20: not valid JSON"):
        BortConfig.from_json(tmp_path / "config.json")
    for bad, words in [(b"\xff\xfe{}", "cannot read"), (b"[" * 100_000 + b"]" * 100_000, "not a usable JSON"),
                       (b'{"vocab_size": ' + b"9" * 5000 + b"}", "not a usable JSON"),
                       (b"[1, 2]", "must hold a JSON object")]:
        (tmp_path / "config.json").write_bytes(bad)
        with pytest.raises(ConfigError, match=words):
            BortConfig.from_json(tmp_path / "config.json")
    with pytest.raises(ConfigError, match="cannot read"):
        BortConfig.from_json(tmp_path)                                     # a folder, not a file


# ------------------------------------------------------------------ labels (issue 9, item 6)
def test_id2label_sets_num_labels_and_label2id():
    c = BortConfig.bort()
    assert c.num_labels == 2 and c.id2label == {0: "LABEL_0", 1: "LABEL_1"}
    c.id2label = {0: "neg", 1: "neutral", 2: "pos"}
    assert c.num_labels == 3 and c.label2id == {"neg": 0, "neutral": 1, "pos": 2}
    c.id2label = {"0": "no", "1": "yes"}                                    # JSON's string ids work too
    assert c.num_labels == 2 and c.id2label == {0: "no", 1: "yes"}


def test_num_labels_that_contradicts_the_names_rebuilds_them():
    c = BortConfig.bort()
    c.id2label = {0: "neg", 1: "pos"}
    c.num_labels = 2                                                        # agrees: names kept
    assert c.id2label == {0: "neg", 1: "pos"}
    c.num_labels = 3
    assert c.id2label == {0: "LABEL_0", 1: "LABEL_1", 2: "LABEL_2"}
    assert c.label2id == {"LABEL_0": 0, "LABEL_1": 1, "LABEL_2": 2}
    for bad, words in [(True, "num_labels must be an integer"), (0, "positive"), (4_000_000, "more than")]:
        with pytest.raises(ConfigError, match=words):
            c.num_labels = bad
        assert c.num_labels == 3                                            # a refused value is not kept


def test_from_dict_derives_one_from_the_other():
    three = {"0": "a", "1": "b", "2": "c"}
    assert BortConfig.from_dict({"id2label": three}).num_labels == 3
    with pytest.warns(UserWarning, match="num_labels is 2 but id2label names 3 labels"):
        assert BortConfig.from_dict({"id2label": three, "num_labels": 2}).num_labels == 3
    # Default names carry nothing: num_labels decides when given (to_dict() then a new count).
    d = BortConfig.bort().to_dict()
    d["num_labels"] = 3
    c = BortConfig.from_dict(d)
    assert c.num_labels == 3 and c.id2label == {0: "LABEL_0", 1: "LABEL_1", 2: "LABEL_2"}
    # A stale label2id in the file does not survive: it follows id2label.
    c = BortConfig.from_dict({"id2label": three, "label2id": {"LABEL_0": 0}})
    assert c.label2id == {"a": 0, "b": 1, "c": 2} and c.to_dict()["label2id"] == c.label2id


def test_custom_labels_round_trip(tmp_path):
    c = BortConfig.bort(hidden_size=64, intermediate_size=48)
    c.id2label = {0: "neg", 1: "neutral", 2: "pos"}
    c.to_json(tmp_path / "config.json")
    d = BortConfig.from_json(tmp_path / "config.json")
    assert d == c and d.num_labels == 3 and d.id2label == {0: "neg", 1: "neutral", 2: "pos"}
    assert json.loads((tmp_path / "config.json").read_text())["id2label"] == {"0": "neg", "1": "neutral", "2": "pos"}


@pytest.mark.reference
def test_transformers_reads_our_custom_labels(tmp_path):
    transformers = pytest.importorskip("transformers", reason="needs transformers (reference extra)")
    c = BortConfig.bort(hidden_size=64, intermediate_size=48)
    c.id2label = {0: "neg", 1: "neutral", 2: "pos"}
    c.to_json(tmp_path / "config.json")
    t = transformers.BertConfig.from_pretrained(tmp_path)
    assert t.num_labels == 3 and t.id2label == c.id2label and t.label2id == c.label2id
    # And the other way: transformers' own file, with its labels, loads here the same.
    t.save_pretrained(tmp_path / "theirs")
    ours = BortConfig.from_json(tmp_path / "theirs" / "config.json")
    assert ours.num_labels == 3 and ours.id2label == t.id2label and ours.label2id == t.label2id


def test_parameter_count_matches_the_classifier():
    from minibort import BortForSequenceClassification
    c = BortConfig(vocab_size=99, hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=12,
                   max_position_embeddings=32, num_labels=3)
    assert c.parameter_count() == sum(v.size for v in BortForSequenceClassification(c).params.values())
