"""Agora: Bort's fine-tuning algorithm, from its author's description, with every open choice an argument.

Sources (quoted in the project's notes): A. de Wynter, "An Algorithm for Learning Smaller
Representations of Models With Scarce Data", arXiv 2010.07990 (Information Geometry, 2024), and the
author's notes in the alexa/bort repository. The algorithm's code was never released; this is
minibort's reading of the description. Inputs: a candidate (pretrained, not fine-tuned), an
"ok-ish" reference model (accuracy > 2/3), a train set D, a representative dev set E, a set Θ of
hyper-parameter sets and a function φ that generates new points near given ones.

    python -m minibort.agora --model bort-tiny --reference bow --train train.tsv --dev dev.tsv \\
        --test test.tsv --grid small --out runs/agora

The loop, the author's steps, is `agora()` below. Its output folder holds history.json (one row per
round), best/ (the model returned, with its tokenizer), grid_best/ (round 1's best: "enumerate Θ and
pick the best on dev", the paper's baseline), metrics.json and generated.tsv. Running the same
command again continues from the last finished round.

The fine-tunes of a round are independent. `--workers N` runs them in N processes with one BLAS
thread each; in Python, `agora(..., executor=...)` takes any concurrent.futures.Executor, e.g. a Dask
cluster's (`pip install "minibort[cluster]"`):

    from distributed import Client
    with Client("tcp://scheduler:8786") as client:          # or Client(LocalCluster(...))
        result = agora("bort-tiny", "bow", train, dev, "small", executor=client.get_executor())

The results do not depend on the executor: each θ carries its own seed, and results are gathered in
grid order.
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import dataclasses
import hashlib
import json
import os
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from .agora_models import (  # noqa: F401  (re-exported: Agora's public names live here too)
    AgoraError,
    FinetuneFit,
    Fitted,
    Reference,
    _fit_one,
    _Inline,
    as_reference,
    bow_reference,
    folder_reference,
    label_names,
    load_model,
    load_reference,
    save_model,
    worker_pool,
)
from .grids import GridError, Theta, check_grid, load_grid
from .neighbours import DEFAULT_HIGH, DEFAULT_LOW, Neighbour, make_phi

STATE_VERSION = 1



# ------------------------------------------------------------------------------------ pruning


def lcs(a: Sequence, b: Sequence) -> list:
    """The longest common subsequence of two sequences (dynamic programming, O(|a| |b|))."""
    n, m = len(a), len(b)
    table = np.zeros((n + 1, m + 1), dtype=np.int64)            # table[i, j] = LCS length of a[i:], b[j:]
    for i in range(n - 1, -1, -1):
        for j in range(m - 1, -1, -1):
            table[i, j] = table[i + 1, j + 1] + 1 if a[i] == b[j] else max(table[i + 1, j], table[i, j + 1])
    out, i, j = [], 0, 0
    while i < n and j < m:
        if a[i] == b[j]:
            out.append(a[i])
            i, j = i + 1, j + 1
        elif table[i + 1, j] >= table[i, j + 1]:
            i += 1
        else:
            j += 1
    return out


def pairs(theta: Theta) -> list[tuple[str, Any]]:
    """A hyper-parameter set as the sequence of (name, value) pairs the pruning compares."""
    return list(theta.items())


def prune_lcs_max(ordered: Sequence[Theta]) -> list[int]:
    """Positions (in `ordered`) to remove: the first set, and every set whose LCS with it is the longest.

    minibort's default reading of "remove the longest common sequence, rooted at the first element":
    compare the first set with each other one by the longest common subsequence of their (name,
    value) pairs, and remove it together with the sets that share the most with it. A set sharing
    nothing with the first (LCS length 0) is never removed with it.
    """
    if not ordered:
        return []
    first = pairs(ordered[0])
    lengths = [len(lcs(first, pairs(t))) for t in ordered[1:]]
    longest = max(lengths, default=0)
    return [0] + [i + 1 for i, n in enumerate(lengths) if longest > 0 and n == longest]


def prune_run(ordered: Sequence[Theta]) -> list[int]:
    """Positions to remove: the longest run of consecutive sets, from the first, that share a common subsequence.

    The alternative reading: walk down the sorted list from the first set while the sets so far
    still have a non-empty common subsequence of (name, value) pairs (the LCS of the first with the
    next, then of that with the one after, ...), and remove the whole run.
    """
    if not ordered:
        return []
    common = pairs(ordered[0])
    run = [0]
    for i in range(1, len(ordered)):
        common = lcs(common, pairs(ordered[i]))
        if not common:
            break
        run.append(i)
    return run


PRUNERS: dict[str, Callable[[Sequence[Theta]], list[int]]] = {"lcs_max": prune_lcs_max, "run": prune_run}


def sort_thetas(thetas: Sequence[Theta], scores: Sequence[float], sort: str) -> list[int]:
    """Indices of `thetas` by dev score: "worst_first" (ascending) or "best_first"; ties keep grid order."""
    if sort not in ("worst_first", "best_first"):
        raise AgoraError(f"unknown sort {sort!r}; choose worst_first or best_first")
    sign = 1.0 if sort == "worst_first" else -1.0
    return sorted(range(len(thetas)), key=lambda i: (sign * scores[i], i))


# ------------------------------------------------------------------------------------ the loop


@dataclasses.dataclass
class AgoraResult:
    """What `agora` returns: the model it selected, its θ and dev accuracy, and the run's record."""

    model: Any
    theta: Theta
    dev_accuracy: float
    round: int
    grid_best: dict                 # round 1's best: {"model", "theta", "dev_accuracy"}
    history: list[dict]
    train: Any                      # D at the end: the original examples and every kept point
    generated: list[dict]
    reference_accuracy: float
    stopped: str                    # why the loop ended
    fits: int                       # fine-tunes run


