"""Masked-LM pretraining of a small Bort with minibort itself.

    python -m minibort.pretrain --out /tmp/run --steps 1500        # corpus, vocabulary, training
    python -m minibort.pretrain --help                             # every PretrainConfig field

What one run does, in order:

1. the corpus (`minibort.corpus`: the stdlib's documentation and docstrings), built into `--corpus`
   unless it is already there;
2. a byte-level BPE vocabulary trained on its training split by `minibort.train_bpe` (or `--tokenizer`);
3. every paragraph encoded once (cached in `--out`) and packed into sequences `<s> p1 </s> p2 </s> ...`
   of at most `seq_len` tokens, whole paragraphs where they fit, never across documents;
4. training: each batch is BERT-masked (15 % of the non-special tokens; of those 80 % -> <mask>,
   10 % -> a random token, 10 % unchanged), padded only to its longest sequence, and fed to
   `BortForMaskedLM.loss_and_grads`; AdamW with linear warm-up and decay, global-norm clipping;
   optionally a teacher's logits at the masked positions give Bort's distillation term
   (`--teacher DIR`: 0.1 MLM + 0.5 T^2 KL, T = 2);
5. evaluation every `eval_every` steps on the held-out split with masks drawn ONCE from `eval_seed`:
   masked-token accuracy and perplexity exp(mean cross-entropy), beside two baselines (the most
   frequent training token; a unigram model's perplexity);
6. a checkpoint every `checkpoint_every` steps, written atomically (one .npz holding the parameters,
   the optimizer and schedule state, both random generators' states, the step and the data position),
   from which a stopped run resumes to exactly the parameters an uninterrupted run reaches.
   Ctrl-C (or SIGTERM) finishes the current step, writes the checkpoint and exits.

At the end `--out/model/` holds config.json, model.safetensors, vocab.json, merges.txt,
heldout_eval.npz (the fixed held-out masks) and training.json (the record: corpus checksum, Python
version, command line, steps, wall time, loss curve, evaluations, baselines).
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import math
import os
import signal
import sys
import time
import types
import typing
from dataclasses import dataclass, field

import numpy as np

from .config import BortConfig
from .model import BortForMaskedLM
from .optim import (
    AdamW,
    Scheduler,
    check_finite,
    clip_grad_norm,
    linear_warmup_decay,
    no_decay_layernorm_and_bias,
)


def _f(default, help: str):
    return field(default=default, metadata={"help": help})


@dataclass
class PretrainConfig:
    """Everything a pretraining run depends on. Model fields carry BortConfig's names."""

    # data
    corpus: str = _f("", "corpus folder from `python -m minibort.corpus` (built there if missing; "
                         "default: OUT/corpus)")
    tokenizer: str = _f("", "folder with vocab.json + merges.txt (default: train BPE into OUT/tokenizer)")
    init: str = _f("", "start from this model folder's weights instead of a random initialisation "
                       "(e.g. weights/bort-tiny); its own tokenizer is used and the shape flags must match it")
    out: str = _f("runs/bort-tiny", "output folder: checkpoint, token cache, final model")
    seq_len: int = _f(128, "tokens per sequence, <s> and </s> included")
    # model (Bort's shape scaled down: 4 layers, 8 heads, FFN = 3/4 of the width)
    vocab_size: int = _f(4096, "BPE vocabulary size when training one")
    hidden_size: int = _f(256, "model width H")
    num_hidden_layers: int = _f(4, "encoder blocks")
    num_attention_heads: int = _f(8, "attention heads")
    intermediate_size: int = _f(192, "FFN width I")
    max_position_embeddings: int = _f(128, "position table size (>= seq_len)")
    # No dropout by default: over bort-tiny's 4000 steps (each sequence seen ~27 times) its held-out
    # perplexity kept falling, and short probes did better without (Bort itself uses 0.1).
    hidden_dropout_prob: float = _f(0.0, "dropout after embeddings, attention output and FFN")
    attention_probs_dropout_prob: float = _f(0.0, "dropout on attention probabilities")
    # optimisation
    steps: int = _f(4000, "optimizer steps (bort-tiny: 4000, ~40 min on 2 cores)")
    batch_size: int = _f(32, "sequences per step")
    lr: float = _f(2e-3, "peak learning rate")
    warmup: float = _f(0.1, "share of the steps spent warming up linearly from 0")
    weight_decay: float = _f(0.01, "AdamW decoupled weight decay (none on LayerNorm and biases)")
    beta1: float = _f(0.9, "AdamW beta1")
    beta2: float = _f(0.98, "AdamW beta2")
    eps: float = _f(1e-6, "AdamW epsilon")
    clip: float = _f(1.0, "global gradient-norm clip (0: off)")
    mask_prob: float = _f(0.15, "share of non-special tokens selected for prediction")
    seed: int = _f(0, "seed of the initialisation, data order, masking and dropout")
    # distillation
    teacher: str = _f("", "teacher BortForMaskedLM folder (same vocabulary): adds the KD term")
    mlm_weight: float | None = _f(None, "weight of the MLM loss (default 1.0, or 0.1 with a teacher)")
    distill_weight: float = _f(0.5, "weight of the T^2 KL distillation term (with --teacher)")
    temperature: float = _f(2.0, "distillation temperature T")
    # evaluation, checkpoints
    eval_every: int = _f(100, "evaluate on the held-out masks every N steps (0: only at the end)")
    eval_seed: int = _f(1234, "seed of the held-out masks, drawn once")
    eval_batch_size: int = _f(64, "sequences per evaluation forward")
    checkpoint_every: int = _f(100, "write the checkpoint every N steps (0: only when stopping)")
    resume: bool = _f(True, "continue from OUT/checkpoint.npz if it exists")
    stop_after: int = _f(0, "stop (checkpoint and exit, as if interrupted) after N steps in this "
                            "invocation (0: run to the end)")
    progress: bool = _f(True, "show a tqdm progress bar")
    ship: str = _f("", "also export the final model into this folder (e.g. weights/bort-tiny)")
    ship_dtype: str = _f("float16", "dtype of the exported weights")

    def model_config(self, vocab_size: int, pad_token_id: int) -> BortConfig:
        return BortConfig(
            vocab_size=vocab_size, hidden_size=self.hidden_size, num_hidden_layers=self.num_hidden_layers,
            num_attention_heads=self.num_attention_heads, intermediate_size=self.intermediate_size,
            max_position_embeddings=self.max_position_embeddings,
            hidden_dropout_prob=self.hidden_dropout_prob,
            attention_probs_dropout_prob=self.attention_probs_dropout_prob, pad_token_id=pad_token_id)


