"""Agora: the pruning readings on hand-built grids, termination, labels from the reference only,
determinism across executors, resume, the CLI's errors, and a miniature real run."""

from __future__ import annotations

import concurrent.futures as cf
import dataclasses
import json
import os
import subprocess
import sys
import warnings

import numpy as np
import pytest

from minibort import agora as A
from minibort.data import Dataset, Example
from minibort.grids import GridError, grid, load_grid
from minibort.neighbours import TokenEdits

# ------------------------------------------------------------------------------------ the pruning rules


def theta(seed, lr, wd):
    return {"seed": seed, "lr": lr, "weight_decay": wd}


def test_lcs_of_pairs():
    a = [("seed", 0), ("lr", 1e-4), ("weight_decay", 0)]
    b = [("seed", 1), ("lr", 1e-4), ("weight_decay", 0)]
    assert A.lcs(a, b) == [("lr", 1e-4), ("weight_decay", 0)]
    assert A.lcs("ABCBDAB", "BDCABA") in (list("BCBA"), list("BDAB"), list("BCAB"))
    assert A.lcs([], b) == []


def test_prune_lcs_max_by_hand():
    ordered = [theta(0, 1e-4, 0),      # the first (the worst, under worst_first)
               theta(1, 1e-4, 0),      # shares lr and wd: LCS 2
               theta(0, 1e-5, 10),     # shares seed: LCS 1
               theta(0, 1e-4, 10),     # shares seed and lr: LCS 2
               theta(1, 1e-5, 10)]     # shares nothing: LCS 0
    assert A.prune_lcs_max(ordered) == [0, 1, 3]
    # nothing in common with the first: only the first goes
    assert A.prune_lcs_max([theta(0, 1, 2), theta(1, 2, 3), theta(2, 3, 4)]) == [0]
    assert A.prune_lcs_max([theta(0, 1, 2)]) == [0]
    assert A.prune_lcs_max([]) == []


def test_prune_run_by_hand():
    ordered = [theta(0, 1e-4, 0),
               theta(1, 1e-4, 0),      # common with the first: (lr, wd)
               theta(1, 1e-4, 10),     # common with (lr, wd): (lr)
               theta(0, 1e-5, 0),      # common with (lr): nothing -> the run ends here
               theta(0, 1e-4, 0.5)]
    assert A.prune_run(ordered) == [0, 1, 2]
    assert A.prune_run([theta(0, 1, 2), theta(1, 2, 3), theta(0, 1, 2.5)]) == [0]


def test_sort_worst_first_keeps_grid_order_on_ties():
    assert A.sort_thetas([{}, {}, {}, {}], [0.5, 0.25, 0.5, 0.25], "worst_first") == [1, 3, 0, 2]
    assert A.sort_thetas([{}, {}, {}, {}], [0.5, 0.25, 0.5, 0.25], "best_first") == [0, 2, 1, 3]


# ------------------------------------------------------------------------------------ a fake fit


WORDS = {"good": ["fine", "great", "nice", "lovely", "superb", "bright"],
         "bad": ["awful", "poor", "grim", "nasty", "dull", "sad"]}


def make_data(n: int, seed: int, name: str) -> Dataset:
    """Sentences of 6 words with 2 label words among fillers; the label is the majority of label words."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        label = ["bad", "good"][i % 2]
        words = [f"w{int(rng.integers(40))}" for _ in range(4)] + list(rng.choice(WORDS[label], 2))
        rng.shuffle(words)
        out.append(Example(" ".join(words), None, label))
    return Dataset(out, ["bad", "good"], name)


@dataclasses.dataclass
class VoteModel:
    """Word votes counted on the train set; θ's seed and lr flip a few predictions, deterministically."""

    votes: dict
    noise: float
    seed: int

    def predict(self, ds: Dataset) -> np.ndarray:
        out = []
        for k, e in enumerate(ds):
            score = sum(self.votes.get(w, 0) for w in e.text.split())
            flip = np.random.default_rng([self.seed, len(e.text), k]).random() < self.noise
            out.append(int((score > 0) != flip))
        return np.array(out)


def vote_fit(theta, train, dev, start=None):
    votes: dict = {} if start is None else dict(start.votes)
    for e in train:
        for w in e.text.split():
            votes[w] = votes.get(w, 0) + (1 if e.label == "good" else -1)
    model = VoteModel(votes, noise=0.3 * theta["lr"], seed=theta["seed"])
    return model, model.predict(dev)