def accuracy(pred: np.ndarray, gold: np.ndarray) -> float:
    """The fraction of predictions equal to the gold labels."""
    return float(np.mean(np.asarray(pred) == np.asarray(gold)))


def agora(candidate: Any, reference: Any, train, dev, thetas: Sequence[Theta] | str, *,
          test=None, fit: Callable | None = None, generate: Callable | None = None,
          predict: Callable | None = None, executor: cf.Executor | None = None,
          sort: str = "worst_first", prune: str = "lcs_max", restart: bool = True, select: str = "global",
          replay: int = 0, points_per_mistake: int = 2, sources: str = "mistakes",
          min_confidence: float = 0.0, strict: bool = False, max_rounds: int | None = None,
          time_budget: float | None = None, seed: int = 0, out: str | None = None,
          progress: bool = True) -> AgoraResult:
    """Fine-tune `candidate` with Agora; return the best model and the history of the rounds.

    The author's steps, with Θ = `thetas`, D = `train`, E = `dev`:

        while Θ is not empty:
            1. fine-tune one candidate per θ in Θ on D;
            2. take the best model on E, and its mistakes on E;
            3. generate new points from the mistakes (never E's points themselves);
            4. label them with the reference model and add them to D;
            5. sort Θ by accuracy and remove "the longest common sequence, rooted at the first element";
        return the best model.

    Bound (the paper's): O(|Θ|² (log|Θ| + |θ|² + T_f(|D|)) + S |Θ| |E|): at most |Θ| rounds, each
    with one sort, one |θ|² LCS per set, |Θ| fine-tunes, and O(1) points per mistake. Every round
    removes at least the first set, so the loop ends within |Θ| rounds (plus `replay`).

    The choices the sources leave open, each minibort's own reading:
    - `sort`: "worst_first" (default; the only order under which removing from the front discards
      "sets that do not show promise") or "best_first".
    - `prune`: "lcs_max" (default): remove the first set and every set whose longest common
      subsequence with it, over (name, value) pairs, is the longest found; "run": remove the longest
      run of consecutive sorted sets, from the first, that share a common subsequence.
    - `restart`: True (default) fine-tunes every round from the pretrained `candidate`; False
      warm-starts each θ from the previous round's best model.
    - `select`: "global" (default) returns the best model of all rounds on E; "last" the last round's.
      Ties go to the earlier round, then to the earlier θ in the grid.
    - `replay`: after Θ is empty, re-run the last `replay` rounds (their Θ, on the grown D, without
      pruning): the author's "replay" that was needed in practice.
    - `points_per_mistake`: points φ generates per mistake (the bound's O(1); 0 turns generation off).
    - `sources`: "mistakes" (default) feeds φ the best model's dev mistakes; "train" feeds it as many
      random training points instead (an ablation: generation without the dev signal).
    - `max_rounds`, `time_budget` (seconds): stop early, before starting a round past either.
    Generation in a round after which Θ is empty would feed no fine-tune, so it is skipped.

    Other arguments: `candidate` is what `fit` starts from (for the default fit, a model name or
    folder); `reference` a Reference, an object with predict(examples), or a callable from texts to
    labels (or a string for `load_reference`: "bow", a classifier folder). The generated points'
    labels always come from it, never from gold labels. Its accuracy on E is reported; at or below
    2/3 (the algorithm asks for more) Agora warns, or refuses when `strict`. `min_confidence` keeps
    only points the reference labels with at least that probability. `fit(theta, train, dev[, start=model]) -> (model, dev label ids)` defaults to
    minibort.finetune; `generate` is φ (default: masked-LM substitution with bort-tiny, see
    minibort.neighbours); `predict(model, dataset) -> label ids` (default `model.predict(dataset)`)
    scores `test`; `executor` runs the fine-tunes of a round (default: in this process; any
    concurrent.futures.Executor, e.g. `worker_pool(2)` or Dask's `Client(address).get_executor()`).
    Results do not depend on the executor: each θ carries its own seed and results are gathered in
    grid order. `out` is a folder for history.json, best/, grid_best/, metrics.json, generated.tsv;
    running again with the same `out` resumes after the last finished round.
    """
    from tqdm import tqdm
    started = time.perf_counter()
    thetas = check_grid([dict(t) for t in (load_grid(thetas) if isinstance(thetas, str) else thetas)])
    if prune not in PRUNERS:
        raise AgoraError(f"unknown prune {prune!r}; choose {' or '.join(PRUNERS)}")
    if select not in ("global", "last"):
        raise AgoraError(f"unknown select {select!r}; choose global or last")
    if sources not in ("mistakes", "train"):
        raise AgoraError(f"unknown sources {sources!r}; choose mistakes or train")
    if replay < 0 or points_per_mistake < 0:
        raise AgoraError("replay and points_per_mistake must be >= 0")
    if not 0.0 <= min_confidence <= 1.0:
        raise AgoraError(f"min_confidence must be in [0, 1], got {min_confidence}")
    _check_data(train, dev, test)
    fit = fit or FinetuneFit(candidate)
    generate = generate or make_phi("mlm")
    predict = predict or (lambda model, dataset: model.predict(dataset))
    executor = executor or _Inline()
    gold = dev.label_ids()
    names = list(train.labels)

    # The reference: its labels must be the data's; its dev accuracy must be "ok-ish" (> 2/3).
    if isinstance(reference, (str, os.PathLike)):
        reference = load_reference(os.fspath(reference), train)
    ref = as_reference(reference, names)
    if ref.labels is not None and sorted(map(str, ref.labels)) != sorted(names):
        raise AgoraError(f"the reference's labels {ref.labels} are not the data's {names}; use a reference "
                         "trained on the same task")
    ref_dev = label_names(ref.predict(list(dev.examples)), names, f"the reference ({ref.name})")
    reference_accuracy = accuracy([names.index(y) for y in ref_dev], gold)
    if reference_accuracy <= 2 / 3:
        message = (f"the reference's dev accuracy is {reference_accuracy:.3f}, at or below the 2/3 Agora "
                   "requires: its labels for the generated points may mislead the candidate")
        if strict:
            raise AgoraError(message + "; use a better reference, or drop --strict to run anyway")
        warnings.warn(message, stacklevel=2)
    if min_confidence > 0 and ref.predict_proba is None:
        raise AgoraError("min_confidence needs a reference with predict_proba (bow, a classifier folder)")

    config = {"thetas": thetas, "sort": sort, "prune": prune, "restart": restart, "select": select,
              "replay": replay, "points_per_mistake": points_per_mistake, "sources": sources,
              "min_confidence": min_confidence, "seed": seed, "data": _fingerprint(train, dev, test)}
    state = _start_or_resume(out, config)
    alive: list[int] = state["alive"]                   # indices into `thetas` still in Θ
    history: list[dict] = state["history"]
    generated: list[dict] = state["generated"]
    train_now = train.with_examples(list(train.examples) + [_example(train, g) for g in generated if g["kept"]])
    best = state["best"]                                # {"round", "theta", "dev_accuracy"} of the selection
    grid_best = state["grid_best"]
    models: dict[str, Any] = {k: load_model(os.path.join(out, k)) for k in ("best", "grid_best", "last")
                              if out and os.path.isdir(os.path.join(out, k))}
    forbidden = {e.text for e in dev} | ({e.text for e in test} if test is not None else set())
    stopped = state.get("stopped") or ""
    fits = sum(len(r["scores"]) for r in history)

    bar = tqdm(total=len(thetas) + replay, initial=len(history), desc="agora rounds", disable=not progress)
    while not stopped:
        main_round = bool(alive)
        # once Θ is empty: replay the last `replay` main rounds (each with the Θ it had), then stop
        replays = [r["alive"] for r in history if not r["replay"]][-replay:] if replay else []
        n_replayed = sum(r["replay"] for r in history)
        if not main_round and n_replayed >= len(replays):
            stopped = "theta empty"
            break
        if history and history[-1]["mistakes"] == 0 and sources == "mistakes":
            stopped = "no mistakes on dev"      # the best model is perfect on E: nothing left to learn from
            break
        if max_rounds is not None and len(history) >= max_rounds:
            stopped = "max_rounds"
            break
        if time_budget is not None and time.perf_counter() - started + state["elapsed"] > time_budget:
            stopped = "time_budget"
            break
        t0 = time.perf_counter()
        rnd = len(history) + 1
        round_thetas = alive if main_round else replays[n_replayed]

        # 1. fine-tune one candidate per θ on D (from the pretrained candidate, or warm)
        start = None if restart or "last" not in models else models["last"]
        futures = [executor.submit(_fit_one, fit, thetas[i], train_now, dev, start) for i in round_thetas]
        inner = tqdm(total=len(futures), desc=f"round {rnd} fine-tunes", leave=False, disable=not progress)
        for _ in cf.as_completed(futures):
            inner.update()
        inner.close()
        results = [f.result() for f in futures]              # grid order, whatever finished first
        fits += len(results)
        for theta_index, (_, pred) in zip(round_thetas, results):
            if np.shape(pred) != gold.shape:
                raise AgoraError(f"the fit of {thetas[theta_index]} returned {np.shape(pred)} dev predictions "
                                 f"for {len(gold)} dev examples; it must return one label id per example")
        scores = [accuracy(pred, gold) for _, pred in results]

        # 2. the best model on E (ties: earlier θ in the grid), and its mistakes
        b = int(np.argmax(scores))
        model_b, pred_b = results[b]
        mistakes = [i for i, (p, g) in enumerate(zip(np.asarray(pred_b), gold)) if p != g]

        # 5. (computed first, so that generation can be skipped when nothing would use it)
        order = sort_thetas([thetas[i] for i in round_thetas], scores, sort)
        removed = [round_thetas[order[k]] for k in PRUNERS[prune]([thetas[round_thetas[j]] for j in order])] \
            if main_round else []
        alive_after = [i for i in alive if i not in removed]
        more_rounds = (bool(alive_after) or replay > 0) if main_round else n_replayed + 1 < len(replays)

        # 3. generate points near the mistakes (or near random training points, an ablation)
        new: list[dict] = []
        if points_per_mistake and mistakes and more_rounds:
            if sources == "mistakes":
                source_examples = [dev.examples[i] for i in mistakes]
            else:
                pick = np.random.default_rng([seed, rnd, 1]).choice(len(train_now), size=min(len(mistakes),
                                                                    len(train_now)), replace=False)
                source_examples = [train_now.examples[int(i)] for i in np.sort(pick)]
            taken = forbidden | {e.text for e in train_now}
            points = generate([e.text for e in source_examples], points_per_mistake, forbidden=taken,
                              seed=seed * 100003 + rnd)
            # 4. label them with the reference (never with gold) and add them to D
            new = _label_points(points, source_examples, ref, names, min_confidence, rnd, sources)
        generated.extend(new)
        kept = [g for g in new if g["kept"]]
        train_now = train_now.with_examples(list(train_now.examples) + [_example(train, g) for g in kept])

        # bookkeeping: the models kept, the selection, the record
        if rnd == 1:
            grid_best = {"round": 1, "theta": thetas[round_thetas[b]], "dev_accuracy": scores[b]}
            models["grid_best"] = model_b
        if select == "last" or best is None or scores[b] > best["dev_accuracy"]:
            best = {"round": rnd, "theta": thetas[round_thetas[b]], "dev_accuracy": scores[b]}
            models["best"] = model_b
        models["last"] = model_b
        if main_round:
            alive = alive_after
        history.append({
            "round": rnd, "replay": not main_round, "alive": list(round_thetas),
            "thetas_before": len(round_thetas), "thetas_after": len(alive) if main_round else 0,
            "removed": [thetas[i] for i in removed],
            "scores": [{"theta": thetas[i], "dev_accuracy": s} for i, s in zip(round_thetas, scores)],
            "best_theta": thetas[round_thetas[b]], "best_dev_accuracy": scores[b],
            "mistakes": len(mistakes), "generated": len(new), "kept": len(kept), "train_size": len(train_now),
            "wall_time": time.perf_counter() - t0})
        if out:
            _save_round(out, config, alive, history, generated, best, grid_best, models,
                        state["elapsed"] + time.perf_counter() - started, restart, rnd)
        bar.update()
    bar.close()

    if best is None:
        raise AgoraError("no round ran (max_rounds=0 or a time budget already spent); nothing to return")
    result = AgoraResult(models["best"], best["theta"], best["dev_accuracy"], best["round"],
                         {**grid_best, "model": models["grid_best"]}, history,
                         train_now, generated, reference_accuracy, stopped, fits)
    if out:
        _write_metrics(out, result, dev, test, predict, ref, names, started, state)
    return result


