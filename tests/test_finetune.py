"""minibort.finetune: the recipes replay PyTorch's trajectories (fixture from
tests/reference/make_finetune_fixtures.py), and the whole run (Python and CLI) on a tiny model:
determinism, resume, output files, GLUE folders, every error case the issue lists."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from conftest import FIXTURES

from minibort import BortConfig, BortForMaskedLM, BortForSequenceClassification, Tokenizer
from minibort.data import Dataset, Example, load_glue
from minibort.finetune import (
    FinetuneConfig,
    FinetuneError,
    bort_schedule,
    bucketed_batches,
    finetune,
    load_classifier,
    make_optimizer,
    predict,
    predict_proba,
)
from minibort.trainer import Trainer

TRAJECTORY = FIXTURES / "training" / "finetune_trajectory.npz"
GLUE = FIXTURES / "glue"
ENV = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}


# ------------------------------------------------------------------------------------ exactness


def _replay(z, kind: str, dtype) -> dict:
    """minibort's run of the fixture's batches: the recipe's optimizer and schedule, the shared Trainer."""
    hp = json.loads(str(z[f"{kind}_hparams"]))
    cfg = BortConfig(**{**json.loads(str(z["config"])), "num_labels": hp["num_labels"]})
    prefix = f"{kind}_param/"
    params = {k[len(prefix):]: z[k].astype(dtype) for k in z.files if k.startswith(prefix)}
    model = BortForSequenceClassification(cfg, params, dtype=dtype,
                                          classifier_head="bort" if kind == "bort" else "pooler")
    if hp["recipe"] == "transformers":
        opt, sched = make_optimizer("transformers", model.params, hp["lr"], hp["weight_decay"],
                                    hp["warmup_ratio"], steps_per_epoch=hp["total"], epochs=1)
    else:
        opt, sched = make_optimizer("bort", model.params, hp["lr"], hp["weight_decay"], hp["warmup_ratio"],
                                    steps_per_epoch=10, epochs=1, n_train=hp["n_train"],
                                    batch_size=hp["batch_size"], ramp_up_epochs=hp["ramp_up_epochs"])
    ids, mask = z["input_ids"], z["attention_mask"]
    y = z["targets"] if hp["num_labels"] == 1 else z["labels"]

    def step_fn(idx):
        s = int(idx[0])
        loss, grads = model.loss_and_grads(ids[s], y[s], mask[s])
        return loss, grads, 1
    trainer = Trainer(model, opt, step_fn, lambda epoch: [np.array([s]) for s in range(len(ids))],
                      max_steps=len(ids), schedule=sched, clip=hp["clip"], progress=False)
    trainer.run()
    final, _ = model.loss_and_grads(ids[0], y[0], mask[0])
    return {"losses": np.array(trainer.state["losses"]), "grad_norms": np.array(trainer.state["grad_norms"]),
            "lrs": np.array(trainer.state["lrs"]), "final_loss": final}


@pytest.mark.parametrize("kind", ["transformers", "bort", "regression"])
@pytest.mark.parametrize("dtype, tag, tol", [(np.float64, "f64", 1e-10), (np.float32, "f32", 1e-5)])
def test_trajectory_matches_pytorch(kind, dtype, tag, tol):
    with np.load(TRAJECTORY) as z:
        assert int(z["format_version"]) == 1, "re-run tests/reference/make_finetune_fixtures.py"
        mine = _replay(z, kind, dtype)
        ref = {k: z[f"{kind}_{tag}_{k}"] for k in ("losses", "grad_norms", "lrs", "final_loss")}
    for name in ("losses", "grad_norms", "final_loss"):
        err = float(np.max(np.abs(np.asarray(mine[name]) - ref[name])))
        print(f"{kind} {tag} {name}: max err {err:.2e} (tol {tol:g})")
        assert err <= tol, name
    np.testing.assert_allclose(mine["lrs"], ref["lrs"], rtol=1e-12, atol=0)


