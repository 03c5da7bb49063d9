"""Fine-tune Bort on labelled sentences: a GLUE task folder or your own CSV / TSV / JSONL files.

    python -m minibort.finetune --task sst2 --data glue/SST-2 --out runs/sst2
    python -m minibort.finetune --train train.csv --dev dev.csv --text-column review --out runs/mine
    python -m minibort.finetune --help                        # every FinetuneConfig field

    from minibort.finetune import FinetuneConfig, finetune, predict
    result = finetune(FinetuneConfig(model="bort-tiny", train="train.tsv", dev="dev.tsv", out=None))
    result.score, result.best_epoch; predict(result.model, result.tokenizer, dataset)

One run, in order:

1. data (`minibort.data`): train and dev (and test files, if any) as Datasets; the label names come
   from the task or the training file, and are saved with the model as `id2label`;
2. the model: `BortForSequenceClassification` from `--model` (an embedded name such as bort-tiny, a
   folder, a hub id), with a fresh head for those labels (or the folder's own head, if it was
   fine-tuned for the same labels), and its tokenizer;
3. every example encoded once, truncated to `--max-length` (default: the model's positions);
   batches are padded only to their longest row, and rows of similar length are batched together
   (`--bucket`: shuffled, then sorted by length within windows of that many batches);
4. the loop (`minibort.trainer.Trainer`): loss and gradients, global-norm clip, optimizer step,
   schedule step; the dev metric after every epoch; early stopping after `--patience` epochs without
   improvement; the best dev epoch's weights restored at the end. One of two recipes:

       transformers  AdamW (eps 1e-8; no decay on LayerNorm and biases), linear warm-up over
                     warmup_ratio of all steps then linear decay to 0; pooler head.
       bort          alexa/bort's finetune_bort.py: "bertadam" (Adam without bias correction, eps 1e-6,
                     decay lr * wd * p, none on LayerNorm and biases); linear warm-up over warmup_ratio
                     of the ramp-up steps (n_train / batch * ramp_up_epochs), linear decay to the end
                     of them, then lr held at a floor of 1e-7 for the remaining epochs; Bort's head
                     (dropout, dense + tanh, dropout, dense; U(-0.5, 0.5)); its defaults batch 8,
                     lr 5e-5, weight decay 110, warm-up 0.45.

   Both clip the global gradient norm at 1.0. Dropout is off unless `--dropout` (or the model's
   config) sets it; the seed fixes the head's initialisation, the batches and dropout, so the same
   seed gives the same run bit for bit;
5. with `--out`: OUT/model/ (config.json with id2label, model.safetensors, the tokenizer), which
   `BortForSequenceClassification.from_pretrained` and transformers' BertForSequenceClassification
   load; OUT/metrics.json (dev metrics per epoch and at the best epoch, test metrics where the test
   file has labels); OUT/predictions.tsv (GLUE's `index\\tprediction`) for each test file;
   OUT/checkpoint.npz, from which an interrupted run (Ctrl-C) resumes when the same command runs again.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import sys
import warnings
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from . import layers as L
from .batches import Encoded, bucketed_batches, encode, pad
from .config import BortConfig
from .data import DataError, Dataset, glue_task, load_file, load_glue, read_glue_indices
from .metrics import glue_metrics, main_metric
from .model import BortForSequenceClassification
from .optim import AdamW, BertAdam, Scheduler, linear_warmup_decay, no_decay_layernorm_and_bias
from .trainer import Trainer, content_digest, option, parse_config, run_lock


class FinetuneError(ValueError):
    """A fine-tuning run cannot start as asked; the message names the problem and the fix."""


# Defaults that differ between the two recipes; a field left at None takes its recipe's value.
RECIPES: dict[str, dict[str, Any]] = {
    "transformers": {"batch_size": 16, "lr": 5e-5, "weight_decay": 0.01, "warmup_ratio": 0.1,
                     "classifier_head": "pooler"},
    "bort": {"batch_size": 8, "lr": 5e-5, "weight_decay": 110.0, "warmup_ratio": 0.45,
             "classifier_head": "bort"},
}
BORT_LR_FLOOR = 1e-7


@dataclass
class FinetuneConfig:
    """Everything a fine-tuning run depends on; each field is a flag of `python -m minibort.finetune`."""

    model: str = option("bort-tiny", "model to start from: an embedded name (bort-tiny), a folder, a hub id, "
                                     "or a folder with the original bort.params")
    task: str = option("", "GLUE task (cola, sst2, mrpc, qqp, stsb, mnli, qnli, rte, wnli), read from --data")
    data: str = option("", "the GLUE task's folder (train.tsv, dev.tsv, test.tsv)")
    train: str = option("", "training file (.csv, .tsv, .jsonl) when not using --task")
    dev: str = option("", "dev file: evaluated every epoch, picks the best epoch")
    test: str = option("", "test file: predictions written to OUT/predictions.tsv (scored if labelled)")
    text_column: str = option("text", "column holding the text")
    text_pair_column: str | None = option(None, "column holding the second text of a pair task")
    label_column: str = option("label", "column holding the label")
    labels: str = option("", "class names in id order, comma-separated (default: the sorted labels of --train)")
    out: str | None = option(None, "output folder: model/, metrics.json, predictions.tsv, checkpoint.npz "
                                    "(none: write nothing)")
    epochs: int = option(3, "training epochs")
    batch_size: int | None = option(None, "examples per step (transformers 16, bort 8)")
    lr: float | None = option(None, "peak learning rate (5e-5)")
    weight_decay: float | None = option(None, "weight decay, none on LayerNorm and biases (transformers 0.01, "
                                              "bort 110)")
    warmup_ratio: float | None = option(None, "share of the (ramp-up) steps spent warming up (transformers "
                                              "0.1, bort 0.45)")
    ramp_up_epochs: int = option(1, "bort recipe: epochs over which the lr rises and decays to its floor")
    max_length: int | None = option(None, "tokens per example after truncation (default: the model's positions)")
    seed: int = option(0, "seed of the head's initialisation, the batch order and dropout")
    patience: int = option(0, "stop after this many epochs without a better dev metric (0: never)")
    recipe: Literal["transformers", "bort"] = option("transformers", "optimizer, schedule and head")
    classifier_head: Literal["pooler", "bort"] | None = option(None, "head on <s> (default: the recipe's)")
    dropout: float | None = option(None, "dropout everywhere (default: the model's config)")
    clip: float = option(1.0, "global gradient-norm clip (0: off)")
    metric: str | None = option(None, "dev metric that picks the best epoch (default: the task's own)")
    eval_batch_size: int = option(64, "examples per evaluation forward")
    bucket: int = option(50, "batch rows of similar length: sort within windows of this many batches "
                             "(0 or 1: plain shuffled batches)")
    dtype: Literal["float32", "float64"] = option("float32", "parameter and compute dtype")
    resume: bool = option(True, "continue from OUT/checkpoint.npz if it exists")
    stop_after: int = option(0, "stop (checkpoint and exit, as if interrupted) after N steps (0: never)")
    progress: bool = option(True, "show a tqdm progress bar")

    def __post_init__(self) -> None:
        if self.recipe not in RECIPES:
            raise ValueError(f"recipe must be one of {list(RECIPES)}, got {self.recipe!r}")
        if self.epochs < 1:
            raise ValueError(f"epochs must be at least 1, got {self.epochs}")
        for name in ("batch_size", "max_length"):
            v = getattr(self, name)
            if v is not None and v < 1:
                raise ValueError(f"{name} must be positive, got {v}")
        if self.dropout is not None and not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")

    def resolved(self) -> FinetuneConfig:
        """A copy with every None that has a recipe default filled in."""
        d = dataclasses.asdict(self)
        for k, v in RECIPES[self.recipe].items():
            if d[k] is None:
                d[k] = v
        return FinetuneConfig(**d)


@dataclass
class FinetuneResult:
    """What `finetune` returns. `model` holds the best dev epoch's weights."""

    model: BortForSequenceClassification
    tokenizer: Any
    metric_name: str
    score: float
    dev_metrics: dict
    best_epoch: int
    history: list[dict]
    test_metrics: dict = field(default_factory=dict)
    test_predictions: dict = field(default_factory=dict)
    finished: bool = True
    stopped_early: bool = False
    config: FinetuneConfig | None = None


