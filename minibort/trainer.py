"""The training loop every minibort recipe shares: pretraining, fine-tuning, Agora.

A recipe owns its data and its loss; the `Trainer` owns everything around them:

    for each batch (epochs of index batches, `batches(epoch)`):
        loss, grads, n = step_fn(indices)            # the recipe: forward + backward on one batch
        check_finite; clip to the global norm; optimizer step; schedule step
        every `eval_every` steps and/or at each epoch's end: evaluate(), early stopping, best weights
        every `checkpoint_every` steps: checkpoint (atomic)
        Ctrl-C / SIGTERM / `stop_after`: checkpoint and return {"finished": False}
    final evaluation; best weights back in place (keep_best); checkpoint; {"finished": True}

What a recipe gives it (pretrain.py is one, in full):

    step_fn(indices) -> (loss, grads, items)   indices: (b,) int array of example numbers in this
        batch; grads keyed like model.params (the trainer clips them in place); items: what the
        progress bar counts (tokens for MLM, examples for classification).
    batches(epoch) -> list of (b,) index arrays: the batches of one epoch, a function of the epoch
        only (e.g. `shuffled_batches(n, batch_size, seed)`), so a resumed run sees the same batches.
    evaluate() -> dict of numbers (optional): the model is in eval mode while it runs, and back in
        training mode after, its dropout stream untouched. `metric` names the entry early stopping
        and `keep_best` compare (`higher_is_better` says which way is better).
    settings: a JSON-able dict (the config, content digests of data and tokenizer) stored in the
        checkpoint; a resume with another value for any key not in `resumable` is refused.
    rngs: the recipe's own generators (e.g. masking), checkpointed with the model's dropout generator.

Fine-tuning, for instance:

    trainer = Trainer(model, AdamW(model.params, lr), step_fn, shuffled_batches(n, 32, seed),
                      max_epochs=3, schedule=sched, clip=1.0, evaluate=dev_metrics, eval_each_epoch=True,
                      metric="accuracy", higher_is_better=True, patience=2, keep_best=True,
                      checkpoint_path=out / "checkpoint.npz", settings=asdict(cfg) | digests)
    result = trainer.run()          # the best epoch's weights are in model.params afterwards

Everything that decides the next step is in the checkpoint (one .npz): parameters, optimizer and
schedule state, every generator's state, `trainer.state` (step, epoch, position, history) and the
best weights, so a stopped run resumes to exactly the parameters an uninterrupted run reaches.
`build_parser(config_cls)` turns a config dataclass into command-line flags; `run_lock(folder)`
keeps two runs out of one output folder.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import hashlib
import json
import os
import signal
import socket
import sys
import threading
import time
import types
import typing
import zipfile
from collections.abc import Callable, Iterable, Iterator
from typing import Any, Literal

import numpy as np

from ._files import savez_atomic
from .optim import Optimizer, Params, Scheduler, check_finite, clip_grad_norm, global_norm

CHECKPOINT_FORMAT = 1

StepFn = Callable[[np.ndarray], tuple[float, Params, int]]
Batches = Callable[[int], list[np.ndarray]]


class TrainingError(ValueError):
    """A run cannot start or resume as asked (a checkpoint from other settings, a corrupt
    checkpoint, an output folder in use); the message says what to do."""


# ------------------------------------------------------------------------------------ batches


def shuffled_batches(n: int, batch_size: int, seed: int, drop_last: bool = True) -> Batches:
    """Epoch -> batches of a fresh permutation of range(n), drawn from `default_rng([seed, 3, epoch])`.

    With drop_last the final partial batch of each epoch is left out, so every step has `batch_size`
    examples (an MLM loss is a mean over tokens: a tiny last batch would weigh its few tokens heavily).
    """
    if n <= 0 or batch_size <= 0:
        raise ValueError(f"need examples and a positive batch size, got n={n}, batch_size={batch_size}")
    if drop_last and n < batch_size:
        raise ValueError(f"{n} examples, fewer than one batch of {batch_size}; lower the batch size")

    def batches(epoch: int) -> list[np.ndarray]:
        order = np.random.default_rng([seed, 3, epoch]).permutation(n)                # (n,)
        end = n - batch_size + 1 if drop_last else n
        return [order[i:i + batch_size] for i in range(0, end, batch_size)]
    return batches


# ------------------------------------------------------------------------------------ the trainer


class Trainer:
    """The loop, its state and its checkpoints. See the module docstring for what a recipe passes."""

    def __init__(self, model, optimizer: Optimizer, step_fn: StepFn, batches: Batches, *,
                 max_steps: int = 0, max_epochs: int = 0, schedule: Scheduler | None = None,
                 clip: float = 0.0, evaluate: Callable[[], dict] | None = None, eval_every: int = 0,
                 eval_each_epoch: bool = False, metric: str = "loss", higher_is_better: bool = False,
                 patience: int = 0, keep_best: bool = False,
                 checkpoint_path: str | os.PathLike | None = None, checkpoint_every: int = 0,
                 stop_after: int = 0, settings: dict | None = None, resumable: Iterable[str] = (),
                 rngs: dict[str, np.random.Generator] | None = None, progress: bool = True,
                 desc: str = "train", items_name: str = "items",
                 describe_eval: Callable[[dict], str] | None = None):
        """See the module docstring. `describe_eval(result) -> str` words an evaluation for the log."""
        if max_steps <= 0 and max_epochs <= 0:
            raise ValueError("give max_steps or max_epochs (a positive number), or the run never ends")
        if (patience or keep_best) and evaluate is None:
            raise ValueError("patience and keep_best need an evaluate function")
        self.model, self.optimizer, self.schedule = model, optimizer, schedule
        self.step_fn, self.batches, self.evaluate_fn = step_fn, batches, evaluate
        self.max_steps, self.max_epochs, self.clip = max_steps, max_epochs, clip
        self.eval_every, self.eval_each_epoch = eval_every, eval_each_epoch
        self.metric, self.higher_is_better = metric, higher_is_better
        self.patience, self.keep_best = patience, keep_best
        self.checkpoint_path = os.fspath(checkpoint_path) if checkpoint_path else None
        self.checkpoint_every, self.stop_after = checkpoint_every, stop_after
        self.settings = dict(settings or {})
        self.resumable = frozenset(resumable)
        self.rngs = {"dropout": model.dropout_rng, **(rngs or {})}
        self.progress, self.desc, self.items_name = progress, desc, items_name
        self.describe_eval = describe_eval or _describe
        self.best_params: Params | None = None
        self._epoch_cache: tuple[int, list[np.ndarray]] | None = None
        self.epoch_ended = False
        # Everything here is JSON and goes into the checkpoint.
        self.state: dict[str, Any] = {
            "step": 0, "epoch": 0, "batch": 0,     # the next batch is batches(epoch)[batch]
            "items": 0, "wall_time": 0.0,
            "losses": [], "grad_norms": [], "lrs": [], "evals": [],
            "best": None, "evals_since_best": 0, "stopped_early": False}

    # -------------------------------------------------------------- one step
    def epoch_batches(self, epoch: int) -> list[np.ndarray]:
        """`batches(epoch)`, computed once per epoch."""
        if self._epoch_cache is None or self._epoch_cache[0] != epoch:
            self._epoch_cache = (epoch, self.batches(epoch))
        return self._epoch_cache[1]

    def train_step(self) -> float:
        """One optimizer step on the next batch; returns its loss. `epoch_ended` says if it was an
        epoch's last."""
        s = self.state
        epoch_batches = self.epoch_batches(s["epoch"])
        self.model.train()                                       # a flag; the dropout stream goes on
        loss, grads, items = self.step_fn(epoch_batches[s["batch"]])
        check_finite(loss, grads, s["step"])
        norm = clip_grad_norm(grads, self.clip) if self.clip > 0 else global_norm(grads)  # before clipping
        s["lrs"].append(self.optimizer.lr)
        self.optimizer.step(grads)
        if self.schedule is not None:
            self.schedule.step()
        s["step"] += 1
        s["items"] += int(items)
        s["losses"].append(float(loss))
        s["grad_norms"].append(norm)
        s["batch"] += 1
        self.epoch_ended = s["batch"] == len(epoch_batches)
        if self.epoch_ended:                                     # the next batch opens the next epoch
            s["epoch"] += 1
            s["batch"] = 0
        return float(loss)

    def evaluate(self) -> dict:
        """Run `evaluate()` in eval mode, record it (with step and epoch), update the best result."""
        s = self.state
        was_training = self.model.training
        self.model.eval()
        try:
            r = dict(self.evaluate_fn())
        finally:
            self.model.train(was_training)                       # a flag: the dropout stream goes on
        r["step"], r["epoch"] = s["step"], s["epoch"]
        s["evals"].append(r)
        if self.metric in r:
            value = r[self.metric]
            best = s["best"]
            better = best is None or (value > best[self.metric] if self.higher_is_better
                                      else value < best[self.metric])
            if better:
                s["best"] = {"step": s["step"], "epoch": s["epoch"], self.metric: value}
                s["evals_since_best"] = 0
                if self.keep_best:
                    self.best_params = {k: v.copy() for k, v in self.model.params.items()}
            else:
                s["evals_since_best"] += 1
                if self.patience and s["evals_since_best"] >= self.patience:
                    s["stopped_early"] = True
        elif self.patience or self.keep_best:
            raise KeyError(f"evaluate() returned {sorted(r)}, without the metric {self.metric!r}")
        return r

    def _done(self) -> bool:
        s = self.state
        return bool((self.max_steps and s["step"] >= self.max_steps)
                    or (self.max_epochs and s["epoch"] >= self.max_epochs) or s["stopped_early"])

    @property
    def total_steps(self) -> int:
        """Steps the run takes if it is not stopped early."""
        if self.max_steps:
            return self.max_steps
        return self.max_epochs * len(self.epoch_batches(0))

    # -------------------------------------------------------------- the loop
    def run(self, log: Callable[[str], None] = print) -> dict:
        """Train until max_steps / max_epochs / early stopping, or until `stop_after` steps in this
        call or a SIGINT/SIGTERM, which leave a checkpoint to resume from. -> {"finished", "step",
        "epoch", "stopped_early", "best"}."""
        s = self.state
        stop = threading.Event()
        old_handlers = {}
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):          # finish the step, then stop cleanly
                old_handlers[sig] = signal.signal(sig, lambda signum, frame: stop.set())
        bar = None
        if self.progress:
            from tqdm import tqdm
            bar = tqdm(total=self.total_steps, initial=s["step"], desc=self.desc, dynamic_ncols=True,
                       mininterval=1.0 if sys.stderr.isatty() else 30.0)
            log = bar.write                                      # log lines go above the bar
        start_step, t_start, wall0 = s["step"], time.time(), s["wall_time"]
        t_last, items_last = t_start, s["items"]
        try:
            while not self._done():
                loss = self.train_step()
                now = time.time()
                s["wall_time"] = wall0 + (now - t_start)
                if bar is not None:
                    rate = (s["items"] - items_last) / max(now - t_last, 1e-9)
                    bar.set_postfix({"loss": f"{loss:.3f}", f"{self.items_name}/s": f"{rate:.0f}",
                                     "lr": f"{self.optimizer.lr:.2e}"}, refresh=False)
                    bar.update(1)
                    t_last, items_last = now, s["items"]
                if ((self.eval_every and s["step"] % self.eval_every == 0)
                        or (self.eval_each_epoch and self.epoch_ended)) and self.evaluate_fn is not None:
                    r = self.evaluate()
                    log(f"step {s['step']} (epoch {s['epoch'] + s['batch'] / len(self.epoch_batches(s['epoch'])):.2f}): "
                        f"{self.describe_eval(r)}; train loss (last 50 steps) {np.mean(s['losses'][-50:]):.4f}; "
                        f"{s['items'] / max(s['wall_time'], 1e-9):.0f} {self.items_name}/s")
                if self.checkpoint_path and self.checkpoint_every and s["step"] % self.checkpoint_every == 0:
                    self.save(self.checkpoint_path)
                asked = stop.is_set() or (self.stop_after and s["step"] - start_step >= self.stop_after)
                if asked and not self._done():                  # at the very end, finish instead
                    if self.checkpoint_path:
                        self.save(self.checkpoint_path)
                        log(f"stopped at step {s['step']}; checkpoint {self.checkpoint_path}; "
                            "run the same command again to resume")
                    return self._result(finished=False)
        finally:
            if bar is not None:
                bar.close()
            for sig, handler in old_handlers.items():
                signal.signal(sig, handler)
        if self.evaluate_fn is not None and (not s["evals"] or s["evals"][-1]["step"] != s["step"]):
            self.evaluate()
        if self.keep_best and self.best_params is not None:
            for k, v in self.best_params.items():
                self.model.params[k][...] = v                    # in place: the optimizer holds them
        if self.checkpoint_path:
            self.save(self.checkpoint_path)
        return self._result(finished=True)

    def _result(self, finished: bool) -> dict:
        s = self.state
        return {"finished": finished, "step": s["step"], "epoch": s["epoch"],
                "stopped_early": s["stopped_early"], "best": s["best"]}

    # -------------------------------------------------------------- checkpoints
    def save(self, path: str | os.PathLike) -> None:
        """One .npz written atomically: parameters (param/), optimizer state (optim/), best weights
        (best/), and `meta`, a JSON string with the state, settings, schedule and generator states."""
        arrays = {"param/" + k: v for k, v in self.model.params.items()}
        opt_sd = self.optimizer.state_dict()
        arrays.update({"optim/" + k: v for k, v in opt_sd.items() if isinstance(v, np.ndarray)})
        if self.best_params is not None:
            arrays.update({"best/" + k: v for k, v in self.best_params.items()})
        meta = {"format": CHECKPOINT_FORMAT, "state": self.state, "settings": self.settings,
                "optim_scalars": {k: v for k, v in opt_sd.items() if not isinstance(v, np.ndarray)},
                "schedule": self.schedule.state_dict() if self.schedule is not None else None,
                "rngs": {name: g.bit_generator.state for name, g in self.rngs.items()}}
        arrays["meta"] = np.frombuffer(json.dumps(meta).encode("utf-8"), dtype=np.uint8)
        savez_atomic(path, arrays)

    def load(self, path: str | os.PathLike) -> None:
        """Restore what `save` wrote. Refuses a checkpoint written with other settings, with arrays
        of other shapes, or one that cannot be read, with a TrainingError that says what to do."""
        path = os.fspath(path)
        afresh = "delete it (or pass --no-resume, or another --out) to start afresh"
        try:
            with np.load(path, allow_pickle=False) as z:
                arrays = {k: z[k] for k in z.files}
            meta = json.loads(bytes(arrays.pop("meta")).decode("utf-8"))
            state, settings = meta["state"], meta["settings"]
        except (OSError, ValueError, KeyError, TypeError, EOFError, zipfile.BadZipFile) as e:
            raise TrainingError(f"{path} is not a readable minibort checkpoint ({type(e).__name__}: {e}); "
                                f"{afresh}") from None
        well_formed = isinstance(state, dict) and isinstance(settings, dict) and set(self.state) <= set(state)
        if meta.get("format") != CHECKPOINT_FORMAT or not well_formed:
            raise TrainingError(f"{path} has checkpoint format {meta.get('format')} (or lacks part of its "
                                f"state), this minibort writes format {CHECKPOINT_FORMAT}; {afresh}")
        keys = list(settings) + [k for k in self.settings if k not in settings]     # the config's order
        changed = [k for k in keys if k not in self.resumable and settings.get(k) != self.settings.get(k)]
        if changed:
            k = changed[0]
            also = f" (also changed: {', '.join(changed[1:])})" if len(changed) > 1 else ""
            raise TrainingError(f"{path} was written with {k}={settings.get(k)!r}, this run has "
                                f"{k}={self.settings.get(k)!r}{also}; resume with the same settings and "
                                f"data, or {afresh}")
        params = {k[len("param/"):]: v for k, v in arrays.items() if k.startswith("param/")}
        best = {k[len("best/"):]: v for k, v in arrays.items() if k.startswith("best/")}
        for name, stored in [("parameters", params)] + ([("best weights", best)] if best else []):
            _check_shapes(path, name, stored, self.model.params, afresh)
        opt_sd = dict(meta["optim_scalars"])
        opt_sd.update({k[len("optim/"):]: v for k, v in arrays.items() if k.startswith("optim/")})
        try:
            self.optimizer.load_state_dict(opt_sd)
            if self.schedule is not None:
                self.schedule.load_state_dict(meta["schedule"])
            for name, g in self.rngs.items():
                g.bit_generator.state = meta["rngs"][name]
        except (KeyError, ValueError, TypeError) as e:
            raise TrainingError(f"{path}: the optimizer, schedule or generator state does not fit this run "
                                f"({type(e).__name__}: {e}); {afresh}") from None
        for k, v in params.items():
            self.model.params[k][...] = v                        # in place: the optimizer holds them
        self.best_params = {k: v.astype(self.model.params[k].dtype) for k, v in best.items()} or None
        self.state = state