# ------------------------------------------------------------------------------------ command line


def build_parser() -> argparse.ArgumentParser:
    """One flag per PretrainConfig field, its type, default and help taken from the dataclass."""
    ap = argparse.ArgumentParser(prog="python -m minibort.pretrain",
                                 description="Masked-LM pretraining of a small Bort on the stdlib corpus.",
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    hints = typing.get_type_hints(PretrainConfig)
    for f in dataclasses.fields(PretrainConfig):
        t = hints[f.name]
        flag = "--" + f.name.replace("_", "-")
        if isinstance(t, types.UnionType) or typing.get_origin(t) is typing.Union:
            t = next(a for a in typing.get_args(t) if a is not type(None))
        if t is bool:
            ap.add_argument(flag, action=argparse.BooleanOptionalAction, default=f.default,
                            help=f.metadata["help"])
        else:
            ap.add_argument(flag, type=t, default=f.default, help=f.metadata["help"])
    return ap


def config_from_args(argv: list[str] | None = None) -> PretrainConfig:
    return PretrainConfig(**vars(build_parser().parse_args(argv)))


# ------------------------------------------------------------------------------------ data


@dataclass
class Specials:
    """The ids masking must know: never masked, never drawn as random replacements."""
    bos: int
    eos: int
    pad: int
    mask: int
    vocab_size: int
    others: tuple[int, ...] = ()

    @property
    def all(self) -> np.ndarray:
        return np.array(sorted({self.bos, self.eos, self.pad, self.mask, *self.others}), dtype=np.int64)


def specials_of(tok) -> Specials:
    unk = getattr(tok, "unk_token_id", 3)
    return Specials(bos=getattr(tok, "bos_token_id", 0), eos=getattr(tok, "eos_token_id", 2),
                    pad=tok.pad_token_id, mask=tok.mask_token_id, vocab_size=tok.vocab_size,
                    others=(unk,) if unk is not None else ())


def pack(documents: list[list[np.ndarray]], seq_len: int, sp: Specials) -> np.ndarray:
    """Pack paragraphs into (S, seq_len) sequences `<s> p1 </s> p2 </s> ... <pad>...`.

    Whole paragraphs are packed greedily while they fit; a paragraph longer than a sequence is cut
    into pieces; a sequence never spans two documents. Padding is `sp.pad`.
    """
    room = seq_len - 1                                     # <s> opens every sequence
    rows: list[list[int]] = []
    for doc in documents:
        cur: list[int] = []
        for para in doc:
            piece = list(map(int, para)) + [sp.eos]
            while piece:
                if len(cur) + len(piece) > room and cur:
                    rows.append(cur)
                    cur = []
                take = piece[:room]
                cur.extend(take)
                piece = piece[room:]
        if cur:
            rows.append(cur)
    out = np.full((len(rows), seq_len), sp.pad, dtype=np.int32)   # (S, T)
    for i, r in enumerate(rows):
        out[i, 0] = sp.bos
        out[i, 1:1 + len(r)] = r
    return out


def mask_tokens(ids: np.ndarray, attention_mask: np.ndarray, sp: Specials, rng: np.random.Generator,
                mask_prob: float = 0.15) -> tuple[np.ndarray, np.ndarray]:
    """BERT masking of a (B, T) batch -> (masked ids, labels with -100 where nothing is predicted).

    Each real, non-special token is selected with probability `mask_prob` (at least one per batch);
    a selected token becomes <mask> with probability 0.8, a random non-special token with 0.1, and
    stays itself with 0.1. Every random number is drawn from `rng`, whatever the outcome, so the
    generator advances by the same amount for the same batch shape.
    """
    ids = np.asarray(ids, dtype=np.int64)
    candidates = (attention_mask.astype(bool)) & ~np.isin(ids, sp.all)               # (B, T)
    u_select, u_kind = rng.random(ids.shape), rng.random(ids.shape)                   # (B, T) each
    normal = np.setdiff1d(np.arange(sp.vocab_size), sp.all)                          # replacements
    random_tokens = normal[rng.integers(0, len(normal), ids.shape)]                  # (B, T)
    selected = candidates & (u_select < mask_prob)
    if not selected.any() and candidates.any():
        # A batch with nothing to predict has no loss: take the candidate with the smallest draw.
        first = np.argmin(np.where(candidates, u_select, np.inf))
        selected.flat[first] = True
    labels = np.where(selected, ids, -100)                                            # (B, T)
    out = ids.copy()
    out[selected & (u_kind < 0.8)] = sp.mask
    swap = selected & (u_kind >= 0.8) & (u_kind < 0.9)
    out[swap] = random_tokens[swap]
    return out, labels


def trim(ids: np.ndarray, pad: int) -> tuple[np.ndarray, np.ndarray]:
    """Cut a (B, T) batch to its longest sequence; -> (ids (B, T'), attention mask (B, T'))."""
    mask = (ids != pad).astype(np.int64)                                              # (B, T)
    T = int(mask.sum(axis=1).max())
    return ids[:, :T], mask[:, :T]


def heldout_eval_set(seqs: np.ndarray, sp: Specials, seed: int, mask_prob: float = 0.15) -> dict:
    """The fixed held-out masks: every held-out sequence, masked once with `default_rng(seed)`."""
    ids, att = trim(seqs, sp.pad)
    masked, labels = mask_tokens(ids, att, sp, np.random.default_rng(seed), mask_prob)
    return {"input_ids": masked.astype(np.int32), "attention_mask": att.astype(np.int8),
            "labels": labels.astype(np.int32)}


def evaluate(model: BortForMaskedLM, ev: dict, batch_size: int = 64) -> dict:
    """Masked-token accuracy, perplexity exp(mean CE) and the mean loss on the held-out masks.

    Dropout is off; the model's own generator is left untouched, so evaluating mid-run does not
    change the training that follows.
    """
    was_training = model.training
    model.training = False
    correct, nll, n = 0, 0.0, 0
    try:
        for i in range(0, len(ev["input_ids"]), batch_size):
            ids = ev["input_ids"][i:i + batch_size].astype(np.int64)
            att = ev["attention_mask"][i:i + batch_size].astype(np.int64)
            labels = ev["labels"][i:i + batch_size]
            sel = labels != -100                                                       # (B, T)
            if not sel.any():
                continue
            logits = model(ids, att, positions=sel).astype(np.float64)                 # (M, V)
            y = labels[sel]                                                            # (M,)
            m = logits.max(axis=1, keepdims=True)
            logz = np.log(np.exp(logits - m).sum(axis=1)) + m[:, 0]                    # (M,)
            nll += float((logz - logits[np.arange(len(y)), y]).sum())
            correct += int((logits.argmax(axis=1) == y).sum())
            n += len(y)
    finally:
        model.training = was_training
    loss = nll / max(n, 1)
    return {"accuracy": correct / max(n, 1), "perplexity": math.exp(loss), "loss": loss, "masked_tokens": n}


def baselines(train_seqs: np.ndarray, ev: dict, sp: Specials) -> dict:
    """Two baselines on the same held-out masks, from the training split's token counts.

    most_frequent: always predict the commonest non-special training token (this is also the
        unigram model's argmax, so its accuracy is the unigram model's accuracy);
    unigram: perplexity of add-one-smoothed unigram frequencies, and the expected accuracy of
        guessing by sampling from them (mean p(label)).
    """
    counts = np.bincount(train_seqs.reshape(-1), minlength=sp.vocab_size).astype(np.float64)
    counts[sp.all] = 0
    y = ev["labels"][ev["labels"] != -100]
    top = int(counts.argmax())
    p = (counts + 1.0) / (counts.sum() + sp.vocab_size - len(sp.all))
    p[sp.all] = 0
    return {"most_frequent": {"token_id": top, "accuracy": float((y == top).mean())},
            "unigram": {"perplexity": float(np.exp(-np.log(p[y]).mean())),
                        "expected_sampling_accuracy": float(p[y].mean())}}


def load_corpus_tokens(cfg: PretrainConfig, tok) -> tuple[dict, list, list]:
    """Corpus record and the two splits encoded as documents of paragraph id arrays (cached)."""
    from . import corpus as C
    cdir = cfg.corpus or os.path.join(cfg.out, "corpus")
    if not os.path.exists(os.path.join(cdir, "corpus.json")):
        C.build(cdir)
    with open(os.path.join(cdir, "corpus.json"), encoding="utf-8") as f:
        record = json.load(f)
    key = hashlib.sha256((record["sha256"] + _tokenizer_digest(tok)).encode()).hexdigest()[:16]
    cache = os.path.join(cfg.out, f"tokens-{key}.npz")
    if os.path.exists(cache):
        z = np.load(cache)
        splits = {s: _unflatten(z[f"{s}_ids"], z[f"{s}_para"], z[f"{s}_doc"]) for s in ("train", "heldout")}
    else:
        splits, arrays = {}, {}
        for s in ("train", "heldout"):
            docs = C.read_split(os.path.join(cdir, f"{s}.txt"))
            splits[s] = [[np.array(tok.encode(p, add_special_tokens=False), dtype=np.int32) for p in d]
                         for d in docs]
            arrays.update(zip((f"{s}_ids", f"{s}_para", f"{s}_doc"), _flatten(splits[s])))
        _savez_atomic(cache, arrays)
    return record, splits["train"], splits["heldout"]


def _tokenizer_digest(tok) -> str:
    h = hashlib.sha256()
    for i in range(tok.vocab_size):
        h.update(repr(tok.decode([i])).encode())
    return h.hexdigest()


def _flatten(docs):
    paras = [p for d in docs for p in d]
    ids = np.concatenate(paras) if paras else np.zeros(0, np.int32)
    para_len = np.array([len(p) for p in paras], dtype=np.int64)
    doc_len = np.array([len(d) for d in docs], dtype=np.int64)
    return ids, para_len, doc_len


def _unflatten(ids, para_len, doc_len):
    bounds = np.concatenate([[0], np.cumsum(para_len)])
    paras = [ids[bounds[i]:bounds[i + 1]] for i in range(len(para_len))]
    dbounds = np.concatenate([[0], np.cumsum(doc_len)])
    return [paras[dbounds[i]:dbounds[i + 1]] for i in range(len(doc_len))]


def get_tokenizer(cfg: PretrainConfig):
    """--init's own tokenizer, or --tokenizer, or a vocabulary already in OUT/tokenizer, or train one there."""
    from .bpe_train import train_bpe
    from .tokenizer import Tokenizer
    if cfg.init:
        if cfg.tokenizer:
            raise SystemExit(f"error: --init {cfg.init} brings its own tokenizer (its embeddings are "
                             "indexed by it); drop --tokenizer")
        return Tokenizer.from_pretrained(cfg.init)
    if cfg.tokenizer:
        return Tokenizer.from_pretrained(cfg.tokenizer)
    tdir = os.path.join(cfg.out, "tokenizer")
    if os.path.exists(os.path.join(tdir, "merges.txt")):
        return Tokenizer.from_pretrained(tdir)
    from . import corpus as C
    cdir = cfg.corpus or os.path.join(cfg.out, "corpus")
    if not os.path.exists(os.path.join(cdir, "corpus.json")):
        C.build(cdir)
    texts = [p for d in C.read_split(os.path.join(cdir, "train.txt")) for p in d]
    t0 = time.time()
    tok = train_bpe(texts, cfg.vocab_size, out_dir=tdir)
    print(f"trained a {tok.vocab_size}-token BPE vocabulary in {time.time() - t0:.0f} s", flush=True)
    return tok


def initial_model(cfg: PretrainConfig, vocab_size: int, pad_token_id: int) -> tuple[BortForMaskedLM, dict]:
    """The model training starts from: `cfg.init`'s weights in float32, else None (random init).

    -> (model, record for training.json). The folder's shape must be the run's shape (the flags'
    values), so that training.json's config describes the model; dropout comes from the run's flags.
    """
    want = cfg.model_config(vocab_size, pad_token_id)
    model = BortForMaskedLM.from_pretrained(cfg.init, dtype=np.float32,
                                            hidden_dropout_prob=want.hidden_dropout_prob,
                                            attention_probs_dropout_prob=want.attention_probs_dropout_prob)
    for name in ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
                 "intermediate_size", "max_position_embeddings", "pad_token_id"):
        have, need = getattr(model.config, name), getattr(want, name)
        if have != need:
            flag = "--" + name.replace("_", "-")
            raise SystemExit(f"error: --init {cfg.init} has {name}={have}, this run has {name}={need}; "
                             f"pass {flag} {have} (or start from random weights without --init)")
    weights = os.path.join(cfg.init, "model.safetensors")
    record = {"model": cfg.init}
    if os.path.exists(weights):
        with open(weights, "rb") as f:
            record["model_safetensors_sha256"] = hashlib.sha256(f.read()).hexdigest()
    return model, record