# ------------------------------------------------------------------------------------ data


def read_datasets(cfg: FinetuneConfig) -> tuple[Dataset, dict[str, Dataset], dict[str, Dataset]]:
    """(train, {name: dev set}, {name: test set}) from --task/--data or --train/--dev/--test.
    The first dev set picks the best epoch (MNLI: dev_matched; dev_mismatched is reported too)."""
    if cfg.task:
        if not cfg.data:
            raise FinetuneError(f"--task {cfg.task} needs --data, the task's folder of the GLUE distribution")
        t = glue_task(cfg.task)
        train = load_glue(t.name, cfg.data, "train")
        devs = [s for s in t.splits if s.startswith("dev")]
        tests = [s for s in t.splits if s.startswith("test")]
        dev = {s: load_glue(t.name, cfg.data, s) for s in devs}
        test = {}
        for s in tests:
            try:
                test[s] = load_glue(t.name, cfg.data, s)
            except DataError as e:
                if "no " + s + ".tsv" not in str(e):
                    raise
        return train, dev, test
    if not cfg.train or not cfg.dev:
        raise FinetuneError("give --task NAME --data DIR, or --train FILE and --dev FILE")
    cols = {"text_column": cfg.text_column, "text_pair_column": cfg.text_pair_column,
            "label_column": cfg.label_column}
    train = load_file(cfg.train, labels=cfg.labels.split(",") if cfg.labels else None, **cols)
    same = {"labels": train.labels or None, "regression": train.is_regression}
    dev = {"dev": load_file(cfg.dev, **cols, **same)}
    test = {"test": load_file(cfg.test, **cols, **same)} if cfg.test else {}
    return train, dev, test


