"""Masked-LM pretraining of a small Bort with minibort itself: the MLM recipe on `minibort.trainer`.

    python -m minibort.pretrain --out /tmp/run --steps 1500        # corpus, vocabulary, training
    python -m minibort.pretrain --help                             # every PretrainConfig field

What one run does, in order:

1. the corpus: `--corpus DIR` is either minibort's (`minibort.corpus`: the stdlib's documentation and
   docstrings; corpus.json + train.txt + heldout.txt, built there when DIR is missing or empty) or
   your own text, train.txt and heldout.txt without corpus.json (`CORPUS_LAYOUT` below), read as it is;
   a folder holding anything else is refused, so minibort never writes over your files;
2. a byte-level BPE vocabulary trained on its training split by `minibort.bpe_train` (or `--tokenizer`);
3. every paragraph encoded once (cached in `--out`) and packed into sequences `<s> p1 </s> p2 </s> ...`
   of at most `seq_len` tokens, whole paragraphs where they fit, never across documents;
4. training (`mlm_trainer` -> `minibort.trainer.Trainer`): each batch is BERT-masked (15 % of the
   non-special tokens; of those 80 % -> <mask>, 10 % -> a random token, 10 % unchanged; with
   `--salient-mask-prob P`, Python's keywords and built-in names are selected with probability P;
   `minibort/masking.py`), padded only to its longest sequence, and fed to
   `BortForMaskedLM.loss_and_grads`; AdamW with linear warm-up and decay, global-norm clipping;
   optionally a teacher's logits at the masked positions give Bort's distillation term
   (`--teacher DIR`: 0.1 MLM + 0.5 T^2 KL, T = 2);
5. evaluation every `eval_every` steps on the held-out split with masks drawn ONCE from `eval_seed`:
   masked-token accuracy and perplexity exp(mean cross-entropy), beside two baselines (the most
   frequent training token; a unigram model's perplexity);
6. a checkpoint every `checkpoint_every` steps (the trainer's: parameters, optimizer and schedule,
   both generators, the data position), from which a stopped run resumes to exactly the parameters an
   uninterrupted run reaches. A resume compares the settings and the content digests of the data
   and tokenizer; Ctrl-C (or SIGTERM) finishes the current step, writes the checkpoint and exits.
   `--out` is locked while a run uses it.

At the end `--out/model/` holds config.json, model.safetensors, vocab.json, merges.txt,
heldout_eval.npz (the fixed held-out masks) and training.json (the record: corpus checksum, Python
version, command line, steps, wall time, loss curve, evaluations, baselines).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import sys
import time
from dataclasses import dataclass

import numpy as np

from ._files import savez_atomic, write_bytes_atomic, write_text_atomic
from .config import BortConfig
from .layers import log_softmax
from .masking import (
    Specials,
    heldout_eval_set,
    mask_tokens,
    pack,
    salient_token_ids,
    selection_table,
    specials_of,
    trim,
)
from .model import BortForMaskedLM
from .optim import AdamW, Scheduler, linear_warmup_decay, no_decay_layernorm_and_bias
from .trainer import (
    Trainer,
    TrainingError,
    content_digest,
    option,
    parse_config,
    portable_command,
    portable_path,
    run_lock,
    shuffled_batches,
)
from .trainer import build_parser as _parser_for

CORPUS_LAYOUT = """\
Your own corpus: a folder with train.txt and heldout.txt (UTF-8), one paragraph per line and a blank
line between documents (a sequence never spans two documents), and no corpus.json. Pass it with
--corpus DIR; minibort only reads it. A missing or empty --corpus folder gets minibort's stdlib corpus."""

# The fields that are the model's: they carry BortConfig's names, so `model_config` takes them by name.
_MODEL_FIELDS = frozenset(f.name for f in dataclasses.fields(BortConfig))