def _check_shapes(path: str, what: str, stored: dict, params: Params, afresh: str) -> None:
    """Every parameter present once with its own shape: nothing broadcast, nothing left over."""
    missing = sorted(set(params) - set(stored))
    extra = sorted(set(stored) - set(params))
    if missing or extra:
        name = (missing or extra)[0]
        raise TrainingError(f"{path}: its {what} {'lack' if missing else 'have an extra'} {name!r} "
                            f"({len(missing)} missing, {len(extra)} extra); it belongs to another model; "
                            f"{afresh}")
    for k, v in stored.items():
        if v.shape != params[k].shape:
            raise TrainingError(f"{path}: {what} {k!r} has shape {v.shape}, the model's is "
                                f"{params[k].shape}; {afresh}")


def _describe(r: dict) -> str:
    """An evaluation's numbers as `name value, ...` (the default of `describe_eval`)."""
    return ", ".join(f"{k} {v:.4g}" for k, v in r.items() if k not in ("step", "epoch") and isinstance(v, (int, float)))


def content_digest(*parts) -> str:
    """sha256 of arrays (dtype, shape and bytes), dicts of them (in key order) and strings: what a
    resume compares instead of file paths, so other data behind the same path is noticed."""
    h = hashlib.sha256()

    def feed(x) -> None:
        if isinstance(x, dict):
            for k in sorted(x):
                h.update(str(k).encode() + b"\0")
                feed(x[k])
        elif isinstance(x, str):
            h.update(x.encode() + b"\0")
        else:
            a = np.ascontiguousarray(x)
            h.update(f"{a.dtype.str}{a.shape}".encode())
            h.update(a.data)
    for part in parts:
        feed(part)
    return h.hexdigest()