def check_datasets(train: Dataset, dev: Dataset) -> None:
    """Refuse what cannot be trained or selected on: unlabelled sets, mismatched labels, a one-class dev set."""
    for name, ds in (("train", train), ("dev", dev)):
        if len(ds) == 0:
            raise FinetuneError(f"the {name} set ({ds.name}) has no examples")
        if not ds.is_labelled:
            raise FinetuneError(f"the {name} set ({ds.name}) has examples without labels; label every "
                                "example (unlabelled files go to --test)")
    if train.labels != dev.labels:
        raise FinetuneError(f"train labels {train.labels} and dev labels {dev.labels} differ; both sets must "
                            "use the same label names (pass --labels to fix the order)")
    train.label_ids()                           # raises DataError naming an unknown label
    if not dev.is_regression and len(np.unique(dev.label_ids())) < 2:
        raise FinetuneError(f"the dev set ({dev.name}) holds only one class "
                            f"({dev.labels[int(dev.label_ids()[0])]!r}): every metric but accuracy is "
                            "undefined and a constant guess scores 100 %; give it examples of each class")


# ------------------------------------------------------------------------------------ model


_BASE_CACHE: dict[tuple, tuple[BortConfig, dict]] = {}


def _folder_key(folder: str) -> tuple:
    """A folder's path and its files' modification times: a cache key that a rewritten file changes."""
    return (os.path.abspath(folder),
            *((f, os.stat(os.path.join(folder, f)).st_mtime_ns) for f in sorted(os.listdir(folder))))


