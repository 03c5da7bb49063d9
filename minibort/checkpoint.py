"""From a weights file to transformers' names: the hub's MLM-head policy, Gluon's names, model folders.

The bytes of each file format are read in `minibort.formats` (safetensors, PyTorch zip, MXNet).
This module decides what the state dict means:

- `load_state_dict(path)`: any weights file under transformers' `BertForMaskedLM` names. The
  original `bort.params` comes back renamed from Gluon's names (`gluon_to_transformers`); a `.bin`
  whose decoder differs from its word embeddings (amazon/bort's random MLM head) warns once.
- `config_from_state_dict`: a `BortConfig` inferred from the weights' shapes (for a bare `bort.params`).
- `resolve`: any name (the embedded "bort-tiny", a folder, a hub id, a folder with the original
  bort.params) -> the local folder holding it. Every `from_pretrained` and command goes through it.
- `clean_state_dict`: the one rule between a file's names and a model's (position_ids, tied decoder).
- `find_weights` / `load_pretrained`: a model folder or hub id -> config + state dict.

The state dicts returned keep transformers' names as in the file (with or without the `bert.`
prefix, including `bert.embeddings.position_ids` and the hub's separately stored decoder); the
model classes adapt names, drop `position_ids` and re-tie `cls.predictions.decoder.*` to the word
embeddings.
"""

from __future__ import annotations

import contextlib
import os
import warnings
from pathlib import Path

import numpy as np

from . import formats
from .config import BortConfig
from .formats import file_kind
from .formats.common import CheckpointError

__all__ = [
    "EMBEDDED_MODELS",
    "GLUON_MLM_LAYER_NORM_EPS",
    "UNTRAINED_MLM_HEAD_KEY",
    "WEIGHT_FILES",
    "CheckpointError",
    "clean_state_dict",
    "config_from_state_dict",
    "decoder_is_untied",
    "embedded_dir",
    "find_weights",
    "gluon_to_transformers",
    "load_pretrained",
    "load_state_dict",
    "resolve",
    "warn_untrained_mlm_head",
]

# --------------------------------------------------------------------------- the hub's MLM head
_warned_mlm_head = False
UNTRAINED_MLM_HEAD_KEY = "minibort_untrained_mlm_head"   # set in config.json by minibort.download


def warn_untrained_mlm_head(source: str) -> None:
    """Warn (once per process) that amazon/bort's MLM head on the hub is random, so fill-mask is meaningless."""
    global _warned_mlm_head
    if _warned_mlm_head:
        return
    _warned_mlm_head = True
    warnings.warn(
        f"{source}: amazon/bort's MLM head was never trained (the hub checkpoint stores a random "
        "decoder and transform; the conversion from MXNet dropped the original head), so its "
        "fill-mask guesses are not meaningful. The encoder weights are real. For Bort's own MLM "
        "head, use the original release: `python -m minibort.download original`.",
        UserWarning, stacklevel=3)


def decoder_is_untied(state: dict[str, np.ndarray]) -> bool:
    """True if the file stores a decoder weight that differs from its word embeddings."""
    dec = state.get("cls.predictions.decoder.weight")
    emb = state.get("bert.embeddings.word_embeddings.weight")
    if dec is None or emb is None:
        return False
    if dec.shape != emb.shape:
        return True
    return not (np.array_equal(dec[:2], emb[:2]) and np.array_equal(dec, emb))