def test_bort_schedule_rises_decays_and_holds_the_floor():
    fn = bort_schedule(1e-3, num_train_steps=10, num_warmup_steps=4)
    lrs = [1e-3 * fn(s) for s in range(14)]
    assert lrs[:5] == pytest.approx([0, 2.5e-4, 5e-4, 7.5e-4, 1e-3], abs=1e-18)
    assert lrs[7] == pytest.approx(1e-3 * (1 - 3 / 6), abs=1e-18)
    assert lrs[10:] == pytest.approx([1e-7] * 4, rel=1e-12)


def test_bucketed_batches_cover_every_example_once_and_group_lengths():
    lengths = np.random.default_rng(0).integers(3, 100, 203)
    fn = bucketed_batches(lengths, batch_size=8, seed=1, bucket=5)
    for epoch in range(3):
        b = fn(epoch)
        assert sorted(np.concatenate(b).tolist()) == list(range(203))
        assert all(len(x) <= 8 for x in b)
        assert [x.tolist() for x in fn(epoch)] == [x.tolist() for x in b]     # a function of the epoch
    assert [x.tolist() for x in fn(0)] != [x.tolist() for x in fn(1)]
    spread = np.mean([np.ptp(lengths[x]) for x in fn(0)])
    plain = np.mean([np.ptp(lengths[x]) for x in bucketed_batches(lengths, 8, 1, bucket=0)(0)])
    print(f"mean length spread in a batch: bucketed {spread:.1f}, plain {plain:.1f}")
    assert spread < plain / 2


# ------------------------------------------------------------------------------------ whole runs


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> str:
    """A small random Bort with bort-tiny's tokenizer: fast enough for end-to-end runs."""
    folder = tmp_path_factory.mktemp("tiny-model")
    tok = Tokenizer.from_pretrained("bort-tiny")
    cfg = BortConfig(vocab_size=tok.vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                     intermediate_size=24, max_position_embeddings=32, hidden_dropout_prob=0.0,
                     attention_probs_dropout_prob=0.0)
    BortForMaskedLM(cfg, seed=0).save_pretrained(folder)
    tok.save_pretrained(folder)
    return str(folder)


WORDS = {"pos": ["good", "great", "fine", "lovely"], "neg": ["bad", "awful", "poor", "broken"]}


def toy(n: int, seed: int) -> Dataset:
    rng = np.random.default_rng(seed)
    ex = []
    for i in range(n):
        label = ["neg", "pos"][i % 2]
        filler = " ".join(rng.choice(["the", "a", "code", "runs", "file", "loop"], rng.integers(1, 6)))
        ex.append(Example(f"{filler} {rng.choice(WORDS[label])} {filler}", None, label))
    return Dataset(ex, ["neg", "pos"], f"toy{seed}")


def cfg_for(model: str, **kw) -> FinetuneConfig:
    return FinetuneConfig(**{"model": model, "epochs": 3, "batch_size": 8, "lr": 1e-2, "progress": False,
                             "warmup_ratio": 0.0, **kw})


def test_same_seed_same_run_bit_for_bit_and_learning(tiny_model):
    train, dev = toy(96, 0), toy(32, 1)
    a = finetune(cfg_for(tiny_model, epochs=5), train=train, dev=dev, progress=False)
    b = finetune(cfg_for(tiny_model, epochs=5), train=train, dev=dev, progress=False)
    for k in a.model.params:
        assert np.array_equal(a.model.params[k], b.model.params[k]), k
    assert [h["train_loss"] for h in a.history] == [h["train_loss"] for h in b.history]
    c = finetune(cfg_for(tiny_model, seed=1, epochs=1), train=train, dev=dev, progress=False)
    assert not np.array_equal(a.model.params["classifier.weight"], c.model.params["classifier.weight"])
    print("history", [(h["epoch"], round(h["train_loss"], 3), h["accuracy"]) for h in a.history])
    assert a.metric_name == "accuracy" and a.score == max(h["accuracy"] for h in a.history)
    assert a.score >= 0.8 and a.dev_metrics["accuracy"] == a.score
    assert len(a.history) == 5 and 1 <= a.best_epoch <= 5
    # the model holds the best epoch's weights: re-scoring dev gives the best score
    assert np.mean(predict(a.model, a.tokenizer, dev) == dev.label_ids()) == a.score
    p = predict_proba(a.model, a.tokenizer, dev)
    assert p.shape == (32, 2) and np.allclose(p.sum(axis=1), 1)