# ------------------------------------------------------------------------------------ the trainer


class Trainer:
    """The training state and loop. Everything that decides the next step lives in `state`,
    the model's parameters, the optimizer and the two generators, and all of it is checkpointed."""

    def __init__(self, cfg: PretrainConfig, train_seqs: np.ndarray, eval_set: dict, sp: Specials,
                 model: BortForMaskedLM | None = None, teacher: BortForMaskedLM | None = None):
        self.cfg, self.train_seqs, self.eval_set, self.sp = cfg, train_seqs, eval_set, sp
        if len(train_seqs) < cfg.batch_size:
            raise ValueError(f"{len(train_seqs)} training sequences, fewer than one batch of {cfg.batch_size}")
        self.model = model or BortForMaskedLM(cfg.model_config(sp.vocab_size, sp.pad), seed=cfg.seed)
        self.model.train(seed=cfg.seed + 1)                          # dropout generator
        self.teacher = teacher
        self.opt = AdamW(self.model.params, lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), eps=cfg.eps,
                         weight_decay=cfg.weight_decay, no_decay=no_decay_layernorm_and_bias)
        self.sched = Scheduler(self.opt, linear_warmup_decay(int(cfg.warmup * cfg.steps), cfg.steps))
        self.mask_rng = np.random.default_rng([cfg.seed, 2])
        self.state = {"step": 0, "epoch": 0, "cursor": 0, "tokens": 0, "wall_time": 0.0,
                      "losses": [], "grad_norms": [], "lrs": [], "evals": []}
        self.mlm_weight = cfg.mlm_weight if cfg.mlm_weight is not None else (0.1 if teacher else 1.0)

    # -------------------------------------------------------------- data order
    def _order(self, epoch: int) -> np.ndarray:
        """The permutation of the training sequences in `epoch`: a function of (seed, epoch) only."""
        return np.random.default_rng([self.cfg.seed, 3, epoch]).permutation(len(self.train_seqs))

    def next_batch(self) -> np.ndarray:
        s, B = self.state, self.cfg.batch_size
        if s["cursor"] + B > len(self.train_seqs):                  # drop the last partial batch
            s["epoch"] += 1
            s["cursor"] = 0
        idx = self._order(s["epoch"])[s["cursor"]:s["cursor"] + B]
        s["cursor"] += B
        return self.train_seqs[idx]                                  # (B, T)

    # -------------------------------------------------------------- one step
    def train_step(self) -> float:
        cfg, s = self.cfg, self.state
        ids, att = trim(self.next_batch(), self.sp.pad)              # (B, T'), (B, T')
        masked, labels = mask_tokens(ids, att, self.sp, self.mask_rng, cfg.mask_prob)
        teacher_logits = None
        if self.teacher is not None:
            teacher_logits = self.teacher(masked, att, positions=labels != -100)   # (M, V)
        loss, grads = self.model.loss_and_grads(
            masked, labels, att, teacher_logits=teacher_logits, mlm_weight=self.mlm_weight,
            distill_weight=cfg.distill_weight if self.teacher is not None else 0.0,
            temperature=cfg.temperature)
        check_finite(loss, grads, s["step"])
        norm = clip_grad_norm(grads, cfg.clip) if cfg.clip > 0 else float("nan")
        s["lrs"].append(self.opt.lr)
        self.opt.step(grads)
        self.sched.step()
        s["step"] += 1
        s["tokens"] += int(att.sum())
        s["losses"].append(loss)
        s["grad_norms"].append(norm)
        return loss

    def evaluate(self) -> dict:
        r = evaluate(self.model, self.eval_set, self.cfg.eval_batch_size)
        r["step"] = self.state["step"]
        self.state["evals"].append(r)
        return r

    # -------------------------------------------------------------- checkpoints
    def save(self, path: str) -> None:
        """One .npz, written to a temporary file and renamed into place: parameters, optimizer
        state, and a JSON string with the step, data position, generator states and history."""
        arrays = {"param/" + k: v for k, v in self.model.params.items()}
        opt_sd = self.opt.state_dict()
        arrays.update({"optim/" + k: v for k, v in opt_sd.items() if isinstance(v, np.ndarray)})
        meta = {"state": self.state, "config": dataclasses.asdict(self.cfg),
                "optim_scalars": {k: v for k, v in opt_sd.items() if not isinstance(v, np.ndarray)},
                "sched": self.sched.state_dict(),
                "mask_rng": self.mask_rng.bit_generator.state,
                "dropout_rng": self.model._rng.bit_generator.state}
        arrays["meta"] = np.frombuffer(json.dumps(meta).encode("utf-8"), dtype=np.uint8)
        _savez_atomic(path, arrays)

    # Settings that may change between a stop and a resume without changing the result.
    RESUMABLE_CHANGES = ("stop_after", "progress", "resume", "ship", "ship_dtype", "eval_batch_size",
                         "checkpoint_every")

    def load(self, path: str) -> None:
        """Restore everything `save` wrote. Refuses a checkpoint written with other settings."""
        with np.load(path) as z:
            meta = json.loads(bytes(z["meta"]).decode("utf-8"))
            now = dataclasses.asdict(self.cfg)
            changed = [k for k, v in meta["config"].items()
                       if k not in self.RESUMABLE_CHANGES and k in now and now[k] != v]
            if changed:
                k = changed[0]
                raise ValueError(f"{path} was written with {k}={meta['config'][k]!r}, this run has "
                                 f"{k}={now[k]!r}; resume with the same settings, or start afresh "
                                 "with --no-resume or another --out")
            for k in self.model.params:
                self.model.params[k][...] = z["param/" + k]         # in place: the optimizer holds them
            opt_sd = dict(meta["optim_scalars"])
            opt_sd.update({k[len("optim/"):]: z[k] for k in z.files if k.startswith("optim/")})
        self.opt.load_state_dict(opt_sd)
        self.sched.load_state_dict(meta["sched"])
        self.mask_rng.bit_generator.state = meta["mask_rng"]
        self.model._rng.bit_generator.state = meta["dropout_rng"]
        self.state = meta["state"]

    # -------------------------------------------------------------- the loop
    def run(self, checkpoint_path: str | None = None, log=print) -> dict:
        """Train until `cfg.steps` (or `cfg.stop_after` steps in this call, or a stop signal)."""
        cfg, s = self.cfg, self.state
        stop = {"now": False}

        def on_signal(signum, frame):
            stop["now"] = True
        old = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)} \
            if _main_thread() else {}
        bar = None
        if cfg.progress:
            from tqdm import tqdm
            bar = tqdm(total=cfg.steps, initial=s["step"], desc="pretrain", dynamic_ncols=True,
                       mininterval=1.0 if sys.stderr.isatty() else 30.0)
        if bar is not None:                                  # log lines go above the bar, not into it
            log = bar.write
        start_step, t_start, t_last, tok_last = s["step"], time.time(), time.time(), s["tokens"]
        wall0 = s["wall_time"]
        try:
            while s["step"] < cfg.steps:
                loss = self.train_step()
                now = time.time()
                s["wall_time"] = wall0 + (now - t_start)
                if bar is not None:
                    rate = (s["tokens"] - tok_last) / max(now - t_last, 1e-9)
                    bar.set_postfix(loss=f"{loss:.3f}", tok_s=f"{rate:.0f}", lr=f"{self.opt.lr:.2e}",
                                    refresh=False)
                    bar.update(1)
                    t_last, tok_last = now, s["tokens"]
                if cfg.eval_every and s["step"] % cfg.eval_every == 0 and s["step"] < cfg.steps:
                    r = self.evaluate()
                    log(f"step {s['step']}: held-out accuracy {r['accuracy']:.4f} perplexity "
                        f"{r['perplexity']:.2f}; train loss (last 50) {np.mean(s['losses'][-50:]):.4f}; "
                        f"{s['tokens'] / max(s['wall_time'], 1e-9):.0f} tokens/s")
                done_here = s["step"] - start_step
                if checkpoint_path and cfg.checkpoint_every and s["step"] % cfg.checkpoint_every == 0:
                    self.save(checkpoint_path)
                if stop["now"] or (cfg.stop_after and done_here >= cfg.stop_after):
                    if checkpoint_path:
                        self.save(checkpoint_path)
                        log(f"stopped at step {s['step']}; checkpoint {checkpoint_path}; "
                            "run the same command again to resume")
                    return {"finished": False, "step": s["step"]}
        finally:
            if bar is not None:
                bar.close()
            for sig, h in old.items():
                signal.signal(sig, h)
        if not s["evals"] or s["evals"][-1]["step"] != s["step"]:
            self.evaluate()
        if checkpoint_path:
            self.save(checkpoint_path)
        return {"finished": True, "step": s["step"]}