def _load_base(name: str, dtype) -> tuple[BortConfig, dict[str, np.ndarray]]:
    """Config and state dict of `name`, read once per process (Agora fine-tunes one model many times);
    callers copy the arrays before training them."""
    from .checkpoint import load_pretrained, resolve
    key = (_folder_key(resolve(name, need="model")), np.dtype(dtype).name)
    if key not in _BASE_CACHE:
        if len(_BASE_CACHE) > 4:
            _BASE_CACHE.clear()
        _BASE_CACHE[key] = load_pretrained(name, dtype=dtype, mmap=False)
    return _BASE_CACHE[key]


_TOKENIZER_CACHE: dict[tuple, Any] = {}


def _load_tokenizer(name: str):
    """The tokenizer of `name`, read once per process (it is never modified, so runs can share it)."""
    from .checkpoint import resolve
    from .tokenizer import Tokenizer
    key = _folder_key(resolve(name, need="tokenizer"))
    if key not in _TOKENIZER_CACHE:
        if len(_TOKENIZER_CACHE) > 4:
            _TOKENIZER_CACHE.clear()
        _TOKENIZER_CACHE[key] = Tokenizer.from_pretrained(name)
    return _TOKENIZER_CACHE[key]


def label_names(config: BortConfig) -> list[str] | None:
    """The label names a fine-tuned model was saved with (config.json's id2label), or None when the
    config holds only transformers' default LABEL_i names."""
    id2label = config.extra.get("id2label")
    if not id2label:
        return None
    return [str(id2label[k]) for k in sorted(id2label, key=int)]


def build_model(cfg: FinetuneConfig, train: Dataset) -> BortForSequenceClassification:
    """The classifier to fine-tune: cfg.model's encoder, and its head if it was fine-tuned for exactly
    these labels, else a fresh head (seeded by cfg.seed) of the configured kind."""
    dtype = np.dtype(cfg.dtype)
    config, state = _load_base(cfg.model, dtype)
    has_head = "classifier.weight" in state
    n = train.num_labels
    if has_head:
        names = label_names(config)
        held = "regression" if config.num_labels == 1 else (names or f"{config.num_labels} classes")
        want = "regression" if train.is_regression else train.labels
        fits = config.num_labels == n and (names is None or train.is_regression or names == train.labels)
        if not fits:
            raise FinetuneError(f"{cfg.model} was fine-tuned for {held}; this data has {want}. Start from the "
                                "pretrained model instead (e.g. --model bort-tiny), or give data with the "
                                "same labels")
    d = config.to_dict()
    d["num_labels"] = n
    if train.is_regression:
        d.pop("id2label", None)
        d.pop("label2id", None)
    else:
        d["id2label"] = {str(i): name for i, name in enumerate(train.labels)}
        d["label2id"] = {name: i for i, name in enumerate(train.labels)}
    if cfg.dropout is not None:
        d["hidden_dropout_prob"] = d["attention_probs_dropout_prob"] = cfg.dropout
    head = cfg.classifier_head or config.extra.get("classifier_head") or RECIPES[cfg.recipe]["classifier_head"]
    d["classifier_head"] = head
    params = {k: np.array(v, dtype=dtype) for k, v in state.items()}               # our own copies
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*newly initialised.*")          # the fresh head
        return BortForSequenceClassification(BortConfig.from_dict(d), params, dtype=dtype, seed=cfg.seed,
                                             classifier_head=head)


def load_classifier(folder: str | os.PathLike, dtype=np.float32):
    """(model, tokenizer) of a fine-tuned folder (OUT/model of a run)."""
    from .tokenizer import Tokenizer
    model = BortForSequenceClassification.from_pretrained(folder, dtype=dtype, mmap=False)
    return model, Tokenizer.from_pretrained(folder)