# ------------------------------------------------------------------------------------ output folder


@contextlib.contextmanager
def run_lock(folder: str | os.PathLike) -> Iterator[str]:
    """Hold `folder/.lock` for the duration of a run: a second run on the same folder is refused.

    The lock file names the process and host. One left behind by a process that no longer runs on
    this host (killed with SIGKILL, say) is taken over; any other is a TrainingError.
    """
    folder = os.fspath(folder)
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, ".lock")
    me = f"{os.getpid()} {socket.gethostname()}\n"
    for _attempt in range(2):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            owner = _read_owner(path)
            if owner is not None and _alive(*owner):
                raise TrainingError(f"{folder} is in use by another run (process {owner[0]} on "
                                    f"{owner[1]}); wait for it to finish, or choose another --out") from None
            with contextlib.suppress(FileNotFoundError):   # stale: its process is gone
                os.unlink(path)
            continue
        with os.fdopen(fd, "w") as f:
            f.write(me)
        break
    else:
        raise TrainingError(f"could not take the lock {path}; another run is starting in {folder}")
    try:
        yield path
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)


def _read_owner(path: str) -> tuple[int, str] | None:
    try:
        with open(path, encoding="utf-8") as f:
            pid, host = f.read().split()
        return int(pid), host
    except (OSError, ValueError):
        return None                                      # unreadable or half-written: treat as stale