def _check_data(train, dev, test) -> None:
    if len(train) == 0:
        raise AgoraError("the train set is empty; Agora needs labelled training examples")
    if len(dev) == 0:
        raise AgoraError("the dev set is empty; Agora selects and generates from a labelled dev set")
    if not train.labels:
        raise AgoraError("Agora is for classification; this data has no label names (a regression task?)")
    for name, ds in (("dev", dev), ("test", test)):
        if ds is not None and list(ds.labels) != list(train.labels):
            raise AgoraError(f"the {name} set's labels {ds.labels} differ from the train set's "
                             f"{train.labels}; load it with labels=train.labels")
    if not dev.is_labelled:
        raise AgoraError("the dev set has unlabelled examples; Agora needs every dev label to find mistakes")


def _example(train, g: dict):
    return dataclasses.replace(train.examples[0], text=g["text"], text_pair=g["text_pair"], label=g["label"])


def _label_points(points: list[Neighbour], source_examples: list, ref: Reference, names: list[str],
                  min_confidence: float, rnd: int, sources: str) -> list[dict]:
    """The reference's labels (and confidence) for the generated points; which ones are kept."""
    if not points:
        return []
    examples = [dataclasses.replace(source_examples[p.source], text=p.text, label=None) for p in points]
    labels = label_names(ref.predict(examples), names, f"the reference ({ref.name})")
    conf = [None] * len(points)
    if ref.predict_proba is not None and min_confidence > 0:
        proba = np.asarray(ref.predict_proba(examples))                   # (P, C)
        conf = [float(proba[k, names.index(y)]) for k, y in enumerate(labels)]
    return [{"round": rnd, "source": source_examples[p.source].text, "source_kind": sources, "text": p.text,
             "text_pair": source_examples[p.source].text_pair, "label": y, "confidence": c,
             "edit_fraction": p.edit_fraction, "method": p.method,
             "kept": c is None or c >= min_confidence}
            for p, y, c in zip(points, labels, conf)]