def model_max_length(model, tokenizer, max_length: int | None) -> int:
    """The truncation length: `max_length`, or the model's positions; refused if over them."""
    limit = model.config.max_position_embeddings
    tok_limit = getattr(tokenizer, "model_max_length", None)
    if tok_limit:
        limit = min(limit, tok_limit)
    if max_length is None:
        return limit
    if max_length > limit:
        raise FinetuneError(f"--max-length {max_length} is over the model's {limit} positions; use at most "
                            f"{limit}")
    return max_length


# ------------------------------------------------------------------------------------ the recipes


def bort_schedule(lr: float, num_train_steps: int, num_warmup_steps: int,
                  floor: float = BORT_LR_FLOOR):
    """alexa/bort's lr multiplier at step s: s / warmup during the warm-up, then
    max(floor, lr (1 - (s - warmup) / (steps - warmup))) / lr, so the lr stays at `floor` (1e-7)
    once the ramp-up steps are over."""
    def fn(step: int) -> float:
        if step < num_warmup_steps:
            return step / num_warmup_steps
        offset = (step - num_warmup_steps) / max(1, num_train_steps - num_warmup_steps)
        return max(floor, lr - offset * lr) / lr
    return fn


def make_optimizer(recipe: str, params: dict, lr: float, weight_decay: float, warmup_ratio: float,
                   steps_per_epoch: int, epochs: int, n_train: int = 0, batch_size: int = 1,
                   ramp_up_epochs: int = 1) -> tuple[AdamW | BertAdam, Scheduler]:
    """The optimizer and schedule of a recipe (see the module docstring)."""
    if recipe == "transformers":
        total = steps_per_epoch * epochs
        opt = AdamW(params, lr=lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=weight_decay,
                    no_decay=no_decay_layernorm_and_bias)
        return opt, Scheduler(opt, linear_warmup_decay(math.ceil(warmup_ratio * total), total))
    if recipe == "bort":
        ramp = int(n_train / batch_size * ramp_up_epochs)              # finetune_bort.py's num_train_steps
        opt = BertAdam(params, lr=lr, betas=(0.9, 0.999), eps=1e-6, weight_decay=weight_decay,
                       no_decay=no_decay_layernorm_and_bias)
        return opt, Scheduler(opt, bort_schedule(lr, ramp, int(ramp * warmup_ratio)))
    raise FinetuneError(f"unknown recipe {recipe!r}; use 'transformers' or 'bort'")


# ------------------------------------------------------------------------------------ prediction


def _logits(model, enc: Encoded, pad_id: int, batch_size: int) -> np.ndarray:
    """(N, C) logits, computed in length-sorted batches (little padding), in the examples' order."""
    was_training = model.training
    model.eval()
    try:
        order = np.argsort(enc.lengths, kind="stable")
        out = None
        for i in range(0, len(order), batch_size):
            idx = order[i:i + batch_size]
            ids, mask = pad([enc.ids[k] for k in idx], pad_id)
            z = model(ids, mask)                                                     # (b, C)
            if out is None:
                out = np.empty((len(order), z.shape[1]), dtype=z.dtype)
            out[idx] = z
    finally:
        model.train(was_training)
    return out


def predict_logits(model, tokenizer, dataset: Dataset, batch_size: int = 32,
                   max_length: int | None = None) -> np.ndarray:
    """(N, C) logits of the examples of `dataset` (labels are not needed)."""
    enc = encode(tokenizer, dataset, model_max_length(model, tokenizer, max_length))
    return _logits(model, enc, tokenizer.pad_token_id, batch_size)


def predict(model, tokenizer, dataset: Dataset, batch_size: int = 32, max_length: int | None = None) -> np.ndarray:
    """(N,) predicted label ids (int64), or (N,) predicted values (regression, num_labels == 1)."""
    z = predict_logits(model, tokenizer, dataset, batch_size, max_length)
    return z[:, 0] if model.config.num_labels == 1 else z.argmax(axis=1).astype(np.int64)


