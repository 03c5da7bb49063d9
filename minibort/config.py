"""BortConfig: the model's hyper-parameters, with transformers' `BertConfig` field names.

`config.json` files from the hub (amazon/bort) load directly; the files minibort writes load in
transformers' `BertConfig` too (transformers keeps unknown keys, such as `mlm_layer_norm_eps`, as
attributes and ignores them).

A config.json can come from a stranger, so every value is checked for its type and range before a
model is built from it, and an error names the field (and the file): `"pad_token_id": true` would
otherwise zero a fresh model's whole embedding table, and `"num_labels": 4000000` ask for gigabytes.

Labels work as in transformers' `PretrainedConfig`: `id2label` and `num_labels` derive each other.
Setting `config.id2label` to three names makes `num_labels` 3; setting `num_labels` to a count that
differs from the names' count replaces them with `LABEL_0 ...`; `label2id` always follows `id2label`.
Names a user chose are kept in `extra["id2label"]` / `extra["label2id"]` exactly as config.json
writes them (string ids); the default `LABEL_i` names are not stored.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import warnings
from dataclasses import dataclass, field

from ._files import write_text_atomic

# Activations minibort implements. transformers' "gelu" is the exact erf form.
SUPPORTED_ACTIVATIONS = ("gelu",)

# Upper bounds for the sizes a config.json may ask for. Each is far above any BERT-family model
# (bert-large: vocab 30522, width 1024, 24 layers, FFN 4096, 512 positions) and far below what
# would exhaust memory on a single allocation of one of them.
MAX_SIZES = {
    "vocab_size": 2 ** 22,                 # 4 M tokens
    "hidden_size": 2 ** 15,
    "num_hidden_layers": 1024,
    "num_attention_heads": 2 ** 15,
    "intermediate_size": 2 ** 17,
    "max_position_embeddings": 2 ** 20,
    "type_vocab_size": 2 ** 10,
    "num_labels": 100_000,                 # the classifier is hidden_size x num_labels floats
}
# The whole model: ~34 GB of float32 weights. amazon/bort has 0.06 G parameters, bert-large 0.34 G.
MAX_PARAMETERS = 2 ** 33


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
        if _custom_labels(self.extra) is not None:
            # Names a user chose win over a num_labels that contradicts them, as in transformers.
            self.id2label = self.extra["id2label"]
        self._ready = True

    def __setattr__(self, name: str, value: object) -> None:
        # transformers' num_labels setter: a new count that the names do not match replaces them.
        if name == "num_labels" and self.__dict__.get("_ready"):
            _check_size("num_labels", value)
            names = _custom_labels(self.extra)
            if names is not None and len(names) != value:
                del self.extra["id2label"]
                self.extra.pop("label2id", None)
        object.__setattr__(self, name, value)

    # ---------------------------------------------------------------- labels
    @property
    def id2label(self) -> dict[int, str]:
        """Class id -> name: the names a user chose, else transformers' defaults `LABEL_0 ...`."""
        names = _custom_labels(self.extra)
        return names if names is not None else {i: f"LABEL_{i}" for i in range(self.num_labels)}

    @id2label.setter
    def id2label(self, value: dict) -> None:
        names = _parse_id2label(value)
        object.__setattr__(self, "num_labels", len(names))        # not the setter above: names stay
        if names == {i: f"LABEL_{i}" for i in range(len(names))}:
            self.extra.pop("id2label", None)
            self.extra.pop("label2id", None)
        else:
            self.extra["id2label"] = {str(i): name for i, name in names.items()}
            self.extra["label2id"] = {name: i for i, name in names.items()}

    @property
    def label2id(self) -> dict[str, int]:
        """Name -> class id: always the inverse of `id2label`."""
        return {name: i for i, name in self.id2label.items()}

    # ---------------------------------------------------------------- checks
    def validate(self) -> None:
        """Refuse values of the wrong type, out of range or inconsistent, naming the field."""
        for name in MAX_SIZES:
            _check_size(name, getattr(self, name))
        if self.hidden_size % self.num_attention_heads:
            raise ConfigError(
                f"BortConfig.hidden_size ({self.hidden_size}) must be divisible by "
                f"num_attention_heads ({self.num_attention_heads})")
        if self.parameter_count() > MAX_PARAMETERS:
            raise ConfigError(f"BortConfig describes a model of {self.parameter_count():,} parameters, more than "
                              f"the {MAX_PARAMETERS:,} minibort accepts; check vocab_size, hidden_size, "
                              "num_hidden_layers and intermediate_size")
        if not isinstance(self.hidden_act, str) or self.hidden_act not in SUPPORTED_ACTIVATIONS:
            raise ConfigError(f"BortConfig.hidden_act {self.hidden_act!r} is not supported; "
                              f"use one of {SUPPORTED_ACTIVATIONS} (exact-erf GELU)")
        for name in ("hidden_dropout_prob", "attention_probs_dropout_prob"):
            p = _check_number(name, getattr(self, name))
            if not 0.0 <= p < 1.0:
                raise ConfigError(f"BortConfig.{name} must be in [0, 1), got {p!r}")
        for name in ("layer_norm_eps", "mlm_layer_norm_eps", "initializer_range"):
            v = getattr(self, name)
            if v is None and name == "mlm_layer_norm_eps":
                continue
            if not _check_number(name, v) > 0:
                raise ConfigError(f"BortConfig.{name} must be a positive number, got {v!r}")
        if self.pad_token_id is not None:
            _check_int("pad_token_id", self.pad_token_id, "or null")
            if not 0 <= self.pad_token_id < self.vocab_size:
                raise ConfigError(f"BortConfig.pad_token_id ({self.pad_token_id}) must be in [0, vocab_size)")
        for name in ("model_type", "tokenizer_class"):
            v = getattr(self, name)
            if not (isinstance(v, str) or v is None and name == "tokenizer_class"):
                raise ConfigError(f"BortConfig.{name} must be a string, got {v!r}"[:200])
        if self.architectures is not None and not (
                isinstance(self.architectures, list) and all(isinstance(a, str) for a in self.architectures)):
            raise ConfigError(f"BortConfig.architectures must be a list of strings, got {self.architectures!r}"[:200])
        if not isinstance(self.extra, dict):
            raise ConfigError(f"BortConfig.extra must be a dict, got {type(self.extra).__name__}")
        if "id2label" in self.extra:
            _parse_id2label(self.extra["id2label"])

    def parameter_count(self) -> int:
        """Weights of a BortForSequenceClassification of this shape (the MLM head adds ~vocab_size)."""
        H, I, L = self.hidden_size, self.intermediate_size, self.num_hidden_layers
        embeddings = (self.vocab_size + self.max_position_embeddings + self.type_vocab_size + 2) * H
        layer = 4 * H * H + 2 * H * I + 9 * H + I          # Q, K, V, O, FFN in and out, biases, 2 LayerNorms
        return embeddings + L * layer + H * H + H + (H + 1) * self.num_labels

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
        """A config from a config.json's dict: known keys become fields, the others go to `extra`.

        `id2label` with names of its own sets `num_labels`, as in transformers (a `num_labels` that
        contradicts it is overridden, with a warning). Default `LABEL_i` names carry nothing: they
        are dropped, and count only when `num_labels` is absent. `label2id` follows `id2label`.
        """
        if not isinstance(d, dict):
            raise ConfigError(f"a config must be a JSON object (a dict), got {type(d).__name__}")
        names = {f.name for f in dataclasses.fields(cls)} - {"extra"}
        known = {k: v for k, v in d.items() if k in names}
        extra = {k: v for k, v in d.items() if k not in names}
        if "model_type" in known and known["model_type"] != "bert":
            raise ConfigError(f"model_type {known['model_type']!r} is not 'bert'; Bort is a BERT model")
        labels = _parse_id2label(extra["id2label"]) if "id2label" in extra else None
        extra.pop("label2id", None)                       # rebuilt from id2label
        if labels is not None and labels == {i: f"LABEL_{i}" for i in range(len(labels))}:
            known.setdefault("num_labels", len(labels))   # default names: num_labels decides if given
            labels = None
            del extra["id2label"]
        if labels is not None:
            if "num_labels" in known and known["num_labels"] != len(labels):
                warnings.warn(f"config: num_labels is {known['num_labels']!r} but id2label names "
                              f"{len(labels)} labels; using {len(labels)}, as transformers does",
                              UserWarning, stacklevel=2)
            known["num_labels"] = len(labels)
            extra["id2label"] = {str(i): name for i, name in labels.items()}
            extra["label2id"] = {name: i for i, name in labels.items()}
        return cls(**known, extra=extra)

    def to_dict(self) -> dict:
        """The config.json dict: fields (None left out), `extra`, and id2label/label2id always written."""
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "extra"}
        d = {k: v for k, v in d.items() if v is not None}
        out = dict(self.extra)
        out.update(d)
        # transformers derives num_labels from id2label; write both so it agrees with us.
        out["id2label"] = {str(i): name for i, name in self.id2label.items()}
        out["label2id"] = self.label2id
        return out

    @classmethod
    def from_json(cls, path: str | os.PathLike) -> BortConfig:
        """Read a config.json; any problem is a ConfigError naming the file (and the line, for bad JSON)."""
        path = os.fspath(path)
        try:
            with open(path, encoding="utf-8") as f:
                text = f.read()
        except FileNotFoundError:
            raise ConfigError(f"no config file at {path}") from None
        except (OSError, UnicodeDecodeError) as e:
            raise ConfigError(f"cannot read {path}: {e}") from None
        try:
            d = json.loads(text)
        except json.JSONDecodeError as e:
            raise ConfigError(f"{path}, line {e.lineno} column {e.colno}: not valid JSON ({e.msg}); "
                              "fix the file or write it again with BortConfig.to_json") from None
        except (ValueError, RecursionError) as e:        # over-long integers, absurd nesting
            raise ConfigError(f"{path}: not a usable JSON config ({type(e).__name__}: {e})"[:300]) from None
        if not isinstance(d, dict):
            raise ConfigError(f"{path} must hold a JSON object, got {type(d).__name__}")
        try:
            return cls.from_dict(d)
        except ConfigError as e:
            raise ConfigError(f"{path}: {e}") from None

    def to_json(self, path: str | os.PathLike) -> None:
        """Write config.json atomically (see `minibort._files`)."""
        write_text_atomic(path, json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n")


def _check_int(name: str, value: object, alternative: str = "") -> int:
    """`value` if it is an int (a JSON true/false is not), else a ConfigError naming the field."""
    if isinstance(value, bool) or not isinstance(value, int):
        what = f"an integer {alternative}".strip()
        raise ConfigError(f"BortConfig.{name} must be {what}, got {json.dumps(value, default=repr)}"[:200])
    return value


def _check_size(name: str, value: object) -> int:
    """A size field: an int in [1, MAX_SIZES[name]], else a ConfigError naming the field."""
    _check_int(name, value)
    if value <= 0:
        raise ConfigError(f"BortConfig.{name} must be positive, got {value}")
    if value > MAX_SIZES[name]:
        raise ConfigError(f"BortConfig.{name} is {value}, more than the {MAX_SIZES[name]} minibort accepts "
                          "(a file asking for that is corrupt or not a BERT config)")
    return value


def _check_number(name: str, value: object) -> float:
    """`value` if it is a finite int or float (not a bool), else a ConfigError naming the field."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ConfigError(f"BortConfig.{name} must be a finite number, got {json.dumps(value, default=repr)}"[:200])
    return value


def _parse_id2label(value: object) -> dict[int, str]:
    """An id2label map (ids as ints or, as in JSON, strings) -> {0: name, 1: name, ...}, checked."""
    if not isinstance(value, dict) or not value:
        raise ConfigError(f"id2label must map class ids to names, got {json.dumps(value, default=repr)}"[:200])
    if len(value) > MAX_SIZES["num_labels"]:
        raise ConfigError(f"id2label names {len(value)} labels, more than the {MAX_SIZES['num_labels']} "
                          "minibort accepts")
    out = {}
    for key, name in value.items():
        if isinstance(key, bool) or not (isinstance(key, int) or isinstance(key, str) and key.isdecimal()
                                         and key.isascii()):
            raise ConfigError(f"id2label: key {key!r} is not a class id (0, 1, ...)"[:200])
        if not isinstance(name, str):
            raise ConfigError(f"id2label: the name of class {key} must be a string, got {name!r}"[:200])
        out[int(key)] = name
    if sorted(out) != list(range(len(out))):
        raise ConfigError(f"id2label's ids must be 0 .. {len(out) - 1}, got {sorted(out)[:10]}")
    if len(set(out.values())) != len(out):
        raise ConfigError("id2label gives two classes the same name; label2id could not tell them apart")
    return dict(sorted(out.items()))


def _custom_labels(extra: dict) -> dict[int, str] | None:
    """The label names stored in `extra` (a user's own), or None."""
    return _parse_id2label(extra["id2label"]) if "id2label" in extra else None