def gold_reference(texts):
    """An ok-ish reference: the sign of its own fixed lexicon."""
    return ["good" if sum(w in WORDS["good"] for w in t.split()) >= sum(w in WORDS["bad"] for w in t.split())
            else "bad" for t in texts]


SMALL = grid(seed=[0, 1], lr=[0.5, 1.0], weight_decay=[0, 1])
TRAIN, DEV, TEST = make_data(12, 0, "train"), make_data(30, 1, "dev"), make_data(30, 2, "test")


def run(**kw):
    args = {"fit": vote_fit, "generate": TokenEdits(), "progress": False}
    args.update(kw)
    return A.agora("fake", args.pop("reference", gold_reference), TRAIN, DEV, args.pop("thetas", SMALL), **args)


def strip_times(history):
    return [{k: v for k, v in r.items() if k != "wall_time"} for r in history]


# ------------------------------------------------------------------------------------ the loop


def test_the_loop_runs_and_records_each_round():
    r = run()
    assert r.history[0]["thetas_before"] == len(SMALL)
    for a, b in zip(r.history, r.history[1:]):
        assert b["thetas_before"] == a["thetas_after"] < a["thetas_before"]
    assert r.history[-1]["thetas_after"] == 0 and r.stopped in ("theta empty", "no mistakes on dev")
    assert r.grid_best["dev_accuracy"] == max(s["dev_accuracy"] for s in r.history[0]["scores"])
    assert r.dev_accuracy == max(h["best_dev_accuracy"] for h in r.history)
    assert len(r.train) == len(TRAIN) + sum(g["kept"] for g in r.generated)
    assert r.fits == sum(h["thetas_before"] for h in r.history)


@pytest.mark.parametrize("prune", ["lcs_max", "run"])
def test_ends_within_theta_rounds_even_when_every_score_ties(prune):
    def constant_fit(theta, train, dev, start=None):
        return None, np.zeros(len(dev), dtype=np.int64)              # every θ: the same accuracy
    thetas = load_grid("original")[:40]
    r = run(fit=constant_fit, thetas=thetas, prune=prune, points_per_mistake=0)
    assert 1 <= len(r.history) <= len(thetas)
    assert r.history[-1]["thetas_after"] == 0
    assert sum(len(h["removed"]) for h in r.history) == len(thetas)


def test_generated_labels_come_from_the_reference_never_from_gold():
    def always_bad(texts):
        return ["bad"] * len(texts)
    with pytest.warns(UserWarning, match="2/3"):            # a constant reference is at chance
        r = run(reference=always_bad)
    assert r.generated, "no points were generated; the test would prove nothing"
    assert {g["label"] for g in r.generated} == {"bad"}
    sources = {e.text: e.label for e in DEV}
    assert any(sources[g["source"]] == "good" for g in r.generated)   # gold would have said good
    added = r.train.examples[len(TRAIN):]
    assert {e.label for e in added} == {"bad"}


def test_generated_points_are_never_dev_or_test_texts_and_sources_are_mistakes():
    r = A.agora("fake", gold_reference, TRAIN, DEV, SMALL, test=TEST, fit=vote_fit, generate=TokenEdits(),
                progress=False)
    forbidden = {e.text for e in DEV} | {e.text for e in TEST} | {e.text for e in TRAIN}
    texts = [g["text"] for g in r.generated]
    assert texts and not forbidden & set(texts) and len(set(texts)) == len(texts)
    assert {g["source"] for g in r.generated} <= {e.text for e in DEV}


def test_ablations_train_sources_and_no_generation():
    r = run(sources="train")
    assert r.generated and {g["source"] for g in r.generated} <= {e.text for e in TRAIN} | {
        g["text"] for g in r.generated}
    r0 = run(points_per_mistake=0)
    assert r0.generated == [] and len(r0.train) == len(TRAIN)


def test_options_select_replay_warm_start_budget():
    r = run(select="last")
    assert r.round == len(r.history)
    r = run(replay=2)
    assert sum(h["replay"] for h in r.history) == 2
    main_rounds = [h for h in r.history if not h["replay"]]
    assert [h["alive"] for h in r.history if h["replay"]] == [h["alive"] for h in main_rounds][-2:]
    r = run(restart=False)
    assert len(r.history) >= 1
    r = run(max_rounds=1)
    assert len(r.history) == 1 and r.stopped == "max_rounds"