def predict_proba(model, tokenizer, dataset: Dataset, batch_size: int = 32,
                  max_length: int | None = None) -> np.ndarray:
    """(N, C) class probabilities (softmax of the logits), columns in label-id order."""
    if model.config.num_labels == 1:
        raise FinetuneError("predict_proba needs a classifier; this model is a regression (num_labels 1): "
                            "use predict")
    probs, _ = L.softmax(predict_logits(model, tokenizer, dataset, batch_size, max_length).astype(np.float64))
    return probs                                                                      # (N, C)


def score(metric_kind: str | None, logits: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """The metrics of `metric_kind` (a GLUE task, "regression" or None) and the mean loss."""
    if logits.shape[1] == 1:
        pred = logits[:, 0].astype(np.float64)
        loss = float(np.mean((pred - labels) ** 2))
    else:
        z = logits.astype(np.float64)
        logz = np.log(np.exp(z - z.max(axis=1, keepdims=True)).sum(axis=1)) + z.max(axis=1)   # (N,)
        loss = float(np.mean(logz - z[np.arange(len(labels)), labels]))
        pred = z.argmax(axis=1)
    return {**glue_metrics(metric_kind, labels, pred), "loss": loss}


# ------------------------------------------------------------------------------------ the run


def finetune(cfg: FinetuneConfig, train: Dataset | None = None, dev: Dataset | None = None,
             test: Dataset | None = None, progress: bool = True) -> FinetuneResult:
    """Fine-tune cfg.model on train, pick the best epoch on dev, predict test.

    Datasets given here replace reading cfg's files (Agora passes data in memory). cfg.out=None
    writes nothing. progress=False prints nothing at all (cfg.progress=False hides only the bar).
    Returns a FinetuneResult whose model holds the best dev epoch's weights.
    """
    cfg = cfg.resolved()
    if (train is None) != (dev is None):
        raise FinetuneError("pass both train and dev as Datasets, or neither (then cfg names the files)")
    if train is None:
        train, devs, tests = read_datasets(cfg)
    else:
        devs = {"dev": dev}
        tests = {"test": test} if test is not None else {}
    dev_name = next(iter(devs))
    dev = devs[dev_name]
    check_datasets(train, dev)
    kind = glue_task(cfg.task).name if cfg.task else ("regression" if train.is_regression else None)
    metric_name = cfg.metric or main_metric(kind)

    tokenizer = _load_tokenizer(cfg.model)
    model = build_model(cfg, train)
    max_len = model_max_length(model, tokenizer, cfg.max_length)
    pad_id = tokenizer.pad_token_id
    enc_train = encode(tokenizer, train, max_len)
    enc_devs = {name: encode(tokenizer, d, max_len) for name, d in devs.items()}
    y_train = enc_train.labels

    batches = bucketed_batches(enc_train.lengths, cfg.batch_size, cfg.seed, cfg.bucket)
    steps_per_epoch = len(batches(0))
    opt, sched = make_optimizer(cfg.recipe, model.params, cfg.lr, cfg.weight_decay, cfg.warmup_ratio,
                                steps_per_epoch, cfg.epochs, len(train), cfg.batch_size, cfg.ramp_up_epochs)

    def step_fn(idx: np.ndarray):
        ids, mask = pad([enc_train.ids[k] for k in idx], pad_id)                     # (b, T)
        loss, grads = model.loss_and_grads(ids, y_train[idx], mask)
        return loss, grads, len(idx)

    def evaluate() -> dict:
        r = score(kind, _logits(model, enc_devs[dev_name], pad_id, cfg.eval_batch_size), enc_devs[dev_name].labels)
        for name, enc in enc_devs.items():
            if name != dev_name:
                extra = score(kind, _logits(model, enc, pad_id, cfg.eval_batch_size), enc.labels)
                r.update({f"{name}/{k}": v for k, v in extra.items()})
        return r

    if metric_name not in evaluate_names(kind):
        raise FinetuneError(f"--metric {metric_name!r} is not computed for this task; choose one of "
                            f"{sorted(evaluate_names(kind))}")
    settings = {**{k: v for k, v in dataclasses.asdict(cfg).items() if k not in RESUMABLE},
                "data": content_digest({"train": repr(train.examples), "dev": repr(dev.examples),
                                        "labels": repr(train.labels)})}
    out = cfg.out
    show = progress and cfg.progress                       # the tqdm bar
    log = print if progress else _quiet                     # a line per epoch (none for Agora's fits)
    trainer = Trainer(model, opt, step_fn, batches, max_epochs=cfg.epochs, schedule=sched, clip=cfg.clip,
                      evaluate=evaluate, eval_each_epoch=True, metric=metric_name, higher_is_better=True,
                      patience=cfg.patience, keep_best=True, settings=settings, resumable=RESUMABLE,
                      checkpoint_path=os.path.join(out, "checkpoint.npz") if out else None,
                      stop_after=cfg.stop_after, progress=show, desc="finetune",
                      items_name="ex", describe_eval=lambda r: _describe(r, metric_name))
    if out:
        _check_out_folder(out)
        with run_lock(out):
            ckpt = os.path.join(out, "checkpoint.npz")
            if cfg.resume and os.path.exists(ckpt):
                trainer.load(ckpt)
            run = trainer.run(log=log)
            result = _result(cfg, trainer, run, model, tokenizer, metric_name, kind, tests, max_len)
            if run["finished"]:
                write_outputs(out, cfg, result, train, tests)
            return result
    run = trainer.run(log=log)
    return _result(cfg, trainer, run, model, tokenizer, metric_name, kind, tests, max_len)


# Fields that may change between a stop and a resume without changing the result.
RESUMABLE = ("out", "resume", "stop_after", "progress", "eval_batch_size", "test")


def _quiet(message: str) -> None:
    """A log function that drops its message (runs with progress off, e.g. Agora's many fits)."""


def evaluate_names(kind: str | None) -> set[str]:
    """The names `score` returns for a task kind (what --metric may choose)."""
    dummy = np.array([0.0, 1.0, 2.0]) if kind in ("stsb", "regression") else np.array([0, 1, 1])
    return set(glue_metrics(kind, dummy, dummy)) | {"loss"}


def _describe(r: dict, metric_name: str) -> str:
    """The dev metrics of one evaluation, the one that picks the best epoch first (the trainer adds
    the step, the epoch, the training loss and the speed)."""
    others = ", ".join(f"{k} {v:.4f}" for k, v in r.items()
                       if k not in ("step", "epoch", metric_name) and isinstance(v, float))
    return f"dev {metric_name} {r[metric_name]:.4f}; {others}"


def _result(cfg, trainer, run, model, tokenizer, metric_name, kind, tests, max_len) -> FinetuneResult:
    """The run's record: one history row per evaluation (with the mean training loss since the one
    before), the best epoch's dev metrics, and test predictions (scored where labelled)."""
    s = trainer.state
    history = []
    prev_step = 0
    for r in s["evals"]:
        losses = s["losses"][prev_step:r["step"]]
        history.append({"epoch": r["epoch"], "step": r["step"],
                        "train_loss": float(np.mean(losses)) if losses else None,
                        "lr": s["lrs"][r["step"] - 1] if r["step"] else None,
                        **{k: v for k, v in r.items() if k not in ("step", "epoch")}})
        prev_step = r["step"]
    best = s["best"] or {}
    best_epoch = int(best.get("epoch", 0))
    dev_metrics = next((h for h in history if h["epoch"] == best_epoch), {})
    dev_metrics = {k: v for k, v in dev_metrics.items() if k not in ("epoch", "step", "train_loss", "lr")}
    test_metrics, test_predictions = {}, {}
    if run["finished"]:
        for name, ds in tests.items():
            enc = encode(tokenizer, ds, max_len)
            z = _logits(model, enc, tokenizer.pad_token_id, cfg.eval_batch_size)
            test_predictions[name] = z[:, 0] if z.shape[1] == 1 else z.argmax(axis=1)
            if enc.labels is not None:
                test_metrics[name] = score(kind, z, enc.labels)
    model.eval()
    return FinetuneResult(model, tokenizer, metric_name, float(best.get(metric_name, float("nan"))), dev_metrics,
                          best_epoch, history, test_metrics, test_predictions, run["finished"],
                          bool(run["stopped_early"]), cfg)


def _check_out_folder(out: str) -> None:
    """Refuse a folder holding files this command did not write (user files are never overwritten)."""
    if not os.path.isdir(out):
        return
    ours = {"checkpoint.npz", "metrics.json", "model", ".lock"}
    foreign = [f for f in os.listdir(out)
               if f not in ours and not (f.startswith("predictions") and f.endswith(".tsv"))]
    if foreign:
        raise FinetuneError(f"--out {out} holds files this command did not write (e.g. {min(foreign)}); "
                            "choose an empty or new folder")


def write_outputs(out: str, cfg: FinetuneConfig, result: FinetuneResult, train: Dataset,
                  tests: dict[str, Dataset]) -> None:
    """OUT/model (weights, config with id2label, tokenizer), metrics.json, predictions*.tsv."""
    from ._files import write_text_atomic
    model_dir = os.path.join(out, "model")
    result.model.save_pretrained(model_dir)
    result.tokenizer.save_pretrained(model_dir)
    for name, pred in result.test_predictions.items():
        ds = tests[name]
        try:
            index = read_glue_indices(cfg.task, cfg.data, name) if cfg.task else None
        except DataError:
            index = None
        index = index or [str(i) for i in range(len(ds))]
        if train.is_regression:
            values = [f"{v:.3f}" for v in pred]
        else:
            values = [train.labels[int(i)] for i in pred]
        fname = "predictions.tsv" if len(tests) == 1 else f"predictions_{name}.tsv"
        write_text_atomic(os.path.join(out, fname),
                          "index\tprediction\n" + "".join(f"{i}\t{v}\n" for i, v in zip(index, values)))
    record = {
        "task": cfg.task or None, "metric": result.metric_name, "best_epoch": result.best_epoch,
        "score": result.score, "dev": result.dev_metrics, "test": result.test_metrics,
        "history": result.history, "labels": train.labels, "train_examples": len(train),
        "stopped_early": result.stopped_early,
        "config": dataclasses.asdict(cfg), "python_version": sys.version.split()[0],
        "numpy_version": np.__version__,
    }
    write_text_atomic(os.path.join(out, "metrics.json"), json.dumps(record, indent=1, default=_jsonable) + "\n")


def _jsonable(x):
    if isinstance(x, np.generic):
        return x.item()
    raise TypeError(f"not JSON-serialisable: {type(x).__name__}")


# ------------------------------------------------------------------------------------ command line


def main(argv: list[str] | None = None) -> int:
    cfg = parse_config(FinetuneConfig, argv, prog="python -m minibort.finetune",
                       description="Fine-tune Bort on a GLUE task or your own labelled file.")
    try:
        result = finetune(cfg, progress=True)
    except (ValueError, OSError) as e:                       # DataError, FinetuneError, CheckpointError, ...
        print(f"error: {e}", file=sys.stderr)
        return 2
    except FloatingPointError as e:                          # NonFiniteError: the loss diverged
        print(f"error: {e}; lower --lr", file=sys.stderr)
        return 2
    if not result.finished:
        return 3
    print(f"best epoch {result.best_epoch}: dev {result.metric_name} {result.score:.4f}"
          + "".join(f"; {name} " + ", ".join(f"{k} {v:.4f}" for k, v in m.items())
                    for name, m in result.test_metrics.items())
          + (f"; model in {os.path.join(cfg.out, 'model')}" if cfg.out else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
