"""BortConfig: the model's hyper-parameters, with transformers' `BertConfig` field names.

`config.json` files from the hub (amazon/bort) load directly; the files minibort writes load in
transformers' `BertConfig` too (transformers keeps unknown keys, such as `mlm_layer_norm_eps`, as
attributes and ignores them).
"""

from __future__ import annotations

import dataclasses
import json
import os
import tempfile
from dataclasses import dataclass, field

# Activations minibort implements. transformers' "gelu" is the exact erf form.
SUPPORTED_ACTIVATIONS = ("gelu",)


class ConfigError(ValueError):
    """A configuration value is missing, of the wrong type or inconsistent."""


@dataclass
class BortConfig:
    """Bort's hyper-parameters. Defaults are amazon/bort's `config.json`.

    Field names are transformers' `BertConfig` ones; `mlm_layer_norm_eps` is minibort's own: the
    original GluonNLP MLM head normalises with eps 1e-12 where the encoder uses 1e-5 (None means
    "the same as `layer_norm_eps`", which is what transformers does).
    """

    vocab_size: int = 50265
    hidden_size: int = 1024
    num_hidden_layers: int = 4
    num_attention_heads: int = 8
    intermediate_size: int = 768
    hidden_act: str = "gelu"
    hidden_dropout_prob: float = 0.1
    attention_probs_dropout_prob: float = 0.1
    max_position_embeddings: int = 512
    type_vocab_size: int = 1
    initializer_range: float = 0.02
    layer_norm_eps: float = 1e-5
    pad_token_id: int = 1
    mlm_layer_norm_eps: float | None = None
    num_labels: int = 2
    model_type: str = "bert"
    architectures: list[str] | None = None
    tokenizer_class: str | None = "RobertaTokenizer"
    # Keys of a config.json that are not fields above are kept here and written back unchanged.
    extra: dict = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        self.validate()

    # ---------------------------------------------------------------- checks
    def validate(self) -> None:
        """Refuse wrong or inconsistent values, naming the field."""
        for name in ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
                     "intermediate_size", "max_position_embeddings", "type_vocab_size", "num_labels"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise ConfigError(f"BortConfig.{name} must be an integer, got {value!r}")
            if value <= 0:
                raise ConfigError(f"BortConfig.{name} must be positive, got {value}")
        if self.hidden_size % self.num_attention_heads:
            raise ConfigError(
                f"BortConfig.hidden_size ({self.hidden_size}) must be divisible by "
                f"num_attention_heads ({self.num_attention_heads})")
        if self.hidden_act not in SUPPORTED_ACTIVATIONS:
            raise ConfigError(f"BortConfig.hidden_act {self.hidden_act!r} is not supported; "
                              f"use one of {SUPPORTED_ACTIVATIONS} (exact-erf GELU)")
        for name in ("hidden_dropout_prob", "attention_probs_dropout_prob"):
            p = getattr(self, name)
            if not isinstance(p, (int, float)) or not 0.0 <= p < 1.0:
                raise ConfigError(f"BortConfig.{name} must be in [0, 1), got {p!r}")
        for name in ("layer_norm_eps", "mlm_layer_norm_eps", "initializer_range"):
            v = getattr(self, name)
            if v is None and name == "mlm_layer_norm_eps":
                continue
            if not isinstance(v, (int, float)) or isinstance(v, bool) or not v > 0:
                raise ConfigError(f"BortConfig.{name} must be a positive number, got {v!r}")
        if self.pad_token_id is not None and not 0 <= self.pad_token_id < self.vocab_size:
            raise ConfigError(f"BortConfig.pad_token_id ({self.pad_token_id}) must be in [0, vocab_size)")

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads

    @property
    def mlm_eps(self) -> float:
        """The LayerNorm eps of the MLM head's transform."""
        return self.layer_norm_eps if self.mlm_layer_norm_eps is None else self.mlm_layer_norm_eps

    # ---------------------------------------------------------------- presets
    @classmethod
    def bort(cls, **overrides) -> BortConfig:
        """amazon/bort: 4 layers, width 1024, 8 heads, FFN 768, RoBERTa's 50265-token vocabulary."""
        return cls(**overrides)

    # ---------------------------------------------------------------- json
    @classmethod
    def from_dict(cls, d: dict) -> BortConfig:
        names = {f.name for f in dataclasses.fields(cls)} - {"extra"}
        known = {k: v for k, v in d.items() if k in names}
        extra = {k: v for k, v in d.items() if k not in names}
        if "model_type" in known and known["model_type"] != "bert":
            raise ConfigError(f"model_type {known['model_type']!r} is not 'bert'; Bort is a BERT model")
        if "id2label" in extra and "num_labels" not in known:
            known["num_labels"] = len(extra["id2label"])
        # Default label names carry nothing; keep only names a user chose.
        n = known.get("num_labels", 2)
        if extra.get("id2label") == _default_id2label(n):
            del extra["id2label"]
        if extra.get("label2id") == _default_label2id(n):
            del extra["label2id"]
        return cls(**known, extra=extra)

    def to_dict(self) -> dict:
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "extra"}
        d = {k: v for k, v in d.items() if v is not None}
        out = dict(self.extra)
        out.update(d)
        # transformers derives num_labels from id2label; write both so it agrees with us.
        out.setdefault("id2label", _default_id2label(self.num_labels))
        out.setdefault("label2id", _default_label2id(self.num_labels))
        return out

    @classmethod
    def from_json(cls, path: str | os.PathLike) -> BortConfig:
        try:
            with open(path, encoding="utf-8") as f:
                d = json.load(f)
        except FileNotFoundError:
            raise ConfigError(f"no config file at {path}") from None
        except json.JSONDecodeError as e:
            raise ConfigError(f"{path} is not valid JSON: {e}") from None
        if not isinstance(d, dict):
            raise ConfigError(f"{path} must hold a JSON object, got {type(d).__name__}")
        return cls.from_dict(d)

    def to_json(self, path: str | os.PathLike) -> None:
        """Write config.json atomically (temporary file in the same folder, then rename)."""
        write_text_atomic(path, json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n")


def _default_id2label(n: int) -> dict:
    return {str(i): f"LABEL_{i}" for i in range(n)}


def _default_label2id(n: int) -> dict:
    return {f"LABEL_{i}": i for i in range(n)}


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    """Write `text` to `path` through a temporary file renamed into place when whole."""
    path = os.fspath(path)
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path) or ".", prefix=".tmp-", suffix=".part")
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