# ------------------------------------------------------------------------------------ the output folder


def _fingerprint(train, dev, test) -> str:
    h = hashlib.sha256()
    for ds in (train, dev, test):
        for e in (ds or []):
            h.update(repr((e.text, e.text_pair, e.label)).encode("utf-8"))
        h.update(b"|")
    return h.hexdigest()


def _start_or_resume(out: str | None, config: dict) -> dict:
    """A fresh state, or the one saved in `out` after its last finished round (same configuration)."""
    fresh = {"alive": list(range(len(config["thetas"]))), "history": [], "generated": [], "best": None,
             "grid_best": None, "elapsed": 0.0, "stopped": ""}
    if out is None:
        return fresh
    path = os.path.join(out, "state.json")
    if os.path.isfile(path):
        with open(path, encoding="utf-8") as f:
            state = json.load(f)
        saved = state.get("config", {})
        differ = sorted(k for k in set(config) | set(saved) if saved.get(k) != json.loads(json.dumps(config[k])))
        if differ:
            raise AgoraError(f"{out} holds an Agora run with other settings ({', '.join(differ)} differ); "
                             "to resume, repeat its settings, or choose another --out")
        return {**fresh, **state}
    if os.path.isdir(out) and os.listdir(out):
        raise AgoraError(f"{out} exists and is not an Agora output folder (no state.json); minibort does not "
                         "write into folders it did not create: choose another --out")
    os.makedirs(out, exist_ok=True)
    return fresh