@dataclass
class PretrainConfig:
    """Everything a pretraining run depends on. Model fields carry BortConfig's names."""

    # data
    corpus: str = option("", "corpus folder: minibort's (built there if missing or empty) or your own "
                             "train.txt + heldout.txt (see below); default: OUT/corpus")
    tokenizer: str = option("", "folder with vocab.json + merges.txt (default: train BPE into OUT/tokenizer)")
    init: str = option("", "start from this model folder's weights instead of a random initialisation "
                           "(e.g. weights/bort-tiny); its own tokenizer is used and the shape flags must "
                           "match it")
    out: str = option("runs/bort-tiny", "output folder: checkpoint, token cache, final model")
    seq_len: int = option(128, "tokens per sequence, <s> and </s> included")
    # model (Bort's shape scaled down: 4 layers, 8 heads, FFN = 3/4 of the width)
    vocab_size: int = option(4096, "BPE vocabulary size when training one")
    hidden_size: int = option(256, "model width H")
    num_hidden_layers: int = option(4, "encoder blocks")
    num_attention_heads: int = option(8, "attention heads")
    intermediate_size: int = option(192, "FFN width I")
    max_position_embeddings: int = option(128, "position table size (>= seq_len)")
    # No dropout by default: over bort-tiny's 4000 steps (each sequence seen ~27 times) its held-out
    # perplexity kept falling, and short probes did better without (Bort itself uses 0.1).
    hidden_dropout_prob: float = option(0.0, "dropout after embeddings, attention output and FFN")
    attention_probs_dropout_prob: float = option(0.0, "dropout on attention probabilities")
    # optimisation
    steps: int = option(4000, "optimizer steps (bort-tiny: 4000)")
    batch_size: int = option(32, "sequences per step")
    lr: float = option(2e-3, "peak learning rate")
    warmup: float = option(0.1, "share of the steps spent warming up linearly from 0")
    weight_decay: float = option(0.01, "AdamW decoupled weight decay (none on LayerNorm and biases)")
    beta1: float = option(0.9, "AdamW beta1")
    beta2: float = option(0.98, "AdamW beta2")
    eps: float = option(1e-6, "AdamW epsilon")
    clip: float = option(1.0, "global gradient-norm clip (0: off)")
    mask_prob: float = option(0.15, "share of non-special tokens selected for prediction")
    salient_mask_prob: float = option(0.0, "selection probability of Python's keywords and built-in "
                                           "names (masking.salient_token_ids) in training batches; "
                                           "0: they get --mask-prob like every token. The held-out "
                                           "masks never change")
    seed: int = option(0, "seed of the initialisation, data order, masking and dropout")
    # distillation
    teacher: str = option("", "teacher BortForMaskedLM folder (same vocabulary): adds the KD term")
    mlm_weight: float | None = option(None, "weight of the MLM loss (default 1.0, or 0.1 with a teacher)")
    distill_weight: float = option(0.5, "weight of the T^2 KL distillation term (with --teacher)")
    temperature: float = option(2.0, "distillation temperature T")
    # evaluation, checkpoints
    eval_every: int = option(100, "evaluate on the held-out masks every N steps (0: only at the end)")
    eval_seed: int = option(1234, "seed of the held-out masks, drawn once")
    eval_batch_size: int = option(64, "sequences per evaluation forward")
    checkpoint_every: int = option(100, "write the checkpoint every N steps (0: only when stopping)")
    resume: bool = option(True, "continue from OUT/checkpoint.npz if it exists")
    stop_after: int = option(0, "stop (checkpoint and exit, as if interrupted) after N steps in this "
                                "invocation (0: run to the end)")
    progress: bool = option(True, "show a tqdm progress bar")
    ship: str = option("", "also export the final model into this folder (e.g. weights/bort-tiny)")
    ship_dtype: str = option("float16", "dtype of the exported weights (float16 or float32)")

    def __post_init__(self) -> None:
        """Refuse values no run can use, naming the flag (the model's shape is checked by BortConfig)."""
        positive = ("steps", "batch_size", "eval_batch_size", "lr", "temperature")
        for name in positive:
            if not getattr(self, name) > 0:
                why = " (0 steps would export an untrained model)" if name == "steps" else ""
                raise ValueError(f"--{name.replace('_', '-')} must be positive, got {getattr(self, name)}{why}")
        for name in ("eval_every", "checkpoint_every", "stop_after", "clip", "weight_decay", "distill_weight"):
            if getattr(self, name) < 0:
                raise ValueError(f"--{name.replace('_', '-')} must be 0 or more, got {getattr(self, name)}")
        for name, lo, hi in (("warmup", 0.0, 1.0), ("beta1", 0.0, 0.999999), ("beta2", 0.0, 0.999999)):
            if not lo <= getattr(self, name) <= hi:
                raise ValueError(f"--{name} must be in [{lo:g}, {hi:g}], got {getattr(self, name)}")
        if not 0.0 < self.mask_prob < 1.0:
            raise ValueError(f"--mask-prob must be in (0, 1), got {self.mask_prob}")
        if not 0.0 <= self.salient_mask_prob < 1.0:
            raise ValueError(f"--salient-mask-prob must be in [0, 1), got {self.salient_mask_prob}")
        if self.ship_dtype not in ("float16", "float32"):
            raise ValueError(f"--ship-dtype must be float16 or float32, got {self.ship_dtype!r}")
        if not 3 <= self.seq_len <= self.max_position_embeddings:
            raise ValueError(f"--seq-len must be in [3, --max-position-embeddings = "
                             f"{self.max_position_embeddings}], got {self.seq_len}")
        self.model_config(self.vocab_size, 1)                  # BortConfig names any bad shape value

    def model_config(self, vocab_size: int, pad_token_id: int) -> BortConfig:
        """The BortConfig of the model trained: this config's model fields, taken by their names,
        with the tokenizer's vocabulary size and padding id."""
        shape = {k: v for k, v in dataclasses.asdict(self).items() if k in _MODEL_FIELDS}
        return BortConfig(**{**shape, "vocab_size": vocab_size, "pad_token_id": pad_token_id})


