"""minibort.trainer, the loop every recipe shares: batches, epochs, evaluation and early stopping,
best weights, resume (equal to an uninterrupted run, refused on other settings, shapes or a corrupt
file), signals, the output-folder lock, and build_parser on any config dataclass.

The model here is a linear regression with the interface the trainer needs from a model (`params`,
`train()`, `eval()`, `training`, `dropout_rng`), so each test runs in milliseconds; pretraining
(tests/test_pretrain.py) runs the same loop on Bort.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import sys
from typing import Literal

import numpy as np
import pytest
from helpers import close

from minibort.optim import SGD, NonFiniteError, Scheduler, linear_warmup_decay
from minibort.trainer import (
    Trainer,
    TrainingError,
    build_parser,
    content_digest,
    option,
    parse_config,
    run_lock,
    shuffled_batches,
)

N, D = 40, 3
RNG = np.random.default_rng(0)
X = RNG.standard_normal((N, D))
Y = X @ np.array([1.0, -2.0, 0.5]) + 0.3 + 0.1 * RNG.standard_normal(N)


class Linear:
    """y = x w + b with "dropout" on x: the smallest model with the trainer's interface."""

    def __init__(self, p_drop: float = 0.2):
        self.params = {"w": np.zeros(D), "b": np.zeros(1)}
        self.training = False
        self.dropout_rng = np.random.default_rng(1)
        self.p = p_drop

    def train(self, mode: bool = True):
        self.training = bool(mode)
        return self

    def eval(self):
        return self.train(False)

    def loss_and_grads(self, x, y):
        if self.training and self.p:
            x = x * (self.dropout_rng.random(x.shape) >= self.p) / (1 - self.p)
        r = x @ self.params["w"] + self.params["b"][0] - y                 # (b,)
        return float(np.mean(r * r)), {"w": 2 * x.T @ r / len(y), "b": np.array([2 * r.mean()])}


def make(tmp_path=None, model=None, dev_losses=None, **kw) -> Trainer:
    """A trainer on the regression; `dev_losses` scripts what evaluate() returns, one per call."""
    model = model or Linear()
    opt = SGD(model.params, lr=0.1)
    script = iter(dev_losses) if dev_losses is not None else None

    def step_fn(idx):
        loss, grads = model.loss_and_grads(X[idx], Y[idx])
        return loss, grads, len(idx)

    def evaluate():
        assert not model.training                                      # evaluation runs in eval mode
        loss = next(script) if script is not None else model.loss_and_grads(X, Y)[0]
        return {"loss": loss}

    settings = kw.pop("settings", {"lr": 0.1})
    return Trainer(model, opt, step_fn, shuffled_batches(N, 8, seed=0), evaluate=evaluate, progress=False,
                   checkpoint_path=(tmp_path / "ckpt.npz") if tmp_path else None, settings=settings,
                   schedule=Scheduler(opt, linear_warmup_decay(2, 20)), **kw)


def quiet(_msg: str) -> None:
    pass


# ------------------------------------------------------------------------------------ batches and epochs


def test_shuffled_batches_cover_each_epoch_once_and_depend_only_on_the_epoch():
    b = shuffled_batches(10, 3, seed=5)
    e0, e1 = b(0), b(1)
    assert [len(x) for x in e0] == [3, 3, 3]                            # the partial batch is dropped
    assert len(set(np.concatenate(e0))) == 9
    assert all((x == y).all() for x, y in zip(e0, shuffled_batches(10, 3, seed=5)(0)))
    assert not all((x == y).all() for x, y in zip(e0, e1))
    assert sorted(np.concatenate(shuffled_batches(10, 3, 5, drop_last=False)(0))) == list(range(10))
    with pytest.raises(ValueError, match="fewer than one batch"):
        shuffled_batches(2, 3, 0)


def test_epochs_with_an_evaluation_at_each_end():
    tr = make(max_epochs=3, eval_each_epoch=True)
    res = tr.run(log=quiet)
    assert res["finished"] and res["step"] == 15 and res["epoch"] == 3      # 5 batches of 8 per epoch
    assert [(e["step"], e["epoch"]) for e in tr.state["evals"]] == [(5, 1), (10, 2), (15, 3)]
    assert tr.state["items"] == 15 * 8
    assert tr.state["evals"][-1]["loss"] < tr.state["losses"][0]