def _alive(pid: int, host: str) -> bool:
    if host != socket.gethostname():
        return True                                      # another machine's run: cannot check, assume so
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


# ------------------------------------------------------------------------------------ command line


def option(default: Any, help: str) -> Any:
    """A config dataclass field with its --help text: `lr: float = option(1e-3, "peak learning rate")`."""
    if isinstance(default, (list, dict, set)):
        return dataclasses.field(default_factory=lambda: type(default)(default), metadata={"help": help})
    return dataclasses.field(default=default, metadata={"help": help})


def build_parser(config_cls: type, prog: str | None = None, description: str | None = None,
                 epilog: str | None = None) -> argparse.ArgumentParser:
    """One flag per field of the dataclass `config_cls`: `--field-name`, its type, default and help.

    bool fields become `--x / --no-x`; `X | None` takes an X; `Literal[...]` gives choices; `list[X]`
    takes one or more values. Every field must carry help text (`option(default, help)`).
    """
    ap = argparse.ArgumentParser(prog=prog, description=description, epilog=epilog,
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    hints = typing.get_type_hints(config_cls)
    for f in dataclasses.fields(config_cls):
        if not f.init:
            continue
        if "help" not in f.metadata:
            raise TypeError(f"{config_cls.__name__}.{f.name} has no help text; declare it with "
                            "option(default, help)")
        flag = "--" + f.name.replace("_", "-")
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        kind = hints[f.name]
        if isinstance(kind, types.UnionType) or typing.get_origin(kind) is typing.Union:
            kind = next(a for a in typing.get_args(kind) if a is not type(None))     # X | None -> X
        if kind is bool:
            ap.add_argument(flag, action=argparse.BooleanOptionalAction, default=default,
                            help=f.metadata["help"])
        elif typing.get_origin(kind) is Literal:
            choices = typing.get_args(kind)
            ap.add_argument(flag, type=type(choices[0]), choices=choices, default=default,
                            help=f.metadata["help"])
        elif typing.get_origin(kind) is list:
            (item,) = typing.get_args(kind)
            ap.add_argument(flag, type=item, nargs="+", default=default, help=f.metadata["help"])
        elif kind in (int, float, str):
            ap.add_argument(flag, type=kind, default=default, help=f.metadata["help"])
        else:
            raise TypeError(f"{config_cls.__name__}.{f.name}: build_parser cannot make a flag of type {kind}")
    return ap


def parse_config(config_cls: type, argv: list[str] | None = None, **parser_kw):
    """Flags -> a `config_cls` instance. A value the dataclass refuses (its __post_init__ raises
    ValueError) ends like any bad flag: `error: ...` on stderr and exit status 2."""
    ap = build_parser(config_cls, **parser_kw)
    args = ap.parse_args(argv)
    try:
        return config_cls(**vars(args))
    except ValueError as e:
        ap.error(str(e))


def portable_path(field_name: str, value, path_fields: Iterable[str]):
    """A path setting as a reader elsewhere can use it: a relative path inside the working folder
    stays; an absolute or upward one becomes the field's placeholder (`out` -> `OUT`)."""
    if field_name not in path_fields or not value:
        return value
    if os.path.isabs(value) or os.path.normpath(value).startswith(".."):
        return field_name.upper()
    return value


def portable_command(prog: str, argv: list[str], path_fields: Iterable[str]) -> str:
    """The command line for a run's record, with machine-specific paths replaced by placeholders
    (`--out /home/me/run` -> `--out OUT`), for both `--flag value` and `--flag=value`."""
    path_fields = tuple(path_fields)
    flags = {"--" + f.replace("_", "-"): f for f in path_fields}
    out, pending = [], None
    for arg in argv:
        flag, eq, value = arg.partition("=")
        if pending is not None:
            out.append(portable_path(pending, arg, path_fields))
            pending = None
        elif arg in flags:
            out.append(arg)
            pending = flags[arg]
        elif eq and flag in flags:
            out.append(f"{flag}={portable_path(flags[flag], value, path_fields)}")
        else:
            out.append(arg)
    return " ".join([prog, *out])
