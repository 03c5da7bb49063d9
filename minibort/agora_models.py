"""The models Agora works with: the reference that labels generated points, the candidate fine-tuned
once per hyper-parameter set θ, saving and loading them, and the process pool that fits a round's
candidates in parallel (one BLAS thread per worker). `minibort.agora` holds the loop itself.
"""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import dataclasses
import multiprocessing
import os
import pickle
import shutil
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from .grids import Theta

BLAS_VARIABLES = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")


class AgoraError(ValueError):
    """A problem the user can fix; the message names it and the fix. The CLI prints it as `error: ...`."""



# ------------------------------------------------------------------------------------ reference models


@dataclasses.dataclass
class Reference:
    """The model that labels generated points: `predict(examples) -> label names`, optionally with
    `predict_proba(examples) -> (N, C)` probabilities over `labels` (in that order)."""

    predict: Callable[[list], list]
    labels: list[str] | None = None
    predict_proba: Callable[[list], np.ndarray] | None = None
    name: str = "reference"


def as_reference(obj: Any, labels: Sequence[str]) -> Reference:
    """A Reference from a Reference, a callable, or an object with predict (and predict_proba).

    A callable, or the object's predict and predict_proba, receives texts (or (text, text_pair)
    tuples for pair tasks), as minibort.bow.BowClassifier does, and returns labels: names from
    `labels`, or integer ids into it.
    """
    if isinstance(obj, Reference):
        return obj
    if hasattr(obj, "predict"):
        proba = getattr(obj, "predict_proba", None)
        known = getattr(obj, "labels", None)
        return Reference(lambda examples: list(obj.predict(_texts(examples))), list(known) if known else None,
                         None if proba is None else lambda examples: np.asarray(proba(_texts(examples))),
                         type(obj).__name__)
    if callable(obj):
        return Reference(lambda examples: list(obj(_texts(examples))), None, None,
                         getattr(obj, "__name__", "callable"))
    raise AgoraError(f"the reference {obj!r} is neither callable nor has a predict method")


def label_names(raw: Sequence, labels: Sequence[str], who: str) -> list[str]:
    """The reference's outputs as the data's label names; refuse any label the data does not have."""
    names = list(labels)
    out = []
    for y in raw:
        if isinstance(y, (np.integer, int)) and not isinstance(y, bool) and str(y) not in names:
            if not 0 <= int(y) < len(names):
                raise AgoraError(f"{who} returned label id {int(y)}, but the data has {len(names)} labels "
                                 f"{names}; the reference must be trained on the same labels")
            y = names[int(y)]
        y = str(y)
        if y not in names:
            raise AgoraError(f"{who} returned label {y!r}, which is not one of the data's labels {names}; "
                             "use a reference trained on the same task (same label names)")
        out.append(y)
    return out


def bow_reference(train) -> Reference:
    """minibort.bow's bag-of-n-grams logistic regression, trained on `train`."""
    from .bow import BowClassifier
    clf = BowClassifier()
    clf.fit(train)
    names = list(train.labels)

    def predict(examples: list) -> list[str]:
        return [names[int(i)] for i in clf.predict(_texts(examples))]

    def predict_proba(examples: list) -> np.ndarray:
        return np.asarray(clf.predict_proba(_texts(examples)))

    return Reference(predict, names, predict_proba, "bow")


def _texts(examples: list) -> list:
    return [e.text if e.text_pair is None else (e.text, e.text_pair) for e in examples]


def folder_reference(path: str) -> Reference:
    """A fine-tuned minibort classifier folder (config.json with id2label, weights, tokenizer)."""
    fitted = Fitted.from_pretrained(path)
    id2label = getattr(fitted.model.config, "id2label", None) or {}
    names = [str(id2label[k]) for k in sorted(id2label, key=int)] if id2label else None

    def predict(examples: list) -> list:
        ids = fitted.predict(_as_dataset(examples, names))
        return [names[int(i)] if names else int(i) for i in ids]

    def predict_proba(examples: list) -> np.ndarray:
        from .finetune import predict_proba as pp
        return np.asarray(pp(fitted.model, fitted.tokenizer, _as_dataset(examples, names)))

    return Reference(predict, names, predict_proba, os.path.abspath(path))


def _as_dataset(examples: list, names: list[str] | None):
    from .data import Dataset, Example
    return Dataset([Example(e.text, e.text_pair, None) for e in examples], list(names or []), "reference")


def load_reference(spec: str, train) -> Reference:
    """`bow` (trained on `train`) or a classifier folder."""
    if spec == "bow":
        return bow_reference(train)
    if os.path.isdir(spec):
        return folder_reference(spec)
    raise AgoraError(f"unknown reference {spec!r}: give `bow` or a folder holding a fine-tuned minibort "
                     "classifier (the --out folder of python -m minibort.finetune)")


# ------------------------------------------------------------------------------------ fitting one θ