def _save_round(out, config, alive, history, generated, best, grid_best, models, elapsed, restart, rnd) -> None:
    """After each round: the models that changed, then history.json, generated.tsv and state.json."""
    from ._files import write_text_atomic
    if best["round"] == rnd:
        save_model(models["best"], os.path.join(out, "best"))
    if rnd == 1:
        save_model(models["grid_best"], os.path.join(out, "grid_best"))
    if not restart:
        save_model(models["last"], os.path.join(out, "last"))
    write_text_atomic(os.path.join(out, "history.json"), json.dumps(history, indent=1) + "\n")
    write_text_atomic(os.path.join(out, "generated.tsv"), _generated_tsv(generated))
    state = {"version": STATE_VERSION, "config": config, "alive": alive, "history": history,
             "generated": generated, "best": best, "grid_best": grid_best, "elapsed": elapsed}
    write_text_atomic(os.path.join(out, "state.json"), json.dumps(state) + "\n")   # last: the commit point


def _generated_tsv(generated: list[dict]) -> str:
    cols = ["round", "kept", "label", "confidence", "edit_fraction", "method", "source_kind", "text",
            "text_pair", "source"]
    rows = ["\t".join(cols)]
    for g in generated:
        rows.append("\t".join(" ".join(str("" if g[c] is None else g[c]).split()) for c in cols))
    return "\n".join(rows) + "\n"