def test_bort_recipe_and_head_run(tiny_model):
    r = finetune(cfg_for(tiny_model, recipe="bort", epochs=2, weight_decay=0.0, lr=1e-3, ramp_up_epochs=1,
                         batch_size=None, warmup_ratio=None),
                 train=toy(64, 0), dev=toy(16, 1), progress=False)
    assert r.model.classifier_head == "bort" and r.config.batch_size == 8 and r.config.warmup_ratio == 0.45
    lrs = [h["lr"] for h in r.history]
    assert lrs[-1] == pytest.approx(1e-7)                   # epoch 2 runs at the floor
    assert np.isfinite(r.score)


def test_out_folder_files_and_reloading(tiny_model, tmp_path):
    test = toy(10, 5)
    out = tmp_path / "run"
    r = finetune(cfg_for(tiny_model, out=str(out), epochs=2), train=toy(64, 0), dev=toy(16, 1), test=test,
                 progress=False)
    assert sorted(os.listdir(out)) == ["checkpoint.npz", "metrics.json", "model", "predictions.tsv"]
    m = json.loads((out / "metrics.json").read_text())
    assert m["best_epoch"] == r.best_epoch and m["metric"] == "accuracy" and len(m["history"]) == 2
    assert m["test"]["test"]["accuracy"] == pytest.approx(np.mean(r.test_predictions["test"] == test.label_ids()))
    lines = (out / "predictions.tsv").read_text().splitlines()
    assert lines[0] == "index\tprediction" and len(lines) == 11
    assert all(line.split("\t")[1] in ("neg", "pos") for line in lines[1:])
    model, tok = load_classifier(out / "model")
    assert model.config.extra["id2label"] == {"0": "neg", "1": "pos"}
    np.testing.assert_array_equal(predict(model, tok, test), r.test_predictions["test"])
    cfg = json.loads((out / "model" / "config.json").read_text())
    assert cfg["architectures"] == ["BertForSequenceClassification"] and cfg["num_labels"] == 2


def test_interrupted_run_resumes_to_the_same_weights(tiny_model, tmp_path):
    train, dev = toy(64, 0), toy(16, 1)
    whole = finetune(cfg_for(tiny_model, epochs=2), train=train, dev=dev, progress=False)
    out = str(tmp_path / "run")
    first = finetune(cfg_for(tiny_model, epochs=2, out=out, stop_after=5), train=train, dev=dev, progress=False)
    assert not first.finished and os.path.exists(os.path.join(out, "checkpoint.npz"))
    assert not os.path.exists(os.path.join(out, "model"))
    second = finetune(cfg_for(tiny_model, epochs=2, out=out), train=train, dev=dev, progress=False)
    assert second.finished
    for k in whole.model.params:
        assert np.array_equal(whole.model.params[k], second.model.params[k]), k
    with pytest.raises(ValueError, match="lr"):                 # other settings: refused, not mixed
        finetune(cfg_for(tiny_model, epochs=2, out=out, lr=1e-4), train=train, dev=dev, progress=False)


def test_patience_stops_early_and_dropout_flag(tiny_model):
    r = finetune(cfg_for(tiny_model, epochs=6, lr=0.0, patience=2, dropout=0.2), train=toy(32, 0), dev=toy(16, 1),
                 progress=False)
    assert r.stopped_early and len(r.history) == 3 and r.best_epoch == 1     # lr 0: nothing improves
    assert r.model.config.hidden_dropout_prob == 0.2 and r.model.config.attention_probs_dropout_prob == 0.2