def test_early_stopping_with_patience_restores_the_best_weights():
    seen = {}
    model = Linear()
    tr = make(model=model, max_epochs=10, eval_each_epoch=True, patience=2, keep_best=True,
              dev_losses=[3.0, 1.0, 2.0, 2.5, 9.0, 9.0])
    original = tr.evaluate_fn

    def evaluate():
        seen[tr.state["epoch"]] = {k: v.copy() for k, v in model.params.items()}
        return original()
    tr.evaluate_fn = evaluate
    res = tr.run(log=quiet)
    assert res["stopped_early"] and res["epoch"] == 4                    # 1.0 at epoch 2, then 2 worse
    assert res["best"] == {"step": 10, "epoch": 2, "loss": 1.0}
    for k in model.params:
        np.testing.assert_array_equal(model.params[k], seen[2][k])      # epoch 2's weights are back


def test_higher_is_better_metric():
    tr = make(max_epochs=3, eval_each_epoch=True, metric="loss", higher_is_better=True,
              dev_losses=[1.0, 3.0, 2.0])
    assert tr.run(log=quiet)["best"]["epoch"] == 2


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_a_non_finite_loss_stops_the_run_naming_the_step():
    model = Linear()
    tr = make(model=model, max_steps=5)
    model.params["w"][0] = np.inf
    with pytest.raises(NonFiniteError, match="step 0"):
        tr.run(log=quiet)


def test_clipping_bounds_the_update_and_records_the_norm_before_it():
    tr = make(max_steps=1, clip=1e-3)
    w0 = tr.model.params["w"].copy()
    tr.run(log=quiet)
    lr = tr.state["lrs"][0]
    assert tr.state["grad_norms"][0] > 1e-3
    step = np.sqrt(np.sum((tr.model.params["w"] - w0) ** 2))
    assert step <= lr * 1e-3 + 1e-15


# ------------------------------------------------------------------------------------ resume


def _straight_and_resumed(tmp_path, **kw):
    straight = make(**kw)
    straight.run(log=quiet)
    first = make(tmp_path, stop_after=7, **kw)
    assert not first.run(log=quiet)["finished"]
    resumed = make(tmp_path, **kw)                                     # new objects: the file only
    resumed.load(tmp_path / "ckpt.npz")
    assert resumed.state["step"] == 7
    assert resumed.run(log=quiet)["finished"]
    return straight, resumed


def test_resume_equals_an_uninterrupted_run_dropout_and_best_weights_included(tmp_path):
    straight, resumed = _straight_and_resumed(tmp_path, max_epochs=4, eval_each_epoch=True, keep_best=True,
                                              patience=3)
    for k in straight.model.params:
        close(f"params[{k}] straight vs stopped at 7 and resumed", resumed.model.params[k],
              straight.model.params[k], atol=0.0)
    assert straight.state["losses"] == resumed.state["losses"]
    assert straight.state["evals"] == resumed.state["evals"]
    assert straight.state["best"] == resumed.state["best"]


def test_resume_refuses_other_settings_but_not_resumable_ones(tmp_path):
    make(tmp_path, max_steps=3).run(log=quiet)
    with pytest.raises(TrainingError, match=r"lr=0.1, this run has lr=0.2; resume with the same settings"):
        make(tmp_path, max_steps=3, settings={"lr": 0.2}).load(tmp_path / "ckpt.npz")
    make(tmp_path, max_steps=3, settings={"lr": 0.1, "out": "elsewhere"},
         resumable=("out",)).load(tmp_path / "ckpt.npz")
    with pytest.raises(TrainingError, match="data_sha256"):
        make(tmp_path, max_steps=3, settings={"lr": 0.1, "data_sha256": content_digest(X)}).load(
            tmp_path / "ckpt.npz")