def _main_thread() -> bool:
    import threading
    return threading.current_thread() is threading.main_thread()


def _savez_atomic(path: str, arrays: dict) -> None:
    tmp = path + ".part"
    with open(tmp, "wb") as f:
        np.savez(f, **arrays)
    os.replace(tmp, path)


# ------------------------------------------------------------------------------------ the whole run


def pretrain(cfg: PretrainConfig, argv: list[str] | None = None) -> dict:
    """Corpus -> vocabulary -> packed sequences -> training -> OUT/model with training.json."""
    os.makedirs(cfg.out, exist_ok=True)
    tok = get_tokenizer(cfg)
    sp = specials_of(tok)
    record, train_docs, held_docs = load_corpus_tokens(cfg, tok)
    train_seqs = pack(train_docs, cfg.seq_len, sp)                       # (S, T)
    held_seqs = pack(held_docs, cfg.seq_len, sp)                         # (S', T)
    ev = heldout_eval_set(held_seqs, sp, cfg.eval_seed, cfg.mask_prob)
    base = baselines(train_seqs, ev, sp)
    n_train_tokens = int((train_seqs != sp.pad).sum())
    print(f"corpus sha256 {record['sha256'][:16]}... (Python {record['python_version']}); "
          f"{len(train_seqs)} training sequences ({n_train_tokens:,} tokens), {len(held_seqs)} held-out; "
          f"{int((ev['labels'] != -100).sum())} fixed held-out masks", flush=True)
    teacher = None
    if cfg.teacher:
        teacher = BortForMaskedLM.from_pretrained(cfg.teacher).eval()
        if teacher.config.vocab_size != sp.vocab_size:
            raise SystemExit(f"error: the teacher's vocabulary ({teacher.config.vocab_size}) is not the "
                             f"student's ({sp.vocab_size}); distillation needs the same tokenizer")
    init_model, init_record = initial_model(cfg, sp.vocab_size, sp.pad) if cfg.init else (None, None)
    trainer = Trainer(cfg, train_seqs, ev, sp, model=init_model, teacher=teacher)
    ckpt = os.path.join(cfg.out, "checkpoint.npz")
    if cfg.resume and os.path.exists(ckpt):
        try:
            trainer.load(ckpt)
        except ValueError as e:
            raise SystemExit(f"error: {e}") from None
        print(f"resumed from {ckpt} at step {trainer.state['step']}", flush=True)
    n_params = trainer.model.num_parameters
    print(f"model: {n_params:,} parameters; {cfg.steps} steps of {cfg.batch_size} x {cfg.seq_len}", flush=True)
    result = trainer.run(ckpt, log=lambda m: print(m, flush=True))
    if not result["finished"]:
        return result
    final = trainer.state["evals"][-1]
    s = trainer.state
    out_dir = os.path.join(cfg.out, "model")
    os.makedirs(out_dir, exist_ok=True)
    trainer.model.save_pretrained(out_dir)
    tok.save_pretrained(out_dir)
    _savez_atomic(os.path.join(out_dir, "heldout_eval.npz"), ev)
    training = {
        "corpus": {"sha256": record["sha256"], "python_version": record["python_version"],
                   "files": {k: {kk: v[kk] for kk in ("documents", "bytes", "sha256")}
                             for k, v in record["files"].items()},
                   "train_sequences": len(train_seqs), "train_tokens": n_train_tokens,
                   "heldout_sequences": len(held_seqs)},
        "python_version": sys.version.split()[0],
        "numpy_version": np.__version__,
        "command": "python -m minibort.pretrain " + " ".join(argv if argv is not None else sys.argv[1:]),
        "config": dataclasses.asdict(cfg),
        "init": init_record,
        "parameters": n_params,
        "steps": s["step"], "epochs": s["epoch"] + s["cursor"] / max(len(train_seqs), 1),
        "tokens_seen": s["tokens"], "wall_time_s": round(s["wall_time"], 1),
        "tokens_per_s": round(s["tokens"] / max(s["wall_time"], 1e-9), 1),
        "heldout": {"accuracy": final["accuracy"], "perplexity": final["perplexity"],
                    "loss": final["loss"], "masked_tokens": final["masked_tokens"],
                    "eval_seed": cfg.eval_seed, "mask_prob": cfg.mask_prob,
                    "masks_file": "heldout_eval.npz"},
        "baselines": base,
        "evals": s["evals"],
        "loss_curve": [round(x, 4) for x in s["losses"]],
        "lr_curve_every_10": [float(f"{x:.3g}") for x in s["lrs"][::10]],
    }
    with open(os.path.join(out_dir, "training.json"), "w", encoding="utf-8") as f:
        json.dump(training, f, indent=1)
        f.write("\n")
    print(f"done: {s['step']} steps in {s['wall_time'] / 60:.1f} min; held-out accuracy "
          f"{final['accuracy']:.4f}, perplexity {final['perplexity']:.2f} (most-frequent-token "
          f"accuracy {base['most_frequent']['accuracy']:.4f}, unigram perplexity "
          f"{base['unigram']['perplexity']:.1f}); model in {out_dir}", flush=True)
    if cfg.ship:
        shipped = export(out_dir, cfg.ship, cfg.ship_dtype)["heldout"]
        print(f"exported to {cfg.ship} in {cfg.ship_dtype}: held-out accuracy {shipped['accuracy']:.4f}, "
              f"perplexity {shipped['perplexity']:.2f}", flush=True)
    return {**result, "training": training, "out_dir": out_dir}


