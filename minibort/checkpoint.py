"""From a weights file to transformers' names: the hub's MLM-head policy, Gluon's names, model folders.

The bytes of each file format are read in `minibort.formats` (safetensors, PyTorch zip, MXNet).
This module decides what the state dict means:

- `load_state_dict(path)`: any weights file under transformers' `BertForMaskedLM` names. The
  original `bort.params` comes back renamed from Gluon's names (`gluon_to_transformers`); a `.bin`
  whose decoder differs from its word embeddings (amazon/bort's random MLM head) warns once.
- `config_from_state_dict`: a `BortConfig` inferred from the weights' shapes (for a bare `bort.params`).
- `find_weights` / `load_pretrained`: a model folder or hub id -> config + state dict.

The state dicts returned keep transformers' names as in the file (with or without the `bert.`
prefix, including `bert.embeddings.position_ids` and the hub's separately stored decoder); the
model classes adapt names, drop `position_ids` and re-tie `cls.predictions.decoder.*` to the word
embeddings.
"""

from __future__ import annotations

import os
import warnings

import numpy as np

from . import formats
from .config import BortConfig
from .formats import file_kind
from .formats.common import CheckpointError

__all__ = ["GLUON_MLM_LAYER_NORM_EPS", "UNTRAINED_MLM_HEAD_KEY", "WEIGHT_FILES", "CheckpointError",
           "config_from_state_dict", "decoder_is_untied", "find_weights", "gluon_to_transformers",
           "load_pretrained", "load_state_dict", "warn_untrained_mlm_head"]

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


def load_pretrained(path_or_repo_id: str | os.PathLike, revision: str = "main",
                    dtype: np.dtype | type = np.float32) -> tuple[BortConfig, dict[str, np.ndarray]]:
    """Config and state dict from a local folder (config.json + weights) or a hub repository id.

    A folder holding only `bort.params` gets a config inferred from the weights (8 heads) with the
    original MLM head's LayerNorm eps 1e-12. From the hub, config.json is fetched, then
    model.safetensors, else pytorch_model.bin (see `minibort.hub` for the cache and offline use).
    """
    source = os.fspath(path_or_repo_id)
    if os.path.isdir(source):
        weights = find_weights(source)
        config_path = os.path.join(source, "config.json")
        config_path = config_path if os.path.isfile(config_path) else None
    elif os.path.isfile(source):
        weights = source
        config_path = os.path.join(os.path.dirname(source) or ".", "config.json")
        config_path = config_path if os.path.isfile(config_path) else None
    else:
        from .hub import HubError, hf_hub_download
        config_path = hf_hub_download(source, "config.json", revision=revision)
        try:
            weights = hf_hub_download(source, "model.safetensors", revision=revision)
        except HubError as e:
            if e.status != 404:
                raise
            weights = hf_hub_download(source, "pytorch_model.bin", revision=revision)

    state = load_state_dict(weights, dtype=dtype)
    is_gluon = file_kind(weights) == "mxnet"
    if config_path is not None:
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