@pytest.mark.parametrize("damage", ["garbage", "truncated", "empty"])
def test_a_corrupt_checkpoint_is_a_clear_error(tmp_path, damage):
    make(tmp_path, max_steps=2).run(log=quiet)
    path = tmp_path / "ckpt.npz"
    data = path.read_bytes()
    path.write_bytes({"garbage": b"not a zip file at all", "truncated": data[: len(data) // 2],
                      "empty": b""}[damage])
    with pytest.raises(TrainingError, match="not a readable minibort checkpoint.*start afresh"):
        make(tmp_path, max_steps=2).load(path)


def test_a_checkpoint_of_another_shape_is_refused_not_broadcast(tmp_path):
    make(tmp_path, max_steps=2).run(log=quiet)
    path = tmp_path / "ckpt.npz"
    with np.load(path) as z:
        arrays = {k: z[k] for k in z.files}
    arrays["param/b"] = np.zeros(())                                    # would broadcast into (1,)
    np.savez(path, **arrays)
    with pytest.raises(TrainingError, match=r"'b' has shape \(\), the model's is \(1,\)"):
        make(tmp_path, max_steps=2).load(path)
    del arrays["param/b"]
    np.savez(path, **arrays)
    with pytest.raises(TrainingError, match="lack 'b'"):
        make(tmp_path, max_steps=2).load(path)


def test_sigint_finishes_the_step_and_leaves_a_resumable_checkpoint(tmp_path):
    before = signal.getsignal(signal.SIGINT)          # Python's default, or SIG_IGN under nohup / a background job
    tr = make(tmp_path, max_steps=10)
    inner = tr.step_fn

    def step_fn(idx):
        if tr.state["step"] == 3:
            os.kill(os.getpid(), signal.SIGINT)                         # Ctrl-C during step 4
        return inner(idx)
    tr.step_fn = step_fn
    res = tr.run(log=quiet)
    assert not res["finished"] and res["step"] == 4
    again = make(tmp_path, max_steps=10)
    again.load(tmp_path / "ckpt.npz")
    assert again.state["step"] == 4
    assert signal.getsignal(signal.SIGINT) is before                    # the handler given back


# ------------------------------------------------------------------------------------ the output folder


def test_a_second_run_on_one_folder_is_refused_and_a_stale_lock_taken_over(tmp_path):
    with run_lock(tmp_path), pytest.raises(TrainingError, match="in use by another run .* choose another --out"), \
            run_lock(tmp_path):
        pass
    assert not (tmp_path / ".lock").exists()
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True, check=True)
    import socket
    (tmp_path / ".lock").write_text(f"{gone.stdout.strip()} {socket.gethostname()}\n")
    with run_lock(tmp_path):                                            # its process has ended
        assert (tmp_path / ".lock").read_text().split()[0] == str(os.getpid())


# ------------------------------------------------------------------------------------ build_parser


@dataclasses.dataclass
class DemoConfig:
    lr: float = option(1e-3, "peak learning rate")
    epochs: int = option(3, "passes over the data")
    recipe: Literal["transformers", "bort"] = option("transformers", "which fine-tuning recipe")
    patience: int | None = option(None, "evaluations without improvement before stopping")
    shuffle: bool = option(True, "shuffle every epoch")
    files: list[str] = option([], "input files")  # noqa: RUF009 (option makes a default_factory)

    def __post_init__(self):
        if self.epochs < 1:
            raise ValueError(f"--epochs must be at least 1, got {self.epochs}")


def test_build_parser_makes_flags_of_any_config_dataclass(capsys):
    cfg = parse_config(DemoConfig, ["--lr", "0.5", "--recipe", "bort", "--patience", "2", "--no-shuffle",
                                    "--files", "a.tsv", "b.tsv"])
    assert cfg == DemoConfig(lr=0.5, epochs=3, recipe="bort", patience=2, shuffle=False, files=["a.tsv", "b.tsv"])
    assert parse_config(DemoConfig, []) == DemoConfig()
    with pytest.raises(SystemExit):
        build_parser(DemoConfig, prog="demo").parse_args(["--help"])
    text = capsys.readouterr().out
    for f in dataclasses.fields(DemoConfig):
        assert "--" + f.name.replace("_", "-") in text and f.metadata["help"] in text


@pytest.mark.parametrize("argv,words", [(["--recipe", "gluon"], "invalid choice"),
                                        (["--epochs", "x"], "invalid int value"),
                                        (["--epochs", "0"], "--epochs must be at least 1")])
def test_bad_flags_give_one_error_line_and_status_2(capsys, argv, words):
    with pytest.raises(SystemExit) as e:
        parse_config(DemoConfig, argv, prog="demo")
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "error:" in err and words in err and "Traceback" not in err


def test_a_field_without_help_is_a_programming_error():
    @dataclasses.dataclass
    class Bare:
        x: int = 1
    with pytest.raises(TypeError, match="Bare.x has no help text"):
        build_parser(Bare)


def test_a_stop_asked_for_at_the_last_step_finishes_the_run():
    tr = make(max_steps=4, stop_after=4)
    assert tr.run(log=quiet)["finished"]