def test_min_confidence_filters_points():
    def proba(examples):
        return np.array([[0.9, 0.1] if len(e.text) % 2 else [0.55, 0.45] for e in examples])
    ref = A.Reference(lambda ex: ["bad"] * len(ex), ["bad", "good"], proba, "confident-bad")
    with pytest.warns(UserWarning):
        r = run(reference=ref, min_confidence=0.8)
    kept = [g for g in r.generated if g["kept"]]
    assert kept and len(kept) < len(r.generated)
    assert all(g["confidence"] >= 0.8 for g in kept) and all(len(g["text"]) % 2 for g in kept)


def test_same_seed_same_history_and_executors_agree():
    a = run(seed=3)
    b = run(seed=3)
    assert strip_times(a.history) == strip_times(b.history) and a.generated == b.generated
    with cf.ThreadPoolExecutor(2) as ex:
        c = run(seed=3, executor=ex)
    assert strip_times(c.history) == strip_times(a.history)


def test_one_worker_equals_two_workers():
    pool1, pool2 = A.worker_pool(1), A.worker_pool(2)
    try:
        one = run(seed=1, executor=pool1)
        two = run(seed=1, executor=pool2)
        pids = {pool2.submit(os.getpid).result() for _ in range(4)}
    finally:
        pool1.shutdown()
        pool2.shutdown()
    assert strip_times(one.history) == strip_times(two.history) == strip_times(run(seed=1).history)
    assert os.getpid() not in pids


def _blas_threads() -> list:
    import threadpoolctl
    return [(i["internal_api"], i["num_threads"]) for i in threadpoolctl.threadpool_info()]


@pytest.mark.reference
def test_workers_use_one_blas_thread():
    pytest.importorskip("threadpoolctl")
    pool = A.worker_pool(2)
    try:
        infos = [pool.submit(_blas_threads).result() for _ in range(4)]
    finally:
        pool.shutdown()
    assert os.environ.get("OPENBLAS_NUM_THREADS") != "7"
    assert all(infos) and all(n == 1 for info in infos for _, n in info), infos


@pytest.mark.reference
def test_dask_local_cluster_agrees():
    distributed = pytest.importorskip("distributed")
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                                  dashboard_address=None) as cluster, distributed.Client(cluster) as client:
        on_dask = run(seed=2, executor=client.get_executor())
    assert strip_times(on_dask.history) == strip_times(run(seed=2).history)


# ------------------------------------------------------------------------------------ errors


def test_errors_name_the_problem():
    with pytest.raises(GridError, match="empty"):
        run(thetas=[])
    with pytest.raises(A.AgoraError, match="not one of the data's labels"):
        run(reference=lambda texts: ["positive"] * len(texts))
    ref = A.Reference(lambda ex: ["x"] * len(ex), ["x", "y"], None, "other-task")
    with pytest.raises(A.AgoraError, match="labels"):
        run(reference=ref)
    with pytest.raises(A.AgoraError, match="or below the 2/3"):
        run(reference=lambda texts: ["bad"] * len(texts), strict=True)
    with pytest.raises(A.AgoraError, match="unknown prune"):
        run(prune="longest")
    with pytest.raises(A.AgoraError, match="dev set is empty"):
        A.agora("fake", gold_reference, TRAIN, DEV.with_examples([]), SMALL, fit=vote_fit, progress=False)


def test_perfect_dev_stops_with_its_reason():
    def perfect(theta, train, dev, start=None):
        return None, dev.label_ids()
    r = run(fit=perfect)
    assert len(r.history) == 1 and r.stopped == "no mistakes on dev" and r.generated == []


# ------------------------------------------------------------------------------------ the output folder


def test_output_folder_and_resume_after_an_interrupted_round(tmp_path):
    whole = run(seed=5, out=str(tmp_path / "whole"), test=TEST)
    files = sorted(os.listdir(tmp_path / "whole"))
    assert {"history.json", "metrics.json", "generated.tsv", "best", "grid_best", "state.json"} <= set(files)
    metrics = json.loads((tmp_path / "whole" / "metrics.json").read_text())
    assert set(metrics) >= {"grid_best", "agora", "reference", "fits", "rounds"}
    assert metrics["grid_best"]["dev_accuracy"] == whole.grid_best["dev_accuracy"]
    assert "test_accuracy" in metrics["agora"]
    assert len((tmp_path / "whole" / "generated.tsv").read_text().splitlines()) == len(whole.generated) + 1

    calls = {"n": 0}

    def interrupted_fit(theta, train, dev, start=None):
        calls["n"] += 1
        if calls["n"] == len(SMALL) + 2:                  # inside round 2
            raise KeyboardInterrupt
        return vote_fit(theta, train, dev, start)
    out = str(tmp_path / "resumed")
    with pytest.raises(KeyboardInterrupt):
        run(seed=5, out=out, test=TEST, fit=interrupted_fit)
    assert len(json.loads((tmp_path / "resumed" / "history.json").read_text())) == 1
    resumed = run(seed=5, out=out, test=TEST)
    assert strip_times(resumed.history) == strip_times(whole.history)
    assert resumed.generated == whole.generated
    assert resumed.dev_accuracy == whole.dev_accuracy
    again = json.loads((tmp_path / "resumed" / "metrics.json").read_text())
    assert again["agora"]["test_accuracy"] == metrics["agora"]["test_accuracy"]

    with pytest.raises(A.AgoraError, match="other settings"):
        run(seed=6, out=out)
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep")
    with pytest.raises(A.AgoraError, match="not an Agora output folder"):
        run(out=str(tmp_path / "mine"))