# Settings that may change between a stop and a resume without changing the result. Paths are among
# them: the data, tokenizer, teacher and initial weights behind them are compared by content digest.
RESUMABLE_CHANGES = ("stop_after", "progress", "resume", "ship", "ship_dtype", "eval_batch_size",
                     "checkpoint_every", "corpus", "tokenizer", "out", "teacher", "init")
PATH_FIELDS = ("corpus", "tokenizer", "init", "out", "teacher", "ship")


def config_from_args(argv: list[str] | None = None) -> PretrainConfig:
    """Command-line flags -> PretrainConfig; a bad value prints `error: ...` and exits with status 2."""
    return parse_config(PretrainConfig, argv, **_PARSER)


def build_parser():
    """The argparse parser of `python -m minibort.pretrain`: one flag per PretrainConfig field."""
    return _parser_for(PretrainConfig, **_PARSER)


_PARSER = {"prog": "python -m minibort.pretrain",
           "description": "Masked-LM pretraining of a small Bort on the stdlib corpus or your own text.",
           "epilog": CORPUS_LAYOUT}


# ------------------------------------------------------------------------------------ evaluation


def evaluate(model: BortForMaskedLM, ev: dict, batch_size: int = 64) -> dict:
    """Masked-token accuracy, perplexity exp(mean CE) and the mean loss on the held-out masks.

    Runs in eval mode (no dropout) and leaves the model in the mode it found; switching modes only
    flips a flag, so evaluating mid-run does not change the training that follows.
    """
    was_training = model.training
    model.eval()
    correct, nll, n = 0, 0.0, 0
    try:
        for i in range(0, len(ev["input_ids"]), batch_size):
            ids = ev["input_ids"][i:i + batch_size].astype(np.int64)
            att = ev["attention_mask"][i:i + batch_size].astype(np.int64)
            labels = ev["labels"][i:i + batch_size]
            sel = labels != -100                                                       # (B, T)
            if not sel.any():
                continue
            logp = log_softmax(model(ids, att, positions=sel).astype(np.float64))     # (M, V)
            y = labels[sel]                                                            # (M,)
            nll -= float(logp[np.arange(len(y)), y].sum())
            correct += int((logp.argmax(axis=1) == y).sum())
            n += len(y)
    finally:
        model.train(was_training)
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