def export(model_dir: str, dest: str, dtype: str = "float16") -> dict:
    """Copy a finished run's model folder to `dest` (e.g. weights/bort-tiny) with weights in `dtype`.

    The held-out evaluation is repeated with the stored (rounded) weights, and training.json's
    `heldout` is set to that result, so the record describes exactly the files shipped; the
    float32 result of the run itself is kept as `heldout_training_weights`.
    """
    import shutil

    from .formats.safetensors import save_file
    os.makedirs(dest, exist_ok=True)
    model = BortForMaskedLM.from_pretrained(model_dir)
    for name in ("config.json", "vocab.json", "merges.txt"):
        shutil.copyfile(os.path.join(model_dir, name), os.path.join(dest, name))
    with np.load(os.path.join(model_dir, "heldout_eval.npz")) as z:
        ev = {k: z[k] for k in z.files}
    tmp = os.path.join(dest, "heldout_eval.npz.part")
    with open(tmp, "wb") as f:
        np.savez_compressed(f, **ev)
    os.replace(tmp, os.path.join(dest, "heldout_eval.npz"))
    save_file({k: v.astype(dtype) for k, v in model.state_dict().items()},
              os.path.join(dest, "model.safetensors"), metadata={"format": "pt"})
    shipped = BortForMaskedLM.from_pretrained(dest)
    r = evaluate(shipped, ev)
    with open(os.path.join(model_dir, "training.json"), encoding="utf-8") as f:
        record = json.load(f)
    record["heldout_training_weights"] = record["heldout"]
    record["heldout"] = {**record["heldout"], "accuracy": r["accuracy"], "perplexity": r["perplexity"],
                         "loss": r["loss"], "weights_dtype": dtype}
    with open(os.path.join(dest, "training.json"), "w", encoding="utf-8") as f:
        json.dump(record, f, indent=1)
        f.write("\n")
    for name in os.listdir(dest):
        os.chmod(os.path.join(dest, name), 0o644)
    return record


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    cfg = config_from_args(argv)
    res = pretrain(cfg, argv)
    return 0 if res.get("finished") else 3


if __name__ == "__main__":
    sys.exit(main())