# ------------------------------------------------------------------------------------ the CLI


def write_tsv(path, ds):
    path.write_text("text\tlabel\n" + "".join(f"{e.text}\t{e.label}\n" for e in ds))
    return str(path)


def cli(*args, cwd=None):
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "minibort.agora", *args], capture_output=True, text=True,
                          env=env, cwd=cwd, timeout=300, check=False)


def test_cli_help_and_errors(tmp_path):
    assert cli("--help").returncode == 0
    train, dev = write_tsv(tmp_path / "train.tsv", TRAIN), write_tsv(tmp_path / "dev.tsv", DEV)
    base = ["--train", train, "--dev", dev, "--no-progress"]
    (tmp_path / "empty.json").write_text("[]")
    cases = [
        (["--reference", "bow", "--grid", str(tmp_path / "empty.json"), "--out", str(tmp_path / "o1")], "empty"),
        (["--reference", "bow", "--grid", "huge", "--out", str(tmp_path / "o2")], "unknown grid"),
        (["--reference", str(tmp_path / "nowhere"), "--out", str(tmp_path / "o3")], "unknown reference"),
        (["--reference", "bow", "--out", str(tmp_path / "o4"), "--low", "0.5", "--high", "0.2"], "low <= high"),
        (["--reference", "bow", "--out", str(tmp_path / "o5"), "--dev", str(tmp_path / "missing.tsv")], "missing"),
    ]
    for extra, message in cases:
        r = cli(*base, *extra)
        assert r.returncode != 0 and "Traceback" not in r.stderr, r.stderr
        assert r.stderr.startswith("error: ") and message in r.stderr, (message, r.stderr)
    other = tmp_path / "other.tsv"
    other.write_text("text\tlabel\n" + "".join(f"{e.text}\tneutral\n" for e in DEV))
    r = cli("--train", train, "--dev", str(other), "--reference", "bow", "--out", str(tmp_path / "o6"))
    assert r.returncode != 0 and "error: " in r.stderr and "neutral" in r.stderr, r.stderr


def test_cli_miniature_real_agora(tmp_path):
    """bort-tiny, 3 sets, a dozen examples, one epoch each: the whole command, then a resume that has
    nothing left to do."""
    train, dev = write_tsv(tmp_path / "train.tsv", TRAIN), write_tsv(tmp_path / "dev.tsv", make_data(12, 1, "dev"))
    test = write_tsv(tmp_path / "test.tsv", make_data(12, 2, "test"))
    grid_file = tmp_path / "grid.json"
    grid_file.write_text(json.dumps({"seed": [0, 1, 2], "lr": [1e-3], "epochs": [1]}))
    out = tmp_path / "run"
    args = ["--model", "bort-tiny", "--reference", "bow", "--train", train, "--dev", dev, "--test", test,
            "--grid", str(grid_file), "--out", str(out), "--max-length", "24", "--no-progress"]
    r = cli(*args)
    assert r.returncode == 0, r.stderr
    history = json.loads((out / "history.json").read_text())
    assert history[0]["thetas_before"] == 3 and history[-1]["thetas_after"] == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["fits"] == sum(h["thetas_before"] for h in history)
    for key in ("grid_best", "agora"):
        assert 0 <= metrics[key]["test_accuracy"] <= 1
    from minibort.finetune import load_classifier, predict
    model, tok = load_classifier(out / "best")
    dev_ds = make_data(12, 1, "dev")
    assert np.mean(predict(model, tok, dev_ds) == dev_ds.label_ids()) == metrics["agora"]["dev_accuracy"]
    lines = (out / "generated.tsv").read_text().splitlines()
    assert len(lines) == metrics["generated"] + 1
    again = cli(*args)
    assert again.returncode == 0, again.stderr
    assert json.loads((out / "history.json").read_text()) == history
    # the run's model as a reference: a classifier folder, its labels checked against the data's
    ref = A.load_reference(str(out / "best"), TRAIN)
    assert ref.labels == ["bad", "good"] and set(ref.predict(list(DEV.examples))) <= {"bad", "good"}
    renamed = Dataset([dataclasses.replace(e, label={"bad": "neg", "good": "pos"}[e.label]) for e in TRAIN],
                      ["neg", "pos"], "renamed")
    with pytest.raises(A.AgoraError, match="reference's labels"):
        A.agora("bort-tiny", str(out / "best"), renamed, renamed, [{"seed": 0}], fit=vote_fit, progress=False)