def _write_metrics(out, result: AgoraResult, dev, test, predict, ref: Reference, names, started, state) -> None:
    from ._files import write_text_atomic
    metrics: dict[str, Any] = {"reference": {"name": ref.name, "dev_accuracy": result.reference_accuracy}}
    if test is not None and test.is_labelled:
        ref_test = label_names(ref.predict(list(test.examples)), names, "the reference")
        metrics["reference"]["test_accuracy"] = accuracy([names.index(y) for y in ref_test], test.label_ids())
    for key, model, theta, dev_acc, rnd in (
            ("grid_best", result.grid_best["model"], result.grid_best["theta"], result.grid_best["dev_accuracy"], 1),
            ("agora", result.model, result.theta, result.dev_accuracy, result.round)):
        m = {"theta": theta, "round": rnd, "dev_accuracy": dev_acc}
        if test is not None and test.is_labelled:
            m["test_accuracy"] = accuracy(predict(model, test), test.label_ids())
        metrics[key] = m
    metrics.update(rounds=len(result.history), fits=result.fits, stopped=result.stopped,
                   train_size=len(result.train), generated=len(result.generated),
                   kept=sum(g["kept"] for g in result.generated),
                   wall_time=state["elapsed"] + time.perf_counter() - started)
    write_text_atomic(os.path.join(out, "metrics.json"), json.dumps(metrics, indent=1) + "\n")
    state_path = os.path.join(out, "state.json")
    with open(state_path, encoding="utf-8") as f:
        saved = json.load(f)
    saved["stopped"] = result.stopped
    write_text_atomic(state_path, json.dumps(saved) + "\n")