def test_glue_tasks_from_folders(tiny_model, tmp_path):
    r = finetune(cfg_for(tiny_model, task="mnli", data=str(GLUE / "MNLI"), epochs=1, batch_size=2,
                         out=str(tmp_path / "mnli")), progress=False)
    assert r.metric_name == "accuracy" and "dev_mismatched/accuracy" in r.dev_metrics
    files = sorted(os.listdir(tmp_path / "mnli"))
    assert "predictions_test_matched.tsv" in files and "predictions_test_mismatched.tsv" in files
    pred = (tmp_path / "mnli" / "predictions_test_matched.tsv").read_text().splitlines()
    assert pred[1].split("\t")[1] in ("contradiction", "entailment", "neutral")
    s = finetune(cfg_for(tiny_model, task="stsb", data=str(GLUE / "STS-B"), epochs=1, batch_size=2,
                         out=str(tmp_path / "stsb")), progress=False)
    assert s.metric_name == "pearson" and s.model.config.num_labels == 1
    lines = (tmp_path / "stsb" / "predictions.tsv").read_text().splitlines()
    assert lines[1].startswith("0\t") and float(lines[1].split("\t")[1]) == pytest.approx(
        float(s.test_predictions["test"][0]), abs=5e-4)
    c = finetune(cfg_for(tiny_model, task="cola", data=str(GLUE), epochs=1, batch_size=2), progress=False)
    assert c.metric_name == "mcc" and set(c.dev_metrics) == {"mcc", "accuracy", "loss"}


def test_errors_name_the_problem(tiny_model, tmp_path):
    train = toy(16, 0)
    one_class = Dataset([e for e in toy(8, 1) if e.label == "pos"], ["neg", "pos"])
    with pytest.raises(FinetuneError, match="only one class .*'pos'.*give it examples of each class"):
        finetune(cfg_for(tiny_model), train=train, dev=one_class, progress=False)
    with pytest.raises(FinetuneError, match="--max-length 64 is over the model's 32 positions"):
        finetune(cfg_for(tiny_model, max_length=64), train=train, dev=toy(8, 1), progress=False)
    three = Dataset([Example("x", None, c) for c in "abcabc"], ["a", "b", "c"])
    fitted = tmp_path / "fitted"
    finetune(cfg_for(tiny_model, epochs=1, out=str(fitted)), train=train, dev=toy(8, 1), progress=False)
    with pytest.raises(FinetuneError, match=r"fine-tuned for \['neg', 'pos'\]; this data has \['a', 'b', 'c'\]"):
        finetune(cfg_for(str(fitted / "model")), train=three, dev=three, progress=False)
    # the same labels: its own head is kept and trained further (a warm start)
    warm = finetune(cfg_for(str(fitted / "model"), epochs=1), train=train, dev=toy(8, 1), progress=False)
    assert warm.finished
    with pytest.raises(FinetuneError, match="without labels"):
        finetune(cfg_for(tiny_model), train=train, dev=train.with_examples([Example("x"), Example("y")]),
                 progress=False)
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("mine")
    with pytest.raises(FinetuneError, match="did not write"):
        finetune(cfg_for(tiny_model, out=str(tmp_path / "busy")), train=train, dev=toy(8, 1), progress=False)


def run_cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "minibort.finetune", *args], capture_output=True, text=True,
                          env=ENV, cwd=cwd, check=False)


def test_cli_help_lists_the_flags():
    r = run_cli("--help")
    assert r.returncode == 0
    for flag in ("--model", "--task", "--data", "--train", "--dev", "--test", "--text-column",
                 "--text-pair-column", "--label-column", "--out", "--epochs", "--batch-size", "--lr",
                 "--weight-decay", "--warmup-ratio", "--max-length", "--seed", "--patience", "--recipe",
                 "--classifier-head", "--dropout"):
        assert flag in r.stdout, flag


def test_benchmark_help():
    r = subprocess.run([sys.executable, "-m", "minibort.bench.finetune", "--help"], capture_output=True, text=True,
                       env=ENV, check=False)
    assert r.returncode == 0 and "table" in r.stdout and "--steps" in r.stdout