def test_cli_two_workers_give_the_same_run(tmp_path):
    """The real fine-tunes in a pool of 2 processes (one BLAS thread each) and in this one agree."""
    train, dev = write_tsv(tmp_path / "train.tsv", TRAIN), write_tsv(tmp_path / "dev.tsv", make_data(12, 1, "dev"))
    grid_file = tmp_path / "grid.json"
    grid_file.write_text(json.dumps({"seed": [0, 1], "lr": [1e-3], "epochs": [1]}))
    histories = []
    for workers in ("1", "2"):
        out = tmp_path / f"w{workers}"
        r = cli("--reference", "bow", "--train", train, "--dev", dev, "--grid", str(grid_file), "--out", str(out),
                "--max-length", "24", "--generator", "edit", "--workers", workers, "--no-progress")
        assert r.returncode == 0, r.stderr
        histories.append(strip_times(json.loads((out / "history.json").read_text())))
    assert histories[0] == histories[1]


# ------------------------------------------------------------------------------------ grids


def test_grid_presets_and_files(tmp_path):
    original = load_grid("original")
    assert len(original) == 480 == 5 * 3 * 4 * 4 * 2
    assert original[0] == {"seed": 0, "lr": 1e-4, "weight_decay": 0.0, "warmup_ratio": 0.35, "batch_size": 8}
    assert {t["lr"] for t in original} == {1e-4, 1e-5, 9e-6} and {t["seed"] for t in original} == set(range(5))
    assert len({json.dumps(t, sort_keys=True) for t in original}) == 480
    assert 1 <= len(load_grid("small")) <= 8
    (tmp_path / "axes.json").write_text('{"lr": [1e-3, 1e-4], "seed": [0, 1, 2]}')
    assert load_grid(str(tmp_path / "axes.json")) == grid(lr=[1e-3, 1e-4], seed=[0, 1, 2])
    (tmp_path / "list.json").write_text('[{"lr": 0.001}, {"lr": 0.0001, "seed": 3}]')
    assert load_grid(str(tmp_path / "list.json")) == [{"lr": 0.001}, {"lr": 0.0001, "seed": 3}]
    for text, message in [('[{"lr": 1}, {"lr": 1}]', "the same"), ('{"lr": []}', "no values"),
                          ("[", "cannot read"), ('"small"', "must hold a list"), ('[{"lr": [1, 2]}]', "values")]:
        (tmp_path / "bad.json").write_text(text)
        with pytest.raises(GridError, match=message):
            load_grid(str(tmp_path / "bad.json"))


def test_default_fit_refuses_names_finetune_does_not_know():
    with pytest.raises(A.AgoraError, match="momentum"):
        A.FinetuneFit("bort-tiny")({"seed": 0, "momentum": 0.9}, TRAIN, DEV)


def test_a_bow_classifier_object_is_a_reference():
    from minibort.bow import BowClassifier
    clf = BowClassifier(min_count=1).fit(TRAIN)
    ref = A.as_reference(clf, TRAIN.labels)
    assert ref.labels == ["bad", "good"]
    names = A.label_names(ref.predict(list(DEV.examples)), TRAIN.labels, "bow")
    assert names == [TRAIN.labels[i] for i in clf.predict(DEV)]
    assert ref.predict_proba(list(DEV.examples)).shape == (len(DEV), 2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")            # its dev accuracy on 12 examples may be <= 2/3
        r = run(reference=clf, min_confidence=0.6)
    assert r.generated and all(g["label"] in ("bad", "good") for g in r.generated)


def test_a_fit_with_the_wrong_number_of_predictions_is_named():
    with pytest.raises(A.AgoraError, match="one label id per example"):
        run(fit=lambda theta, train, dev, start=None: (None, np.zeros(3, dtype=np.int64)))