# ------------------------------------------------------------------------------------ command line


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="python -m minibort.agora",
        description="Fine-tune a Bort with Agora: rounds of fine-tuning over a grid of hyper-parameter sets, "
                    "points generated near the best model's dev mistakes and labelled by a reference model, "
                    "and pruning of the grid, until it is empty.")
    g = ap.add_argument_group("models and data")
    g.add_argument("--model", default="bort-tiny", help="the candidate: a model name or folder (default: %(default)s)")
    g.add_argument("--reference", required=True,
                   help="labels the generated points: `bow` (bag-of-n-grams logistic regression trained on "
                        "--train) or a fine-tuned minibort classifier folder")
    g.add_argument("--train", required=True, help="labelled training file (.tsv, .csv, .jsonl)")
    g.add_argument("--dev", required=True, help="labelled dev file: selection and the source of mistakes")
    g.add_argument("--test", help="labelled test file, scored at the end (never used for choices)")
    g.add_argument("--text-column", default="text", help="(default: %(default)s)")
    g.add_argument("--text-pair-column", default=None, help="second text of pair tasks")
    g.add_argument("--label-column", default="label", help="(default: %(default)s)")
    g = ap.add_argument_group("the grid and fine-tuning")
    g.add_argument("--grid", default="small", help="small, original (alexa/bort's 480 sets) or a JSON file")
    g.add_argument("--recipe", choices=("bort", "transformers"), default="transformers",
                   help="finetune's recipe for every θ (default: %(default)s, as finetune's)")
    g.add_argument("--epochs", type=int, default=None, help="epochs per fine-tune (default: finetune's)")
    g.add_argument("--max-length", type=int, default=None, help="tokens per example (default: finetune's)")
    g.add_argument("--out", required=True, help="output folder; an existing Agora folder is resumed")
    g.add_argument("--seed", type=int, default=0, help="seed of generation (each θ has its own training seed)")
    g.add_argument("--workers", type=int, default=1,
                   help="fine-tunes run at once, in processes with one BLAS thread each (default: 1)")
    g = ap.add_argument_group("Agora's open choices (see the agora() docstring)")
    g.add_argument("--sort", choices=("worst_first", "best_first"), default="worst_first")
    g.add_argument("--prune", choices=tuple(PRUNERS), default="lcs_max")
    g.add_argument("--warm-start", action="store_true", help="fine-tune from the previous round's best model")
    g.add_argument("--select", choices=("global", "last"), default="global")
    g.add_argument("--replay", type=int, default=0, help="re-run the last K rounds once Θ is empty")
    g.add_argument("--points-per-mistake", type=int, default=2, help="(default: %(default)s; 0: no generation)")
    g.add_argument("--sources", choices=("mistakes", "train"), default="mistakes",
                   help="generate near dev mistakes (default) or near random training points (ablation)")
    g.add_argument("--generator", choices=("mlm", "edit", "delete", "swap", "mix"), default="mlm",
                   help="φ: masked-LM substitution (default), word deletion/swap, or a mixture")
    g.add_argument("--mlm", default="bort-tiny", help="the masked LM of --generator mlm (default: %(default)s)")
    g.add_argument("--low", type=float, default=DEFAULT_LOW, help="δ, least edit fraction (default: %(default)s)")
    g.add_argument("--high", type=float, default=DEFAULT_HIGH, help="ε, most edit fraction (default: %(default)s)")
    g.add_argument("--min-confidence", type=float, default=0.0,
                   help="keep only points the reference labels with at least this probability")
    g.add_argument("--strict", action="store_true", help="refuse a reference with dev accuracy <= 2/3")
    g.add_argument("--max-rounds", type=int, default=None)
    g.add_argument("--time-budget", type=float, default=None, help="seconds; no round starts after it")
    g.add_argument("--no-progress", action="store_true", help="no progress bars")
    return ap


