"""Bort in NumPy: embeddings, N post-LayerNorm encoder blocks, then a head; the backward is the same
list read upwards.

    ids (B, T) -> word + position + token-type embeddings -> LayerNorm -> dropout      (B, T, H)
    4 x [ self-attention -> linear -> dropout -> +residual -> LayerNorm                 (B, T, H)
          linear H->I -> GELU -> linear I->H -> dropout -> +residual -> LayerNorm ]     (B, T, H)
    MLM head:            linear H->H -> GELU -> LayerNorm -> @ word_embeddings.T + bias (M, V)
    classification head: tanh(linear(h[:, 0])) -> dropout -> linear H->C               (B, C)

Parameters live in a dict keyed by transformers' state-dict names, so a checkpoint loads by lookup
and a gradient dict compares directly with PyTorch's `named_parameters()`. See `layers.py` for the
shape letters (B, T, H, I, V, N, D, M).
"""

from __future__ import annotations

import os
import warnings

import numpy as np

from . import layers as L
from ._memory import keep_freed_memory
from .config import BortConfig
from .inputs import (  # noqa: F401
    InputError,
    check_inputs,
    check_memory,
    estimate_memory,
    first_token,
    labelled_rows,
    memory_limit,
)

# ------------------------------------------------------------------------------------ parameter names


def encoder_param_shapes(config: BortConfig, prefix: str = "") -> dict[str, tuple[int, ...]]:
    """Names and shapes of the embeddings and encoder, as transformers' BertModel names them."""
    H, I, V = config.hidden_size, config.intermediate_size, config.vocab_size
    p = prefix
    shapes = {
        f"{p}embeddings.word_embeddings.weight": (V, H),
        f"{p}embeddings.position_embeddings.weight": (config.max_position_embeddings, H),
        f"{p}embeddings.token_type_embeddings.weight": (config.type_vocab_size, H),
        f"{p}embeddings.LayerNorm.weight": (H,),
        f"{p}embeddings.LayerNorm.bias": (H,),
    }
    for i in range(config.num_hidden_layers):
        q = f"{p}encoder.layer.{i}."
        for name in ("query", "key", "value"):
            shapes[f"{q}attention.self.{name}.weight"] = (H, H)
            shapes[f"{q}attention.self.{name}.bias"] = (H,)
        shapes.update({
            f"{q}attention.output.dense.weight": (H, H),
            f"{q}attention.output.dense.bias": (H,),
            f"{q}attention.output.LayerNorm.weight": (H,),
            f"{q}attention.output.LayerNorm.bias": (H,),
            f"{q}intermediate.dense.weight": (I, H),
            f"{q}intermediate.dense.bias": (I,),
            f"{q}output.dense.weight": (H, I),
            f"{q}output.dense.bias": (H,),
            f"{q}output.LayerNorm.weight": (H,),
            f"{q}output.LayerNorm.bias": (H,),
        })
    return shapes


def mlm_head_param_shapes(config: BortConfig) -> dict[str, tuple[int, ...]]:
    """The MLM head. Its decoder weight is the word-embedding table (tied), so it has no entry."""
    H, V = config.hidden_size, config.vocab_size
    return {
        "cls.predictions.transform.dense.weight": (H, H),
        "cls.predictions.transform.dense.bias": (H,),
        "cls.predictions.transform.LayerNorm.weight": (H,),
        "cls.predictions.transform.LayerNorm.bias": (H,),
        "cls.predictions.bias": (V,),
    }


def classifier_param_shapes(config: BortConfig) -> dict[str, tuple[int, ...]]:
    """The sequence-classification head, either kind ("pooler" or "bort"): the dense + tanh layer
    keeps transformers' pooler names and the output layer its `classifier` names, so a saved model
    loads in transformers' BertForSequenceClassification (C = num_labels; 1 for regression)."""
    H, C = config.hidden_size, config.num_labels
    return {
        "bert.pooler.dense.weight": (H, H),
        "bert.pooler.dense.bias": (H,),
        "classifier.weight": (C, H),
        "classifier.bias": (C,),
    }