@dataclasses.dataclass
class Fitted:
    """A fine-tuned classifier and its tokenizer, as Agora's default fit returns it."""

    model: Any
    tokenizer: Any

    def predict(self, dataset) -> np.ndarray:
        """(N,) label ids for the examples of `dataset`."""
        from .finetune import predict
        return np.asarray(predict(self.model, self.tokenizer, dataset))

    def save_pretrained(self, folder: str) -> None:
        """The model and its tokenizer, in one folder that from_pretrained loads."""
        self.model.save_pretrained(folder)
        self.tokenizer.save_pretrained(folder)

    @classmethod
    def from_pretrained(cls, folder: str) -> Fitted:
        from .finetune import load_classifier
        model, tok = load_classifier(folder)
        return cls(model, tok)


@dataclasses.dataclass
class FinetuneFit:
    """Agora's default fit: minibort.finetune with θ's hyper-parameters, from `model` (or a warm start).

    `settings` are FinetuneConfig fields shared by every θ (epochs, recipe, max_length, ...); θ
    overrides them. Returns (Fitted, dev predictions).
    """

    model: str = "bort-tiny"
    settings: dict = dataclasses.field(default_factory=dict)

    def __call__(self, theta: Theta, train, dev, *, start=None) -> tuple[Fitted, np.ndarray]:
        import tempfile

        from .finetune import FinetuneConfig, finetune
        fields = {f.name for f in dataclasses.fields(FinetuneConfig)}
        unknown = sorted(set(theta) - fields)
        if unknown:
            raise AgoraError(f"the grid names {unknown}, which minibort.finetune does not know; "
                             f"use FinetuneConfig's fields ({', '.join(sorted(fields))})")
        with tempfile.TemporaryDirectory(prefix="agora-start-") as tmp:
            model = self.model
            if start is not None:                         # warm start: continue from a fitted model
                start.save_pretrained(tmp)
                model = tmp
            cfg = FinetuneConfig(**{**self.settings, **theta, "model": model, "out": None})
            result = finetune(cfg, train=train, dev=dev, progress=False)
        fitted = Fitted(result.model, result.tokenizer)
        return fitted, fitted.predict(dev)


def _fit_one(fit: Callable, theta: Theta, train, dev, start) -> tuple[Any, np.ndarray]:
    """One θ's fine-tune (module-level, so that process pools can pickle it)."""
    if start is None:
        return fit(theta, train, dev)
    return fit(theta, train, dev, start=start)


# ------------------------------------------------------------------------------------ executors


def _blas_env_check() -> None:
    """Worker initializer: refuse to run if this worker's BLAS may start more than one thread."""
    for name in BLAS_VARIABLES[:2]:
        if os.environ.get(name) != "1":
            raise RuntimeError(f"agora worker started with {name}={os.environ.get(name)}; expected 1")


@contextlib.contextmanager
def _environment(**values: str):
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def worker_pool(workers: int) -> cf.ProcessPoolExecutor:
    """A pool of `workers` processes whose BLAS uses one thread each.

    Two processes with two OpenBLAS threads each on two cores stall for seconds per step. A BLAS
    reads its thread count once, when NumPy is first imported, and a "spawn" worker imports NumPy
    while it starts (it re-imports the main module), before any initializer runs. So the variables
    are set in this process's environment while the workers are started (spawned children inherit
    it) and restored after; the initializer checks them in each worker.
    """
    if workers < 1:
        raise AgoraError(f"--workers must be at least 1, got {workers}")
    pool = cf.ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"),
                                  initializer=_blas_env_check)
    with _environment(**{k: "1" for k in BLAS_VARIABLES}):
        # spawn starts workers on demand; ask for `workers` at once, before any can be idle
        started = [pool.submit(os.getpid) for _ in range(workers)]
        cf.wait(started)
    for f in started:
        f.result()                                           # raises if a worker's check failed
    return pool


class _Inline(cf.Executor):
    """Runs each call at once in this process: the default executor."""

    def submit(self, fn, /, *args, **kwargs):
        f: cf.Future = cf.Future()
        try:
            f.set_result(fn(*args, **kwargs))
        except BaseException as e:                          # noqa: BLE001 - delivered through the future
            f.set_exception(e)
        return f


# ------------------------------------------------------------------------------------ saving models


def save_model(model: Any, folder: str) -> None:
    """Write `model` to `folder`, replacing it whole: save_pretrained if the model has one, else pickle."""
    tmp = folder + ".new"
    old = folder + ".old"
    for d in (tmp, old):
        shutil.rmtree(d, ignore_errors=True)
    os.makedirs(tmp)
    if hasattr(model, "save_pretrained"):
        model.save_pretrained(tmp)
    else:                                   # a model from a custom fit (tests, experiments in Python)
        with open(os.path.join(tmp, "model.pkl"), "wb") as f:
            pickle.dump(model, f)
    if os.path.exists(folder):
        os.replace(folder, old)
    os.replace(tmp, folder)
    shutil.rmtree(old, ignore_errors=True)


def load_model(folder: str) -> Any:
    """Read what save_model wrote (a pickle only ever from a folder Agora itself wrote)."""
    path = os.path.join(folder, "model.pkl")
    if os.path.isfile(path):
        with open(path, "rb") as f:
            return pickle.load(f)
    return Fitted.from_pretrained(folder)