def run(args: argparse.Namespace) -> dict:
    """The CLI's work: load everything, run agora(), return metrics.json's content."""
    from .data import DataError, load_file
    try:
        train = load_file(args.train, args.text_column, args.text_pair_column, args.label_column, name="train")
        dev = load_file(args.dev, args.text_column, args.text_pair_column, args.label_column,
                        labels=train.labels, name="dev")
        test = None if args.test is None else load_file(args.test, args.text_column, args.text_pair_column,
                                                        args.label_column, labels=train.labels, name="test")
    except (DataError, OSError) as e:
        raise AgoraError(str(e)) from None
    try:
        thetas = load_grid(args.grid)
        phi = make_phi(args.generator, args.low, args.high, args.mlm)
    except (GridError, ValueError) as e:
        raise AgoraError(str(e)) from None
    reference = load_reference(args.reference, train)
    settings = {"recipe": args.recipe}
    if args.epochs is not None:
        settings["epochs"] = args.epochs
    if args.max_length is not None:
        settings["max_length"] = args.max_length
    executor = worker_pool(args.workers) if args.workers > 1 else None
    try:
        agora(args.model, reference, train, dev, thetas, test=test,
              fit=FinetuneFit(args.model, settings), generate=phi, executor=executor,
              sort=args.sort, prune=args.prune, restart=not args.warm_start, select=args.select,
              replay=args.replay, points_per_mistake=args.points_per_mistake, sources=args.sources,
              min_confidence=args.min_confidence, strict=args.strict, max_rounds=args.max_rounds,
              time_budget=args.time_budget, seed=args.seed, out=args.out,
              progress=not args.no_progress)
    finally:
        if executor is not None:
            executor.shutdown()
    with open(os.path.join(args.out, "metrics.json"), encoding="utf-8") as f:
        return json.load(f)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    warnings.showwarning = lambda message, *rest: print(f"warning: {message}", file=sys.stderr)
    from .checkpoint import CheckpointError
    from .config import ConfigError
    from .finetune import FinetuneError
    from .generate import GenerateError
    try:
        metrics = run(args)
    except (AgoraError, FinetuneError, GenerateError, CheckpointError, ConfigError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"interrupted; run the same command again to resume from {args.out}", file=sys.stderr)
        return 130
    test = "test_accuracy" in metrics["agora"]
    print(f"{'':10} {'dev':>6}" + (f" {'test':>6}" if test else "") + "  θ")
    for key in ("reference", "grid_best", "agora"):
        m = metrics[key]
        line = f"{key:10} {m['dev_accuracy']:6.3f}" + (f" {m.get('test_accuracy', float('nan')):6.3f}" if test else "")
        print(line + ("  " + json.dumps(m["theta"]) if "theta" in m else f"  {m['name']}"))
    print(f"{metrics['rounds']} rounds, {metrics['fits']} fine-tunes, {metrics['kept']} points added, "
          f"{metrics['wall_time']:.1f} s; stopped: {metrics['stopped']}. Folder: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