# --------------------------------------------------------------------------- Gluon names
# Gluon (GluonNLP 0.8.3 BERTModel, as alexa/bort builds it) -> transformers BertForMaskedLM names.
_GLUON_TOP = {
    "word_embed.0.weight": "bert.embeddings.word_embeddings.weight",
    "token_type_embed.0.weight": "bert.embeddings.token_type_embeddings.weight",
    "encoder.position_weight": "bert.embeddings.position_embeddings.weight",
    "encoder.layer_norm.gamma": "bert.embeddings.LayerNorm.weight",
    "encoder.layer_norm.beta": "bert.embeddings.LayerNorm.bias",
    "pooler.weight": "bert.pooler.dense.weight",
    "pooler.bias": "bert.pooler.dense.bias",
    "classifier.weight": "cls.seq_relationship.weight",
    "classifier.bias": "cls.seq_relationship.bias",
    # MLM decoder: Dense -> GELU -> LayerNorm (eps 1e-12) -> Dense tied to the word embeddings.
    "decoder.0.weight": "cls.predictions.transform.dense.weight",
    "decoder.0.bias": "cls.predictions.transform.dense.bias",
    "decoder.2.gamma": "cls.predictions.transform.LayerNorm.weight",
    "decoder.2.beta": "cls.predictions.transform.LayerNorm.bias",
    "decoder.3.bias": "cls.predictions.bias",
    "decoder.3.weight": None,                         # equal to word_embed.0.weight: re-tied, not stored
}
_GLUON_CELL = {
    "attention_cell.proj_query": "attention.self.query",
    "attention_cell.proj_key": "attention.self.key",
    "attention_cell.proj_value": "attention.self.value",
    "proj": "attention.output.dense",
    "layer_norm": "attention.output.LayerNorm",
    "ffn.ffn_1": "intermediate.dense",
    "ffn.ffn_2": "output.dense",
    "ffn.layer_norm": "output.LayerNorm",
}
_GLUON_PARAM = {"weight": "weight", "bias": "bias", "gamma": "weight", "beta": "bias"}
GLUON_MLM_LAYER_NORM_EPS = 1e-12