def init_params(shapes: dict, config: BortConfig, dtype, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """transformers' initialisation: weights N(0, initializer_range), biases 0, LayerNorm (1, 0),
    the padding row of the word embeddings 0."""
    params = {}
    for name, shape in shapes.items():
        if "LayerNorm.weight" in name:
            params[name] = np.ones(shape, dtype=dtype)
        elif name.endswith("bias"):
            params[name] = np.zeros(shape, dtype=dtype)
        else:
            params[name] = (rng.standard_normal(shape) * config.initializer_range).astype(dtype)
        if name.endswith("word_embeddings.weight") and config.pad_token_id is not None:
            params[name][config.pad_token_id] = 0
    return params


# ------------------------------------------------------------------------------------ the encoder


def encoder_layer(P: dict, pre: str, cfg: BortConfig, x: np.ndarray, mask_bias: np.ndarray, rng,
                  keep_probs: bool = True, rows: np.ndarray | None = None):
    """One post-LN block: (B, T, H) -> (B, T, H), with the cache its backward reads. With rows,
    (B, Q) positions, only their outputs, (B, Q, H): from the queries on, Q rows instead of T."""
    ctx, probs, c_att = L.self_attention(
        x, P[pre + "attention.self.query.weight"], P[pre + "attention.self.query.bias"],
        P[pre + "attention.self.key.weight"], P[pre + "attention.self.key.bias"],
        P[pre + "attention.self.value.weight"], P[pre + "attention.self.value.bias"],
        mask_bias, cfg.num_attention_heads, cfg.attention_probs_dropout_prob, rng,
        keep_probs=keep_probs, rows=rows)    # (B, T, H); without keep_probs no (B, N, T, T) array is kept
    a, c_ao = L.linear(ctx, P[pre + "attention.output.dense.weight"],
                       P[pre + "attention.output.dense.bias"])                     # (B, T, H)
    a, c_ad = L.dropout(a, cfg.hidden_dropout_prob, rng)                           # (B, T, H)
    a += x if rows is None else L.gather_rows(x, rows)[0]  # (B, T, H) the residual, in place: a is our own
    h1, c_ln1 = L.layer_norm(a, P[pre + "attention.output.LayerNorm.weight"],
                             P[pre + "attention.output.LayerNorm.bias"], cfg.layer_norm_eps)  # (B, T, H)
    f, c_f1 = L.linear(h1, P[pre + "intermediate.dense.weight"],
                       P[pre + "intermediate.dense.bias"])                         # (B, T, I)
    g, c_g = L.gelu(f)                                                             # (B, T, I)
    o, c_f2 = L.linear(g, P[pre + "output.dense.weight"], P[pre + "output.dense.bias"])  # (B, T, H)
    o, c_od = L.dropout(o, cfg.hidden_dropout_prob, rng)                           # (B, T, H)
    o += h1                                    # (B, T, H) the residual, in place
    h2, c_ln2 = L.layer_norm(o, P[pre + "output.LayerNorm.weight"],
                             P[pre + "output.LayerNorm.bias"], cfg.layer_norm_eps)  # (B, T, H)
    cache = (c_att, c_ao, c_ad, c_ln1, c_f1, c_g, c_f2, c_od, c_ln2, rows)
    inter = {"attention_probs": probs, "attention_output": h1, "ffn_activation": g}
    return h2, cache, inter


def _put(grads: dict, name: str, dw: np.ndarray, db: np.ndarray) -> None:
    """Store a layer's two parameter gradients under `name.weight` and `name.bias`."""
    grads[name + ".weight"] = dw
    grads[name + ".bias"] = db


def encoder_layer_backward(dh2: np.ndarray, cache, pre: str, grads: dict) -> np.ndarray:
    """The block read upwards: (B, T, H) gradient of its output -> (B, T, H) gradient of its input.

    Each line undoes the forward line named in its comment, bottom of `encoder_layer` first.
    Parameter gradients are written into `grads`.
    """
    c_att, c_ao, c_ad, c_ln1, c_f1, c_g, c_f2, c_od, c_ln2, rows = cache
    ds2, dw, db = L.layer_norm_backward(dh2, c_ln2)            # (B, T, H)  h2 = LayerNorm(o + h1)
    _put(grads, pre + "output.LayerNorm", dw, db)              # (H,), (H,)
    do = L.dropout_backward(ds2, c_od)                         # (B, T, H)  o = dropout(o)
    dg, dw, db = L.linear_backward(do, c_f2)                   # (B, T, I)  o = linear(g)  I -> H
    _put(grads, pre + "output.dense", dw, db)                  # (H, I), (H,)
    df = L.gelu_backward(dg, c_g)                              # (B, T, I)  g = gelu(f)
    dh1, dw, db = L.linear_backward(df, c_f1)                  # (B, T, H)  f = linear(h1)  H -> I
    _put(grads, pre + "intermediate.dense", dw, db)            # (I, H), (I,)
    dh1 += ds2                                                 # (B, T, H)  the residual: o + h1
    ds1, dw, db = L.layer_norm_backward(dh1, c_ln1)            # (B, T, H)  h1 = LayerNorm(a + x)
    _put(grads, pre + "attention.output.LayerNorm", dw, db)    # (H,), (H,)
    da = L.dropout_backward(ds1, c_ad)                         # (B, T, H)  a = dropout(a)
    dctx, dw, db = L.linear_backward(da, c_ao)                 # (B, T, H)  a = linear(ctx)  H -> H
    _put(grads, pre + "attention.output.dense", dw, db)        # (H, H), (H,)
    dx, dWq, dbq, dWk, dbk, dWv, dbv = L.self_attention_backward(dctx, c_att)  # (B, T, H)  ctx = attn(x)
    _put(grads, pre + "attention.self.query", dWq, dbq)        # (H, H), (H,)
    _put(grads, pre + "attention.self.key", dWk, dbk)          # (H, H), (H,)
    _put(grads, pre + "attention.self.value", dWv, dbv)        # (H, H), (H,)
    if rows is None:
        dx += ds1                                              # (B, T, H)  the residual: a + x
    else:                                                      # (B, T, H)  ... a + x[rows]
        L.gather_rows_backward(ds1, (rows, dx.shape), out=dx)
    return dx


def encoder_forward(P: dict, pre: str, cfg: BortConfig, ids: np.ndarray, mask: np.ndarray, rng=None,
                    want_intermediates: bool = False, keep_cache: bool = True,
                    last_rows: np.ndarray | None = None):
    """Embeddings and all blocks: (B, T) ids -> (B, T, H) last hidden state, cache, intermediates.

    With keep_cache=False (inference) each block's cache is dropped as soon as the block is done,
    so only one block's activations are alive at a time; the returned cache is then None.

    last_rows, (B, Q) positions: the last block computes only those, and the last hidden state is
    (B, Q, H). Heads that read a few positions (the classifier <s>, the masked LM the masked ones) get
    the same numbers for less: in the last block only keys and values need every position.
    """
    T = ids.shape[1]
    e = pre + "embeddings."
    word, c_word = L.embedding(ids, P[e + "word_embeddings.weight"])               # (B, T, H)
    x = word + P[e + "position_embeddings.weight"][:T]                             # positions 0..T-1
    x += P[e + "token_type_embeddings.weight"][0]                                  # every token is type 0
    x, c_ln = L.layer_norm(x, P[e + "LayerNorm.weight"], P[e + "LayerNorm.bias"], cfg.layer_norm_eps)
    x, c_drop = L.dropout(x, cfg.hidden_dropout_prob, rng)
    mask_bias = L.attention_mask_bias(mask, x.dtype)                               # (B, 1, 1, T)
    inter = {"embedding_output": x} if want_intermediates else None
    caches = []
    for i in range(cfg.num_hidden_layers):
        last = i == cfg.num_hidden_layers - 1
        x, c, layer_inter = encoder_layer(P, f"{pre}encoder.layer.{i}.", cfg, x, mask_bias, rng,
                                          keep_probs=keep_cache or want_intermediates,
                                          rows=last_rows if last else None)
        if keep_cache:
            caches.append(c)
        del c
        if want_intermediates:
            for k, v in layer_inter.items():
                inter[f"layer.{i}.{k}"] = v
            inter[f"layer.{i}.output"] = x
    return x, ((c_word, c_ln, c_drop, caches, T) if keep_cache else None), inter


def encoder_backward(dh: np.ndarray, cache, pre: str, cfg: BortConfig,
                     word_grad: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """(B, T, H) gradient of the last hidden state -> gradients of every encoder parameter.

    `word_grad`, if given, is another gradient of the word-embedding table (the tied MLM decoder's):
    the lookup's gradient is added into it rather than into a fresh (V, H) array of zeros, which
    saves faulting in and then summing 200 MB at Bort's size.
    """
    c_word, c_ln, c_drop, caches, T = cache
    grads: dict[str, np.ndarray] = {}
    for i in reversed(range(cfg.num_hidden_layers)):
        dh = encoder_layer_backward(dh, caches[i], f"{pre}encoder.layer.{i}.", grads)
    dh = L.dropout_backward(dh, c_drop)                         # (B, T, H)  x = dropout(x)
    e = pre + "embeddings."
    dx, dw, db = L.layer_norm_backward(dh, c_ln)                # (B, T, H)  x = LayerNorm(x)
    _put(grads, e + "LayerNorm", dw, db)                        # (H,), (H,)
    # x = word + position + token type: each table gets dx at the rows it gave
    grads[e + "word_embeddings.weight"] = L.embedding_backward(dx, c_word, cfg.pad_token_id,
                                                               out=word_grad)      # (V, H)
    dpos = np.zeros((cfg.max_position_embeddings, cfg.hidden_size), dtype=dx.dtype)
    dpos[:T] = dx.sum(axis=0)                                   # (T, H): each position, summed over batch
    grads[e + "position_embeddings.weight"] = dpos
    dtype_ = np.zeros((cfg.type_vocab_size, cfg.hidden_size), dtype=dx.dtype)
    dtype_[0] = dx.sum(axis=(0, 1))                             # (H,): every token is type 0
    grads[e + "token_type_embeddings.weight"] = dtype_
    return grads


# ------------------------------------------------------------------------------------ heads


def mlm_head(P: dict, cfg: BortConfig, h: np.ndarray, word_embeddings: np.ndarray):
    """(..., H) hidden states -> (..., V) logits through the decoder tied to the word embeddings."""
    t, c1 = L.linear(h, P["cls.predictions.transform.dense.weight"],
                     P["cls.predictions.transform.dense.bias"])                    # (..., H)
    g, c2 = L.gelu(t)                                                              # (..., H)
    n, c3 = L.layer_norm(g, P["cls.predictions.transform.LayerNorm.weight"],
                         P["cls.predictions.transform.LayerNorm.bias"], cfg.mlm_eps)  # (..., H)
    logits, c4 = L.linear(n, word_embeddings, P["cls.predictions.bias"])          # (..., V)
    return logits, (c1, c2, c3, c4)


def mlm_head_backward(dlogits: np.ndarray, cache):
    """(..., V) gradient of the logits -> d(h) (..., H), the head's gradients, and the decoder's
    gradient of the (tied) word embeddings (V, H). `mlm_head` read upwards."""
    c1, c2, c3, c4 = cache
    g: dict[str, np.ndarray] = {}
    dn, d_word_embeddings, db = L.linear_backward(dlogits, c4)  # (..., H)  logits = n @ E.T + b
    g["cls.predictions.bias"] = db                              # (V,); d_word_embeddings is (V, H)
    dg, dw, db = L.layer_norm_backward(dn, c3)                  # (..., H)  n = LayerNorm(g)
    _put(g, "cls.predictions.transform.LayerNorm", dw, db)      # (H,), (H,)
    dt = L.gelu_backward(dg, c2)                                # (..., H)  g = gelu(t)
    dh, dw, db = L.linear_backward(dt, c1)                      # (..., H)  t = linear(h)  H -> H
    _put(g, "cls.predictions.transform.dense", dw, db)          # (H, H), (H,)
    return dh, g, d_word_embeddings


# ------------------------------------------------------------------------------------ model classes


class _Bort:
    """What the three models share: parameters, dtype, train/eval, loading and saving.

    `params` given to the constructor are used as they are when their dtype matches (no copy), so
    an optimizer stepping this model updates the caller's arrays too: pass copies to keep originals.
    """

    prefix = "bert."                 # where the encoder's names start in this class's state dict
    architecture = "BertModel"

    def __init__(self, config: BortConfig, params: dict | None = None, dtype=np.float32, seed: int = 0):
        keep_freed_memory()            # reuse freed pages across calls; see minibort/_memory.py
        self.config = config
        self.dtype = np.dtype(dtype)
        if self.dtype not in (np.float32, np.float64):
            raise ValueError(f"dtype must be float32 or float64, got {self.dtype}")
        shapes = self.param_shapes(config)
        if params is None:
            params = init_params(shapes, config, self.dtype, np.random.default_rng(seed))
        else:
            params = self._adapt_state_dict(params, shapes, seed)
        self.params: dict[str, np.ndarray] = params
        self.training = False
        # Dropout draws from this generator and nothing else; it is seeded here, once (from `seed`,
        # as a stream apart from the initialisation's), and again only by `seed(n)` or `train(seed=n)`.
        self._rng = np.random.default_rng([seed, 1])

    # -------------------------------------------------------------- names
    @classmethod
    def param_shapes(cls, config: BortConfig) -> dict[str, tuple[int, ...]]:
        return encoder_param_shapes(config, cls.prefix)

    def _adapt_state_dict(self, sd: dict, shapes: dict, seed: int) -> dict[str, np.ndarray]:
        """Map a checkpoint's names onto this class's (adding or removing the `bert.` prefix),
        re-tie the decoder, check every shape, and initialise what the checkpoint lacks."""
        from .checkpoint import clean_state_dict  # position_ids, the tied decoder: one rule
        renamed = {}
        for k, v in clean_state_dict(sd).items():
            base = k.removeprefix("bert.")
            if base.startswith(("embeddings.", "encoder.", "pooler.")):
                k = self.prefix + base
            renamed[k] = v
        params, missing = {}, []
        for name, shape in shapes.items():
            if name not in renamed:
                missing.append(name)
                continue
            v = np.asarray(renamed[name])
            if v.shape != tuple(shape):
                from .formats.common import CheckpointError
                raise CheckpointError(f"{name}: the checkpoint has shape {v.shape}, the config expects "
                                      f"{tuple(shape)}; does config.json belong to these weights?")
            params[name] = np.ascontiguousarray(v, dtype=self.dtype)
        if missing:
            encoder_missing = [m for m in missing
                               if m.startswith((self.prefix + "embeddings", self.prefix + "encoder"))]
            if encoder_missing:
                from .formats.common import CheckpointError
                raise CheckpointError(f"the checkpoint lacks {len(encoder_missing)} encoder weights, "
                                      f"e.g. {encoder_missing[0]}; is it a Bort/BERT checkpoint?")
            warnings.warn(f"{type(self).__name__}: {len(missing)} weights are not in the checkpoint and "
                          f"were newly initialised ({', '.join(missing[:4])}{', ...' if len(missing) > 4 else ''}); "
                          "train the model before using its predictions", stacklevel=3)
            fresh = init_params({m: shapes[m] for m in missing}, self.config, self.dtype,
                                np.random.default_rng(seed))
            params.update(fresh)
        return params

    # -------------------------------------------------------------- modes
    def train(self, mode: bool = True, seed: int | None = None):
        """Training mode (dropout on) or, with mode=False, evaluation mode. Returns self.

        Only a flag is switched: the dropout generator goes on where it stopped, so
        `train(); eval(); train()` continues one stream of masks. `seed=n` also reseeds it.
        """
        self.training = bool(mode)
        if seed is not None:
            self.seed(seed)
        return self

    def eval(self):
        """Evaluation mode (the default): no dropout, deterministic. Returns self."""
        return self.train(False)

    def seed(self, seed: int) -> None:
        """Restart the dropout generator from `seed`: the same seed gives the same dropout masks."""
        self._rng = np.random.default_rng(seed)

    @property
    def dropout_rng(self) -> np.random.Generator:
        """The generator dropout draws from; a trainer saves and restores `dropout_rng.bit_generator.state`."""
        return self._rng

    @property
    def num_parameters(self) -> int:
        return sum(v.size for v in self.params.values())

    def __repr__(self) -> str:
        """What a transformers user expects from `print(model)`: the class, the shape, the size."""
        c = self.config
        mode = "training (dropout on)" if self.training else "eval"
        return (f"{type(self).__name__}(\n"
                f"  {c.num_hidden_layers} layers, hidden {c.hidden_size}, {c.num_attention_heads} heads, "
                f"FFN {c.intermediate_size}, vocab {c.vocab_size}, positions {c.max_position_embeddings}\n"
                f"  dropout {c.hidden_dropout_prob} hidden / {c.attention_probs_dropout_prob} attention, "
                f"mode {mode}\n"
                f"  {self.num_parameters:,} parameters in {self.dtype.name} "
                f"({self.num_parameters * self.dtype.itemsize / 1e6:.1f} MB)\n)")

    # -------------------------------------------------------------- encoder
    def _encode(self, input_ids, attention_mask, want_intermediates=False, keep_cache=False, logit_rows=0):
        ids, mask, was_1d = check_inputs(input_ids, attention_mask, self.config)
        h, cache, inter = self._forward(ids, mask, want_intermediates, keep_cache, logit_rows)
        return ids, mask, was_1d, h, cache, inter

    def _forward(self, ids, mask, want_intermediates=False, keep_cache=False, logit_rows=0, last_rows=None):
        """The encoder on ids and mask already checked by `check_inputs` (see `encoder_forward`)."""
        check_memory(self.config, ids.shape, self.dtype, logit_rows, keep_cache)
        return encoder_forward(self.params, self.prefix, self.config, ids, mask,
                               self._rng if self.training else None, want_intermediates, keep_cache, last_rows)

    def intermediates(self, input_ids, attention_mask=None) -> dict[str, np.ndarray]:
        """The encoder's intermediates (any of the three models), named as in tests/fixtures:
        embedding_output, layer.{i}.attention_probs, layer.{i}.attention_output,
        layer.{i}.ffn_activation, layer.{i}.output."""
        return self._encode(input_ids, attention_mask, True)[5]

    # -------------------------------------------------------------- loading and saving
    @classmethod
    def from_pretrained(cls, name_or_path: str | os.PathLike, revision: str = "main", dtype=np.float32,
                        mmap: bool = True, **config_overrides):
        """Load "bort-tiny" (embedded), a folder (config.json + model.safetensors / pytorch_model.bin,
        or the original bort.params) or a hub id such as "amazon/bort" (downloaded once into the
        cache); see `minibort.checkpoint.resolve`. Float32 safetensors are memory-mapped and used
        without a copy; `mmap=False` reads them into memory, for a long-running process whose file may
        be replaced on disk."""
        from .checkpoint import load_pretrained
        config, state_dict = load_pretrained(name_or_path, revision=revision, dtype=dtype, mmap=mmap)
        if config_overrides:
            d = config.to_dict()
            d.update(config_overrides)
            config = BortConfig.from_dict(d)
        return cls(config, state_dict, dtype=dtype)

    def state_dict(self) -> dict[str, np.ndarray]:
        """The parameters under transformers' names, as transformers' `save_pretrained` writes them."""
        return dict(self.params)

    def save_pretrained(self, directory: str | os.PathLike, tokenizer=None) -> None:
        """Write config.json and model.safetensors that transformers' from_pretrained loads, and
        with `tokenizer` its files too (vocab.json, merges.txt, ...), so the folder is complete."""
        from .formats.safetensors import save_file
        os.makedirs(directory, exist_ok=True)
        d = self.config.to_dict()
        d["architectures"] = [self.architecture]
        BortConfig.from_dict(d).to_json(os.path.join(directory, "config.json"))
        save_file(self.state_dict(), os.path.join(directory, "model.safetensors"), metadata={"format": "pt"})
        if tokenizer is not None:
            tokenizer.save_pretrained(directory)


class BortModel(_Bort):
    """The encoder alone (transformers' BertModel without its pooler): ids -> last hidden state."""

    prefix = ""
    architecture = "BertModel"

    def __call__(self, input_ids, attention_mask=None, output_hidden_states: bool = False,
                 output_attentions: bool = False):
        """(B, T) or (T,) ids -> (B, T, H) last hidden state.

        With `output_hidden_states` and/or `output_attentions`, returns a dict with
        `last_hidden_state`, `hidden_states` (embedding output then each layer's, L + 1 arrays) and
        `attentions` (each layer's (B, N, T, T) probabilities).
        """
        want = output_hidden_states or output_attentions
        _ids, _mask, was_1d, h, _, inter = self._encode(input_ids, attention_mask, want)
        if not want:
            return h[0] if was_1d else h
        n = self.config.num_hidden_layers
        out = {"last_hidden_state": h}
        if output_hidden_states:
            out["hidden_states"] = [inter["embedding_output"]] + [inter[f"layer.{i}.output"] for i in range(n)]
        if output_attentions:
            out["attentions"] = [inter[f"layer.{i}.attention_probs"] for i in range(n)]
        if was_1d:
            out = {k: (v[0] if isinstance(v, np.ndarray) else [a[0] for a in v]) for k, v in out.items()}
        return out


class BortForMaskedLM(_Bort):
    """Encoder + MLM head with the decoder tied to the word embeddings (transformers' BertForMaskedLM)."""

    architecture = "BertForMaskedLM"

    @classmethod
    def param_shapes(cls, config):
        return {**encoder_param_shapes(config, cls.prefix), **mlm_head_param_shapes(config)}

    @property
    def word_embeddings(self) -> np.ndarray:
        return self.params["bert.embeddings.word_embeddings.weight"]

    def __call__(self, input_ids, attention_mask=None, positions=None):
        """Logits over the vocabulary.

        positions=None: every position, (B, T, V) (or (T, V) for 1-D ids).
        positions a boolean (B, T) array: only where it is True, (M, V) in row-major order; at 15 %
            of positions this skips 85 % of the decoder, which is 2/3 of Bort's FLOPs.
        positions an integer (B, P) array: positions per sequence (GluonNLP's masked_positions), (B, P, V).
        """
        if positions is None:
            rows = np.size(input_ids)                                              # B * T
        else:
            pos = np.asarray(positions)
            rows = int(np.count_nonzero(pos)) if pos.dtype == bool else pos.size
        _ids, _mask, was_1d, h, _, _ = self._encode(input_ids, attention_mask, logit_rows=rows)
        h_sel = self._select(h, positions, was_1d)
        logits, _ = mlm_head(self.params, self.config, h_sel, self.word_embeddings)
        return logits[0] if (was_1d and positions is None) else logits

    @staticmethod
    def _select(h: np.ndarray, positions, was_1d: bool = False) -> np.ndarray:
        if positions is None:
            return h
        pos = np.asarray(positions)
        if was_1d and pos.ndim == 1:
            pos = pos[None]
        B, T, _H = h.shape
        if pos.dtype == bool:
            if pos.shape != (B, T):
                raise InputError(f"boolean positions must have the ids' shape {(B, T)}, got {pos.shape}")
            return h[pos]                                                          # (M, H)
        if not np.issubdtype(pos.dtype, np.integer) or pos.ndim != 2 or pos.shape[0] != B:
            raise InputError(f"positions must be a boolean (B, T) mask or integer (B, P) indices; got "
                             f"dtype {pos.dtype} shape {pos.shape}")
        if pos.size and (pos.min() < 0 or pos.max() >= T):
            raise InputError(f"positions must lie in [0, {T}), got {pos.min()}..{pos.max()}")
        return h[np.arange(B)[:, None], pos]                                       # (B, P, H)

    def loss_and_grads(self, input_ids, labels, attention_mask=None, teacher_logits=None,
                       mlm_weight: float = 1.0, distill_weight: float = 0.0, temperature: float = 2.0):
        """Masked-LM cross-entropy (labels -100 ignored, mean over the rest) and its gradients.

        The logits are computed only at labelled positions: the loss and gradients equal PyTorch's,
        which computes all V logits everywhere. With `teacher_logits` (M, V) at those same positions,
        adds `distill_weight * T^2 KL(teacher || student)` (Bort's pretraining: 0.1 MLM + 0.5 KD, T=2).
        Returns (loss, grads) with grads keyed exactly like `params`.
        """
        ids, mask, _ = check_inputs(input_ids, attention_mask, self.config)
        labels = np.asarray(labels)
        labels = labels[None] if labels.ndim == 1 and ids.shape[0] == 1 else labels
        if labels.shape != ids.shape:
            raise InputError(f"labels has shape {labels.shape}, input_ids {ids.shape}; they must match")
        sel = labels != -100                                                        # (B, T)
        if not sel.any():
            raise InputError("every label is -100: there is nothing to learn from in this batch")
        y = labels[sel]                                                             # (M,)
        if y.min() < 0 or y.max() >= self.config.vocab_size:
            raise InputError(f"labels must be -100 or in [0, {self.config.vocab_size})")
        rows, picked = labelled_rows(sel)                                           # (B, Q), (B, Q)
        h, cache, _ = self._forward(ids, mask, keep_cache=True, logit_rows=y.size, last_rows=rows)  # (B, Q, H)
        h_sel = h[picked]                                                           # (M, H), as h[sel] would be
        logits, c_head = mlm_head(self.params, self.config, h_sel, self.word_embeddings)  # (M, V)
        loss, c_ce = L.cross_entropy(logits, y)                                     # scalar
        loss = loss * mlm_weight
        dlogits = L.cross_entropy_backward(mlm_weight, c_ce)                        # (M, V)  loss = CE(logits, y)
        if teacher_logits is not None:
            kd, c_kd = L.distillation_kl(logits, np.asarray(teacher_logits), temperature)
            loss = loss + distill_weight * kd
            dlogits += L.distillation_kl_backward(distill_weight, c_kd)             # (M, V)  loss += KD
        dh_sel, grads, d_word_dec = mlm_head_backward(dlogits, c_head)              # (M, H)  logits = head(h_sel)
        dh = np.zeros_like(h)                                                       # (B, Q, H)
        dh[picked] = dh_sel                                                         # (B, Q, H)  h_sel = h[picked]
        # The tied table gets both gradients: the decoder's, and the lookup's added into it. (The pad
        # row keeps the decoder's part: only the lookup gives it none, as in PyTorch.)
        grads.update(encoder_backward(dh, cache, self.prefix, self.config, word_grad=d_word_dec))
        return float(loss), grads


class BortForSequenceClassification(_Bort):
    """Encoder + a head on the first token <s>, in one of two forms (`classifier_head`):

        "pooler" (transformers' BertForSequenceClassification, the default):
            tanh(dense(h[:, 0])) -> dropout -> dense H->C                      weights N(0, 0.02)
        "bort" (alexa/bort's finetune_bort.py):
            dropout -> tanh(dense(h[:, 0])) -> dropout -> dense H->C           weights U(-0.5, 0.5)

    Both use the same parameter names (`bert.pooler.dense.*`, `classifier.*`), and without dropout
    they compute the same function: a "bort" head loads into transformers' BertForSequenceClassification
    and gives the same logits; only training differs (the extra dropout before the dense layer, which
    transformers lacks). The head kind is kept in config.json as `classifier_head` (transformers
    ignores the key). num_labels == 1 is regression (MSE loss), otherwise single-label
    classification (cross-entropy).
    """

    architecture = "BertForSequenceClassification"
    HEADS = ("pooler", "bort")

    def __init__(self, config: BortConfig, params: dict | None = None, dtype=np.float32, seed: int = 0,
                 classifier_head: str | None = None):
        head = classifier_head or config.extra.get("classifier_head", "pooler")
        if head not in self.HEADS:
            raise ValueError(f"classifier_head must be one of {self.HEADS}, got {head!r}")
        if config.extra.get("classifier_head", "pooler") != head:
            config = BortConfig.from_dict({**config.to_dict(), "classifier_head": head})
        given = set() if params is None else {k.removeprefix("bert.") for k in params}
        super().__init__(config, params, dtype, seed)
        self.classifier_head = head
        if head == "bort":
            # alexa/bort initialises its classifier U(-0.5, 0.5) (MXNet Uniform(0.5)), biases 0.
            rng = np.random.default_rng([seed, 2])
            for name in ("bert.pooler.dense.weight", "classifier.weight"):
                if name.removeprefix("bert.") not in given:
                    w = self.params[name]
                    w[...] = rng.uniform(-0.5, 0.5, size=w.shape).astype(self.dtype)

    @classmethod
    def param_shapes(cls, config):
        return {**encoder_param_shapes(config, cls.prefix), **classifier_param_shapes(config)}

    def _head(self, h):
        """(B, T, H) last hidden state -> (B, C) logits, and the cache the backward reads."""
        P = self.params
        rng = self._rng if self.training else None
        p = self.config.hidden_dropout_prob
        x = h[:, 0]                                                                # (B, H): <s>
        x, c_d0 = L.dropout(x, p, rng) if self.classifier_head == "bort" else (x, None)
        pooled, c_p = L.linear(x, P["bert.pooler.dense.weight"], P["bert.pooler.dense.bias"])  # (B, H)
        pooled, c_t = L.tanh(pooled)                                               # (B, H)
        d, c_d = L.dropout(pooled, p, rng)                                         # (B, H)
        logits, c_c = L.linear(d, P["classifier.weight"], P["classifier.bias"])    # (B, C)
        return logits, (c_d0, c_p, c_t, c_d, c_c)

    def _head_backward(self, dlogits: np.ndarray, cache, grads: dict) -> np.ndarray:
        """(B, C) d(logits) -> (B, H) d(h[:, 0]); writes the head's parameter gradients into grads."""
        c_d0, c_p, c_t, c_d, c_c = cache
        dd, dw, db = L.linear_backward(dlogits, c_c)           # logits = linear(d)        (B, C) -> (B, H)
        _put(grads, "classifier", dw, db)
        dpooled = L.tanh_backward(L.dropout_backward(dd, c_d), c_t)  # d = dropout(tanh(pooled))  (B, H)
        dx, dw, db = L.linear_backward(dpooled, c_p)           # pooled = linear(x)        (B, H) -> (B, H)
        _put(grads, "bert.pooler.dense", dw, db)
        return dx if c_d0 is None else L.dropout_backward(dx, c_d0)   # x = dropout(h[:, 0])  (B, H)

    def __call__(self, input_ids, attention_mask=None):
        """(B, T) ids -> (B, C) logits ((C,) for 1-D ids)."""
        ids, mask, was_1d = check_inputs(input_ids, attention_mask, self.config)
        h, _, _ = self._forward(ids, mask, last_rows=first_token(ids))                  # (B, 1, H)
        logits, _ = self._head(h)
        return logits[0] if was_1d else logits

    def loss_and_grads(self, input_ids, labels, attention_mask=None):
        """Cross-entropy over classes (or MSE when num_labels == 1) and gradients keyed like `params`."""
        ids, mask, _ = check_inputs(input_ids, attention_mask, self.config)
        h, cache, _ = self._forward(ids, mask, keep_cache=True, last_rows=first_token(ids))  # (B, 1, H)
        logits, c_head = self._head(h)
        labels = np.asarray(labels).reshape(-1)
        if labels.shape[0] != ids.shape[0]:
            raise InputError(f"{labels.shape[0]} labels for a batch of {ids.shape[0]}")
        if self.config.num_labels == 1:
            loss, c_loss = L.mse(logits[:, 0], labels.astype(logits.dtype))
            dlogits = L.mse_backward(1.0, c_loss)[:, None]
        else:
            if not np.issubdtype(labels.dtype, np.integer) or labels.min() < 0 \
                    or labels.max() >= self.config.num_labels:
                raise InputError(f"labels must be integers in [0, {self.config.num_labels})")
            loss, c_loss = L.cross_entropy(logits, labels)
            dlogits = L.cross_entropy_backward(1.0, c_loss)
        grads = {}
        dh0 = self._head_backward(dlogits, c_head, grads)                          # (B, H)
        dh = np.zeros_like(h)
        dh[:, 0] = dh0                                                             # (B, 1, H)
        grads.update(encoder_backward(dh, cache, self.prefix, self.config))
        return float(loss), grads