def test_cli_run_and_errors(tiny_model, tmp_path):
    d = tmp_path / "data"
    d.mkdir()
    for name, ds in (("train", toy(32, 0)), ("dev", toy(8, 1))):
        (d / f"{name}.csv").write_text("review,stars\n" + "".join(f"{e.text},{e.label}\n" for e in ds))
    out = tmp_path / "out"
    ok = run_cli("--model", tiny_model, "--train", str(d / "train.csv"), "--dev", str(d / "dev.csv"),
                 "--text-column", "review", "--label-column", "stars", "--epochs", "1", "--out", str(out),
                 "--no-progress")
    assert ok.returncode == 0, ok.stderr
    assert "best epoch 1: dev accuracy" in ok.stdout and (out / "model" / "model.safetensors").exists()
    cases = [
        (["--train", str(d / "train.csv"), "--dev", str(d / "dev.csv")], "no column 'text'"),
        (["--train", str(d / "train.csv"), "--dev", str(d / "dev.csv"), "--text-column", "review",
          "--label-column", "stars", "--max-length", "600"], "over the model's 32 positions"),
        (["--task", "sst2"], "needs --data"),
        (["--task", "sst2", "--data", str(GLUE / "SST-2"), "--recipe", "keras"], "invalid choice"),
        (["--train", str(d / "missing.csv"), "--dev", str(d / "dev.csv")], "no such file"),
    ]
    for args, message in cases:
        r = run_cli("--model", tiny_model, "--no-progress", *args)
        assert r.returncode == 2 and message in r.stderr and "Traceback" not in r.stderr, (args, r.stderr)


def test_ctrl_c_leaves_a_resumable_run(tiny_model, tmp_path):
    import signal
    d = tmp_path / "data"
    d.mkdir()
    for name, ds in (("train", toy(320, 0)), ("dev", toy(8, 1))):
        (d / f"{name}.tsv").write_text("text\tlabel\n" + "".join(f"{e.text}\t{e.label}\n" for e in ds))
    args = ["-u", "-m", "minibort.finetune", "--model", tiny_model, "--train", str(d / "train.tsv"),
            "--dev", str(d / "dev.tsv"), "--epochs", "3", "--batch-size", "4", "--out", str(tmp_path / "out"),
            "--no-progress"]
    proc = subprocess.Popen([sys.executable, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=ENV)
    first = proc.stdout.readline()                        # the dev metric after epoch 1
    assert "(epoch 1.00): dev accuracy" in first, first + proc.stderr.read()
    proc.send_signal(signal.SIGINT)
    rest, err = proc.communicate(timeout=300)
    assert proc.returncode == 3 and "stopped at step" in rest and "Traceback" not in err, rest + err
    assert (tmp_path / "out" / "checkpoint.npz").exists() and not (tmp_path / "out" / "model").exists()
    again = subprocess.run([sys.executable, *args], capture_output=True, text=True, env=ENV, check=False)
    assert again.returncode == 0 and "best epoch" in again.stdout and "(epoch 1.00)" not in again.stdout, again.stderr
    assert (tmp_path / "out" / "model" / "model.safetensors").exists()


# ------------------------------------------------------------------------------------ reference tier


@pytest.mark.reference
def test_fine_tuned_folder_loads_in_transformers(tiny_model, tmp_path):
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    out = tmp_path / "run"
    r = finetune(cfg_for(tiny_model, epochs=1, out=str(out), recipe="bort", weight_decay=0.0),
                 train=toy(32, 0), dev=toy(8, 1), progress=False)
    t = transformers.BertForSequenceClassification.from_pretrained(out / "model", attn_implementation="eager")
    t.eval()
    dev = toy(8, 1)
    enc = r.tokenizer([e.text for e in dev])
    with torch.no_grad():
        logits = t(input_ids=torch.tensor(enc["input_ids"]),
                   attention_mask=torch.tensor(enc["attention_mask"])).logits.numpy()
    err = np.abs(logits - r.model(enc["input_ids"], enc["attention_mask"])).max()
    print(f"transformers vs minibort logits: max err {err:.2e}")
    assert err < 1e-5
    assert t.config.id2label == {0: "neg", 1: "pos"}
    assert load_glue("sst2", GLUE, "dev").labels == ["0", "1"]