def gluon_to_transformers(params: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Rename Gluon BERT parameters to transformers' BertForMaskedLM names (no transposes needed).

    Adds the token-type embedding Bort lacks as zeros of shape (1, hidden): adding it changes nothing.
    """
    out: dict[str, np.ndarray] = {}
    unknown = []
    for name, arr in params.items():
        key = name.split(":", 1)[1] if name.startswith(("arg:", "aux:")) else name
        if key in _GLUON_TOP:
            if _GLUON_TOP[key] is not None:
                out[_GLUON_TOP[key]] = arr
            continue
        parts = key.split(".")
        if len(parts) >= 4 and parts[:2] == ["encoder", "transformer_cells"] and parts[2].isdigit():
            module, param = ".".join(parts[3:-1]), parts[-1]
            if module in _GLUON_CELL and param in _GLUON_PARAM:
                out[f"bert.encoder.layer.{int(parts[2])}.{_GLUON_CELL[module]}.{_GLUON_PARAM[param]}"] = arr
                continue
        unknown.append(name)
    if unknown:
        raise CheckpointError(
            f"unexpected Gluon parameter names {unknown[:5]}{' ...' if len(unknown) > 5 else ''}; "
            "expected GluonNLP BERTModel structural names as written by save_parameters "
            "(word_embed.0.weight, encoder.transformer_cells.0.proj.weight, ...)")
    word = out.get("bert.embeddings.word_embeddings.weight")
    if word is None or word.ndim != 2:
        raise CheckpointError("Gluon parameters lack word_embed.0.weight (vocab, hidden)")
    out.setdefault("bert.embeddings.token_type_embeddings.weight", np.zeros((1, word.shape[1]), word.dtype))
    return out


def config_from_state_dict(state: dict[str, np.ndarray], num_attention_heads: int = 8, **overrides) -> BortConfig:
    """Infer a BortConfig from weight shapes (the head count is not in the shapes: Bort's 8 by default)."""
    try:
        vocab, hidden = state["bert.embeddings.word_embeddings.weight"].shape
        layers = 1 + max(int(k.split(".")[3]) for k in state if k.startswith("bert.encoder.layer."))
        inter = state["bert.encoder.layer.0.intermediate.dense.weight"].shape[0]
        positions = state["bert.embeddings.position_embeddings.weight"].shape[0]
        types = state["bert.embeddings.token_type_embeddings.weight"].shape[0]
    except (KeyError, ValueError, IndexError) as e:
        raise CheckpointError(f"cannot infer the model's shape from its weights: missing {e}") from None
    return BortConfig(vocab_size=vocab, hidden_size=hidden, num_hidden_layers=layers,
                      num_attention_heads=num_attention_heads, intermediate_size=inter,
                      max_position_embeddings=positions, type_vocab_size=types, **overrides)



# --------------------------------------------------------------------------- loading

def load_state_dict(path: str | os.PathLike, dtype: np.dtype | type | None = np.float32,
                    mmap: bool = True) -> dict[str, np.ndarray]:
    """Load one weights file of any supported kind into `{transformers name: array}`.

    `formats.load_state_dict` reads the bytes (see it for `dtype` and `mmap`); here MXNet files are
    renamed to transformers' BertForMaskedLM names, and a `.bin` whose decoder differs from its word
    embeddings (amazon/bort's random MLM head) triggers a one-time warning.
    """
    path = os.fspath(path)
    kind = file_kind(path)
    state = formats.load_state_dict(path, dtype=dtype, mmap=mmap)
    if kind == "mxnet":
        return gluon_to_transformers(state)
    if kind == "torch-zip" and decoder_is_untied(state):
        warn_untrained_mlm_head(path)
    return state


WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin", "bort.params")
TOKENIZER_FILES = ("vocab.json", "merges.txt")


def clean_state_dict(state: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The one cleanup rule between a file's state dict and a model's parameters: drop the
    `position_ids` buffer some checkpoints carry, drop the stored decoder weight (the decoder is tied
    to the word embeddings; on the hub the stored copy is random), and keep the decoder's bias under
    its transformers name `cls.predictions.bias`."""
    out = {k: v for k, v in state.items()
           if not k.endswith("position_ids") and not k.startswith("cls.predictions.decoder.")}
    if "cls.predictions.bias" not in out and "cls.predictions.decoder.bias" in state:
        out["cls.predictions.bias"] = state["cls.predictions.decoder.bias"]
    return out


def find_weights(directory: str | os.PathLike) -> str:
    """The weights file of a model folder: model.safetensors, else pytorch_model.bin, else bort.params / *.params."""
    directory = os.fspath(directory)
    for name in WEIGHT_FILES:
        if os.path.isfile(os.path.join(directory, name)):
            return os.path.join(directory, name)
    try:
        params = sorted(n for n in os.listdir(directory) if n.endswith(".params"))
    except OSError as e:
        raise CheckpointError(f"cannot list {directory}: {e}") from None
    if params:
        return os.path.join(directory, params[0])
    raise CheckpointError(f"no weights in {directory}: expected one of {', '.join(WEIGHT_FILES)} "
                          "(or another *.params file)")


# --------------------------------------------------------------------------- a name -> a folder
EMBEDDED_MODELS = ("bort-tiny",)


def embedded_root() -> Path:
    """Where the embedded models live. Installed, that is the package `minibort.weights` (pyproject
    maps the top-level weights/ folder to it). In a source checkout, where `python -m minibort...`
    imports `minibort/` from the clone itself and no `minibort.weights` exists, it is the weights/
    folder beside `minibort/`."""
    try:
        import minibort.weights
        return Path(minibort.weights.__path__[0])
    except ModuleNotFoundError:
        return Path(__file__).resolve().parent.parent / "weights"


def embedded_dir(name: str = "bort-tiny") -> Path:
    """The folder of an embedded model, e.g. weights/bort-tiny."""
    return embedded_root() / name


def _has(folder: str, names: tuple[str, ...]) -> bool:
    return all(os.path.isfile(os.path.join(folder, n)) for n in names)


def _is_original_release(folder: str) -> bool:
    """A folder holding the original MXNet release's weights (bort.params) and no config.json."""
    return not os.path.isfile(os.path.join(folder, "config.json")) and any(
        n.endswith(".params") for n in os.listdir(folder))


def _is_hub_id(name: str) -> bool:
    """`owner/name`, and nothing that looks like a path (./x, /x, ~/x, a/b/c, a\\b)."""
    from .hub import is_repo_id
    return (name.count("/") == 1 and not name.startswith((".", "/", "~")) and "\\" not in name
            and is_repo_id(name))


def resolve(name_or_path: str | os.PathLike, revision: str = "main", need: str = "model") -> str:
    """The local folder that holds a model (`need="model"`: config.json and weights) or its tokenizer
    (`need="tokenizer"`: vocab.json and merges.txt), for every name minibort accepts:

    - an embedded model, "bort-tiny" (shipped in weights/);
    - a folder: config.json + model.safetensors / pytorch_model.bin, or the original release's
      bort.params alone (its config is inferred from the weights, its vocabulary is amazon/bort's);
    - a hub id "owner/name": the files are downloaded once into the cache (see `minibort.hub`), and the
      cache's folder for that repository and revision is returned; offline, whatever the cache holds.

    Every `from_pretrained` and every command goes through here, so a name means the same everywhere.
    Raises CheckpointError, or HubError when the network is needed and fails, naming what is missing
    and how to get it.
    """
    if need not in ("model", "tokenizer"):
        raise ValueError(f"need must be 'model' or 'tokenizer', not {need!r}")
    name = os.fspath(name_or_path)
    if name in EMBEDDED_MODELS and not os.path.isdir(name):
        folder = embedded_dir(name)
        if not folder.is_dir():
            raise CheckpointError(f"the embedded model {name!r} is missing from {folder}; reinstall "
                                  "minibort (`pip install .` in a clone of it)")
        return str(folder)
    if os.path.isdir(name):
        if need == "tokenizer" and not _has(name, TOKENIZER_FILES):
            if _is_original_release(name):
                warnings.warn(f"{name} holds the original bort.params without vocab.json + merges.txt; "
                              "using amazon/bort's vocabulary (RoBERTa's), as the original release does",
                              UserWarning, stacklevel=2)
                return resolve("amazon/bort", "main", need="tokenizer")
            raise CheckpointError(
                f"{name} has no tokenizer (vocab.json + merges.txt). Save one there with "
                f"`tok.save_pretrained({name!r})`, or save model and tokenizer together with "
                "`model.save_pretrained(folder, tokenizer=tok)`; Bort's own vocabulary is "
                "Tokenizer.from_pretrained('amazon/bort'), the embedded model's 'bort-tiny'")
        return name
    if os.path.exists(name):
        raise CheckpointError(f"{name} is a file; pass the folder that holds it (config.json beside the "
                              "weights)")
    if name.startswith((".", "/", "~")) or name.count("/") > 1 or "\\" in name or name.endswith("/"):
        raise CheckpointError(f"no such folder {name!r} (from {os.getcwd()})")
    if not _is_hub_id(name):
        raise CheckpointError(
            f"unknown model {name!r}: not an embedded model ({', '.join(EMBEDDED_MODELS)}), not an "
            "existing folder, and not a hub id of the form owner/name (e.g. amazon/bort)")
    from . import hub
    if need == "tokenizer":
        paths = [hub.hf_hub_download(name, f, revision=revision) for f in TOKENIZER_FILES]
        with contextlib.suppress(hub.HubError):           # optional: its model_max_length
            hub.hf_hub_download(name, "tokenizer_config.json", revision=revision)
        return os.path.dirname(paths[0])
    hub.hf_hub_download(name, "config.json", revision=revision)
    return os.path.dirname(hub.hub_weights_file(name, revision))


def load_pretrained(name_or_path: str | os.PathLike, revision: str = "main",
                    dtype: np.dtype | type = np.float32, mmap: bool = True
                    ) -> tuple[BortConfig, dict[str, np.ndarray]]:
    """Config and state dict for any name `resolve` takes, or a weights file with config.json beside it.

    A folder holding only `bort.params` gets a config inferred from the weights (8 heads) with the
    original MLM head's LayerNorm eps 1e-12. `mmap=True` returns copy-on-write views of the memory-
    mapped file (instant; training writes never reach the file), so the file must not be truncated or
    rewritten while they live (that kills the process with SIGBUS); `mmap=False` reads a copy.
    """
    source = os.fspath(name_or_path)
    if os.path.isfile(source):                        # a weights file, config.json beside it
        folder, weights = os.path.dirname(source) or ".", source
    else:
        folder = resolve(source, revision, need="model")
        weights = find_weights(folder)
    config_path = os.path.join(folder, "config.json")
    state = load_state_dict(weights, dtype=dtype, mmap=mmap)
    is_gluon = file_kind(weights) == "mxnet"
    if os.path.isfile(config_path):
        config = BortConfig.from_json(config_path)
        if is_gluon and config.mlm_layer_norm_eps is None:
            config.mlm_layer_norm_eps = GLUON_MLM_LAYER_NORM_EPS
    elif is_gluon:
        config = config_from_state_dict(state, mlm_layer_norm_eps=GLUON_MLM_LAYER_NORM_EPS)
    else:
        raise CheckpointError(f"no config.json beside {weights}")
    if source.rstrip("/") == "amazon/bort" or config.extra.get(UNTRAINED_MLM_HEAD_KEY):
        warn_untrained_mlm_head(source)
    return config, state