# ------------------------------------------------------------------------------------ corpus, tokens


def corpus_folder(cfg: PretrainConfig) -> tuple[str, dict]:
    """The corpus a run reads -> (folder, record with the sha256 of its two splits).

    minibort's corpus (corpus.json present) is read; a folder with the user's train.txt and
    heldout.txt (no corpus.json) is read as the user's corpus; a missing or empty folder gets
    minibort's corpus built into it; any other folder is refused: minibort never writes over it.
    """
    from . import corpus as C
    cdir = cfg.corpus or os.path.join(cfg.out, "corpus")
    record_path = os.path.join(cdir, "corpus.json")
    if os.path.exists(record_path):
        with open(record_path, encoding="utf-8") as f:
            return cdir, json.load(f)
    present = sorted(os.listdir(cdir)) if os.path.isdir(cdir) else []
    if "train.txt" in present and "heldout.txt" in present:
        return cdir, user_corpus_record(cdir)
    if present:
        raise TrainingError(f"--corpus {cdir} holds {', '.join(present[:5])}{', ...' if len(present) > 5 else ''} "
                            f"but not a corpus minibort can read, and minibort does not write into a folder "
                            f"of other files. {CORPUS_LAYOUT.replace(chr(10), ' ')}")
    print(f"building minibort's stdlib corpus into {cdir}", flush=True)
    return cdir, C.build(cdir)


def user_corpus_record(cdir: str) -> dict:
    """What corpus.json says of minibort's corpus, computed from the user's train.txt and heldout.txt."""
    from . import corpus as C
    digest = hashlib.sha256()
    record: dict = {"source": "user files", "python_version": None, "files": {}}
    for fname in ("train.txt", "heldout.txt"):
        path = os.path.join(cdir, fname)
        with open(path, "rb") as f:
            data = f.read()
        try:
            docs = C.read_split(path)
        except UnicodeDecodeError as e:
            raise TrainingError(f"{path} is not UTF-8 text ({e}); save it as UTF-8") from None
        if not docs:
            raise TrainingError(f"{path} holds no text. {CORPUS_LAYOUT.replace(chr(10), ' ')}")
        digest.update(fname.encode() + b"\0" + data)
        record["files"][fname] = {"documents": len(docs), "paragraphs": sum(len(d) for d in docs),
                                  "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    record["sha256"] = digest.hexdigest()
    return record


def load_corpus_tokens(cfg: PretrainConfig, tok) -> tuple[dict, list, list]:
    """Corpus record and the two splits encoded as documents of paragraph id arrays (cached in OUT)."""
    from . import corpus as C
    cdir, record = corpus_folder(cfg)
    key = hashlib.sha256((record["sha256"] + tokenizer_digest(tok)).encode()).hexdigest()[:16]
    cache = os.path.join(cfg.out, f"tokens-{key}.npz")
    if os.path.exists(cache):
        with np.load(cache) as z:
            splits = {s: _unflatten(z[f"{s}_ids"], z[f"{s}_para"], z[f"{s}_doc"]) for s in ("train", "heldout")}
    else:
        splits, arrays = {}, {}
        for s in ("train", "heldout"):
            docs = C.read_split(os.path.join(cdir, f"{s}.txt"))
            splits[s] = [[np.array(tok.encode(p, add_special_tokens=False), dtype=np.int32) for p in d]
                         for d in docs]
            arrays.update(zip((f"{s}_ids", f"{s}_para", f"{s}_doc"), _flatten(splits[s])))
        savez_atomic(cache, arrays)
    return record, splits["train"], splits["heldout"]


def tokenizer_digest(tok) -> str:
    """sha256 of what every id decodes to: equal for tokenizers that encode alike, wherever they live."""
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
    from . import corpus as C
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
    cdir, _record = corpus_folder(cfg)
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
    model = BortForMaskedLM.from_pretrained(cfg.init, dtype=np.float32, mmap=False,   # never a view of the file
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


# ------------------------------------------------------------------------------------ the recipe


class MaskedLMStep:
    """The recipe's step for `Trainer`: rows of the packed sequences -> (loss, grads, tokens).

    Trims the batch to its longest row, BERT-masks it with its own generator (`mask_rng`, which the
    trainer checkpoints), asks the teacher for its logits at the masked positions, and returns the
    student's `loss_and_grads`. With `salient` ids and `cfg.salient_mask_prob`, those ids are
    selected with that probability instead of `cfg.mask_prob`.
    """

    def __init__(self, model: BortForMaskedLM, train_seqs: np.ndarray, sp: Specials, cfg: PretrainConfig,
                 teacher: BortForMaskedLM | None = None, salient: np.ndarray | None = None):
        self.model, self.train_seqs, self.sp, self.cfg, self.teacher = model, train_seqs, sp, cfg, teacher
        self.mask_rng = np.random.default_rng([cfg.seed, 2])
        self.select = cfg.mask_prob                                # scalar, or a (V,) table per id
        if cfg.salient_mask_prob:
            if salient is None:
                raise TrainingError("--salient-mask-prob needs the salient ids: pass "
                                    "salient=masking.salient_token_ids(tok)[0]")
            self.select = selection_table(sp.vocab_size, cfg.mask_prob, salient, cfg.salient_mask_prob)
        self.mlm_weight = cfg.mlm_weight if cfg.mlm_weight is not None else (0.1 if teacher else 1.0)

    def __call__(self, indices: np.ndarray) -> tuple[float, dict, int]:
        cfg = self.cfg
        ids, att = trim(self.train_seqs[indices], self.sp.pad)                    # (B, T'), (B, T')
        masked, labels = mask_tokens(ids, att, self.sp, self.mask_rng, self.select)
        teacher_logits = None
        if self.teacher is not None:
            teacher_logits = self.teacher(masked, att, positions=labels != -100)   # (M, V)
        loss, grads = self.model.loss_and_grads(
            masked, labels, att, teacher_logits=teacher_logits, mlm_weight=self.mlm_weight,
            distill_weight=cfg.distill_weight if self.teacher is not None else 0.0,
            temperature=cfg.temperature)
        return loss, grads, int(att.sum())


def mlm_trainer(cfg: PretrainConfig, train_seqs: np.ndarray, eval_set: dict, sp: Specials,
                model: BortForMaskedLM | None = None, teacher: BortForMaskedLM | None = None,
                checkpoint_path: str | None = None, digests: dict | None = None,
                salient: np.ndarray | None = None) -> Trainer:
    """The pretraining run as a `Trainer`: model (random, or `model`), AdamW, linear warm-up/decay,
    shuffled batches of the packed sequences, held-out evaluation every `eval_every` steps.

    The checkpoint's settings are the config and the content digests of the sequences, the held-out
    masks and whatever `digests` adds (tokenizer, teacher, initial weights), so a resume on other data
    is refused even behind the same paths.
    """
    model = model or BortForMaskedLM(cfg.model_config(sp.vocab_size, sp.pad), seed=cfg.seed)
    model.seed(cfg.seed + 1)                                                       # dropout
    opt = AdamW(model.params, lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), eps=cfg.eps,
                weight_decay=cfg.weight_decay, no_decay=no_decay_layernorm_and_bias)
    step = MaskedLMStep(model, train_seqs, sp, cfg, teacher, salient)
    settings = {**dataclasses.asdict(cfg), "data_sha256": content_digest(train_seqs, eval_set), **(digests or {})}
    if not cfg.salient_mask_prob:
        del settings["salient_mask_prob"]           # as before the flag existed: older checkpoints resume
    return Trainer(
        model, opt, step, shuffled_batches(len(train_seqs), cfg.batch_size, cfg.seed),
        max_steps=cfg.steps, schedule=Scheduler(opt, linear_warmup_decay(int(cfg.warmup * cfg.steps), cfg.steps)),
        clip=cfg.clip, evaluate=lambda: evaluate(model, eval_set, cfg.eval_batch_size),
        eval_every=cfg.eval_every, checkpoint_path=checkpoint_path, checkpoint_every=cfg.checkpoint_every,
        stop_after=cfg.stop_after, settings=settings, resumable=RESUMABLE_CHANGES,
        rngs={"mask": step.mask_rng}, progress=cfg.progress, desc="pretrain", items_name="tok",
        describe_eval=lambda r: f"held-out accuracy {r['accuracy']:.4f} perplexity {r['perplexity']:.2f}")


# ------------------------------------------------------------------------------------ the whole run


def pretrain(cfg: PretrainConfig, argv: list[str] | None = None) -> dict:
    """Corpus -> vocabulary -> packed sequences -> training -> OUT/model with training.json.

    `--out` is locked for the whole run (a second run on it is refused with a TrainingError).
    """
    with run_lock(cfg.out):
        return _pretrain(cfg, argv)


def _pretrain(cfg: PretrainConfig, argv: list[str] | None) -> dict:
    tok = get_tokenizer(cfg)
    sp = specials_of(tok)
    record, train_docs, held_docs = load_corpus_tokens(cfg, tok)
    train_seqs = pack(train_docs, cfg.seq_len, sp)                       # (S, T)
    held_seqs = pack(held_docs, cfg.seq_len, sp)                         # (S', T)
    if len(held_seqs) == 0:
        raise TrainingError("the held-out split holds no text; put some documents into heldout.txt")
    ev = heldout_eval_set(held_seqs, sp, cfg.eval_seed, cfg.mask_prob)
    base = baselines(train_seqs, ev, sp)
    n_train_tokens = int((train_seqs != sp.pad).sum())
    print(f"corpus sha256 {record['sha256'][:16]}... ({record.get('source') or 'Python ' + record['python_version']}); "
          f"{len(train_seqs)} training sequences ({n_train_tokens:,} tokens), {len(held_seqs)} held-out; "
          f"{int((ev['labels'] != -100).sum())} fixed held-out masks", flush=True)
    digests = {"corpus_sha256": record["sha256"], "tokenizer_sha256": tokenizer_digest(tok)}
    teacher = None
    if cfg.teacher:
        teacher = BortForMaskedLM.from_pretrained(cfg.teacher, mmap=False).eval()   # read once, in memory
        if teacher.config.vocab_size != sp.vocab_size:
            raise TrainingError(f"the teacher's vocabulary ({teacher.config.vocab_size}) is not the "
                                f"student's ({sp.vocab_size}); distillation needs the same tokenizer")
        digests["teacher_sha256"] = content_digest(teacher.params)
    salient, salient_words = salient_token_ids(tok) if cfg.salient_mask_prob else (None, [])
    if salient is not None:
        digests["salient_sha256"] = content_digest(salient)
        print(f"salient-token masking: {len(salient)} ids of Python's names selected with probability "
              f"{cfg.salient_mask_prob}", flush=True)
    init_model, init_record = initial_model(cfg, sp.vocab_size, sp.pad) if cfg.init else (None, None)
    if init_model is not None:
        digests["init_sha256"] = content_digest(init_model.params)
    ckpt = os.path.join(cfg.out, "checkpoint.npz")
    trainer = mlm_trainer(cfg, train_seqs, ev, sp, model=init_model, teacher=teacher, checkpoint_path=ckpt,
                          digests=digests, salient=salient)
    if cfg.resume and os.path.exists(ckpt):
        trainer.load(ckpt)
        print(f"resumed from {ckpt} at step {trainer.state['step']}", flush=True)
    n_params = trainer.model.num_parameters
    print(f"model: {n_params:,} parameters; {cfg.steps} steps of {cfg.batch_size} x {cfg.seq_len}", flush=True)
    result = trainer.run(log=lambda m: print(m, flush=True))
    if not result["finished"]:
        return result
    final = trainer.state["evals"][-1]
    s = trainer.state
    out_dir = os.path.join(cfg.out, "model")
    trainer.model.save_pretrained(out_dir, tokenizer=tok)
    savez_atomic(os.path.join(out_dir, "heldout_eval.npz"), ev)
    training = {
        "corpus": {"sha256": record["sha256"], "python_version": record["python_version"],
                   "files": {k: {kk: v[kk] for kk in ("documents", "bytes", "sha256")}
                             for k, v in record["files"].items()},
                   "train_sequences": len(train_seqs), "train_tokens": n_train_tokens,
                   "heldout_sequences": len(held_seqs)},
        "python_version": sys.version.split()[0],
        "numpy_version": np.__version__,
        "command": portable_command(_PARSER["prog"], sys.argv[1:] if argv is None else argv, PATH_FIELDS),
        "config": {k: portable_path(k, v, PATH_FIELDS) for k, v in dataclasses.asdict(cfg).items()},
        "init": init_record,
        "parameters": n_params,
        "steps": s["step"], "epochs": s["epoch"] + s["batch"] * cfg.batch_size / max(len(train_seqs), 1),
        "tokens_seen": s["items"], "wall_time_s": round(s["wall_time"], 1),
        "tokens_per_s": round(s["items"] / max(s["wall_time"], 1e-9), 1),
        "heldout": {"accuracy": final["accuracy"], "perplexity": final["perplexity"],
                    "loss": final["loss"], "masked_tokens": final["masked_tokens"],
                    "eval_seed": cfg.eval_seed, "mask_prob": cfg.mask_prob,
                    "masks_file": "heldout_eval.npz"},
        "baselines": base,
        **({"salient_masking": {"prob": cfg.salient_mask_prob, "ids": len(salient), "words": salient_words}}
           if salient is not None else {}),
        "evals": s["evals"],
        "loss_curve": [round(x, 4) for x in s["losses"]],
        "lr_curve_every_10": [float(f"{x:.3g}") for x in s["lrs"][::10]],
    }
    write_text_atomic(os.path.join(out_dir, "training.json"), json.dumps(training, indent=1) + "\n")
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
    from .formats.safetensors import save_file
    os.makedirs(dest, exist_ok=True)
    model = BortForMaskedLM.from_pretrained(model_dir)
    for name in ("config.json", "vocab.json", "merges.txt"):
        with open(os.path.join(model_dir, name), "rb") as f:
            write_bytes_atomic(os.path.join(dest, name), f.read())
    with np.load(os.path.join(model_dir, "heldout_eval.npz")) as z:
        ev = {k: z[k] for k in z.files}
    write_bytes_atomic(os.path.join(dest, "heldout_eval.npz"), lambda f: np.savez_compressed(f, **ev))
    save_file({k: v.astype(dtype) for k, v in model.state_dict().items()},
              os.path.join(dest, "model.safetensors"), metadata={"format": "pt"})
    shipped = BortForMaskedLM.from_pretrained(dest)
    r = evaluate(shipped, ev)
    with open(os.path.join(model_dir, "training.json"), encoding="utf-8") as f:
        record = json.load(f)
    record["heldout_training_weights"] = record["heldout"]
    record["heldout"] = {**record["heldout"], "accuracy": r["accuracy"], "perplexity": r["perplexity"],
                         "loss": r["loss"], "weights_dtype": dtype}
    write_text_atomic(os.path.join(dest, "training.json"), json.dumps(record, indent=1) + "\n")
    return record


def main(argv: list[str] | None = None) -> int:
    """`python -m minibort.pretrain`: 0 when finished, 3 when stopped (resumable), 2 on an error."""
    argv = sys.argv[1:] if argv is None else argv
    cfg = config_from_args(argv)
    try:
        res = pretrain(cfg, argv)
    except (ValueError, OSError, FloatingPointError) as e:    # TrainingError, InputError, ConfigError, ...
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:                                  # before training began: nothing to save
        print("error: interrupted before training began; nothing was saved", file=sys.stderr)
        return 130
    return 0 if res.get("finished") else 3


if __name__ == "__main__":
    sys.exit(main())
