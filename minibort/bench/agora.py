"""Agora's experiment: does it beat "enumerate Θ and pick the best on dev" on a scarce-data task?

    python -m minibort.bench.agora --seeds 5 --out runs/agora-experiment

The task is minibort.data.docs_task: does a sentence of the standard library's documentation
document a concurrency module or an internet one? Per seed s:

- train D: a few dozen sentences (`--train-size`, half of each class) drawn with seed s from the
  task's training split (the scarce data);
- dev E and test: one fixed random split (seed 1234) of the task's dev and test sentences pooled,
  so that E is representative of test (the author's condition), `--dev-size` and `--test-size`;
- the reference: `bow` (minibort.bow) trained on the whole training split (~2400 sentences, the
  "larger labelled pool"), the same for every seed;
- the candidate: the embedded bort-tiny with a fresh head; Θ: `--grid` (default 4 sets).

Compared on test: majority class (E's; D is balanced), the reference, grid_best (round 1's best on E), Agora, and
two ablations: φ applied to random training points instead of dev mistakes (`sources="train"`), and
pruning without generated data (`points_per_mistake=0`). Round 1 is the same fine-tunes in all
three runs (same θ, same D, same seeds), so it is computed once and shared; the fine-tune counts
reported are what each run needs alone. Also: wall times, and one round 1 run with `worker_pool(2)`
against one process, for the speed-up of `--workers 2`.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import sys
import time

import numpy as np

from .._files import write_text_atomic
from ..agora import AgoraResult, FinetuneFit, _fingerprint, accuracy, agora, bow_reference, worker_pool
from ..data import Dataset
from ..grids import grid, load_grid
from ..neighbours import make_phi

CONDITIONS = {"agora": {}, "phi_on_train": {"sources": "train"}, "no_generation": {"points_per_mistake": 0}}


class SharedFit:
    """A fit that remembers its results by (θ, D, start): identical fine-tunes run once."""

    def __init__(self, fit):
        self.fit, self.cache, self.ran = fit, {}, 0

    def __call__(self, theta, train, dev, start=None):
        key = (json.dumps(theta, sort_keys=True), _fingerprint(train, dev, None), start is None)
        if key not in self.cache or start is not None:
            self.cache[key] = self.fit(theta, train, dev) if start is None else self.fit(theta, train, dev,
                                                                                          start=start)
            self.ran += 1
        return self.cache[key]


@functools.lru_cache(maxsize=1)
def _docs() -> dict[str, Dataset]:
    from ..data import docs_task
    return docs_task()


def task(train_size: int, dev_size: int, test_size: int, seed: int) -> dict[str, Dataset]:
    """The scarce training sample of `seed`, and the fixed dev / test split of the pooled sentences."""
    full = _docs()
    pool = full["train"]
    rng = np.random.default_rng(seed)
    y = pool.label_ids()
    pick = np.concatenate([rng.choice(np.flatnonzero(y == c), train_size // 2, replace=False) for c in (0, 1)])
    train = pool.with_examples([pool[int(i)] for i in np.sort(pick)])
    held = full["dev"].examples + full["test"].examples
    order = np.random.default_rng(1234).permutation(len(held))
    dev = full["dev"].with_examples([held[i] for i in order[:dev_size]])
    test = full["test"].with_examples([held[i] for i in order[dev_size:dev_size + test_size]])
    return {"train": train, "dev": dev, "test": test, "pool": pool}


def setup(args) -> tuple[list[dict], FinetuneFit]:
    """Θ (the "experiment" grid: 2 seeds x 2 learning rates, or a preset / file) and the fit of every θ."""
    thetas = load_grid(args.grid) if args.grid != "experiment" else grid(seed=[0, 1], lr=[1e-3, 3e-4])
    return thetas, FinetuneFit(args.model, {"recipe": args.recipe, "epochs": args.epochs,
                                            "max_length": args.max_length, "weight_decay": 0.01,
                                            "warmup_ratio": 0.1, "batch_size": 8})


def run_seed(args, seed: int, reference, log) -> dict:
    data = task(args.train_size, args.dev_size, args.test_size, seed)
    train, dev, test = data["train"], data["dev"], data["test"]
    thetas, fit = setup(args)
    fit = SharedFit(fit)
    phi = make_phi(args.generator)
    y_test = test.label_ids()
    majority = int(np.bincount(dev.label_ids()).argmax())        # D is balanced by construction: E's
    row: dict = {"seed": seed, "majority": accuracy(np.full(len(test), majority), y_test)}
    row["reference"] = accuracy(reference.predict_ids(test), y_test)
    for name in args.conditions:
        options = CONDITIONS[name]
        t0 = time.perf_counter()
        r: AgoraResult = agora(args.model, reference.ref, train, dev, thetas, fit=fit, generate=phi, seed=seed,
                               progress=False, **options)
        row[f"{name}_time"] = time.perf_counter() - t0
        row[f"{name}_fits"] = r.fits
        row[f"{name}_rounds"] = len(r.history)
        row[f"{name}_dev"] = r.dev_accuracy
        row[f"{name}_round"] = r.round
        row[f"{name}_kept"] = sum(g["kept"] for g in r.generated)
        row[name] = accuracy(r.model.predict(test), y_test)
        if name == "agora":
            row["grid_best"] = accuracy(r.grid_best["model"].predict(test), y_test)
            row["grid_best_dev"] = r.grid_best["dev_accuracy"]
            row["history"] = [{k: v for k, v in h.items() if k != "alive"} for h in r.history]
        log(f"seed {seed} {name}: test {row[name]:.3f} (dev {r.dev_accuracy:.3f}, round {r.round}), "
            f"{r.fits} fits, {row[f'{name}_time']:.0f} s")
    row["fits_run"] = fit.ran
    return row


class _Ref:
    def __init__(self, pool):
        self.ref = bow_reference(pool)
        self.names = list(pool.labels)

    def predict_ids(self, ds) -> np.ndarray:
        return np.array([self.names.index(y) for y in self.ref.predict(list(ds.examples))])


def workers_speedup(args, log) -> dict:
    """Round 1 of the grid (its fine-tunes only), in one process and in worker_pool(2)."""
    data = task(args.train_size, args.dev_size, args.test_size, 0)
    thetas, fit = setup(args)
    out = {}
    for workers in (1, 2):
        pool = worker_pool(workers)
        try:
            t0 = time.perf_counter()
            preds = [f.result()[1] for f in [pool.submit(fit, t, data["train"], data["dev"]) for t in thetas]]
            out[f"workers_{workers}"] = time.perf_counter() - t0
            out[f"dev_{workers}"] = [accuracy(p, data["dev"].label_ids()) for p in preds]
        finally:
            pool.shutdown()
        log(f"round 1 ({len(thetas)} fine-tunes) with {workers} worker(s): {out[f'workers_{workers}']:.1f} s")
    out["same_results"] = out["dev_1"] == out["dev_2"]
    out["load_average"] = os.getloadavg()
    return out


def measure_phi(args, reference, log) -> list[dict]:
    """φ's distance knobs: for bands [δ, ε] of edit fraction, one MLM neighbour per dev sentence; how
    many are made, and how often the reference's label of the neighbour equals the source's gold label
    (a neighbour too distinct no longer belongs to its source's class)."""
    from ..neighbours import MaskedLMSubstitution
    dev = task(args.train_size, args.dev_size, args.test_size, 0)["dev"]
    texts, gold = [e.text for e in dev], [e.label for e in dev]
    rows = []
    for low, high in ((0.05, 0.1), (0.1, 0.3), (0.3, 0.5), (0.5, 0.8)):
        points = MaskedLMSubstitution(low=low, high=high)(texts, 1, seed=0)
        labels = reference.ref.predict([dev[p.source].__class__(p.text) for p in points])
        row = {"low": low, "high": high, "made": len(points) / len(texts),
               "mean_edit": float(np.mean([p.edit_fraction for p in points])),
               "reference_keeps_gold": float(np.mean([y == gold[p.source] for p, y in zip(points, labels)]))}
        rows.append(row)
        log(f"phi band [{low}, {high}]: made {row['made']:.2f} per text, mean edit {row['mean_edit']:.2f}, "
            f"reference label = source's gold for {row['reference_keeps_gold']:.2f}")
    src = reference.ref.predict(list(dev.examples))
    log(f"(the reference on the sources themselves: {np.mean([y == g for y, g in zip(src, gold)]):.2f})")
    return rows


def table(rows: list[dict]) -> str:
    cols = [c for c in ["majority", "reference", "grid_best", "agora", "phi_on_train", "no_generation"]
            if c in rows[0]]
    lines = ["| | " + " | ".join(cols) + " |", "|---" * (len(cols) + 1) + "|"]
    for r in rows:
        lines.append(f"| seed {r['seed']} | " + " | ".join(f"{r[c]:.3f}" for c in cols) + " |")
    m = {c: np.array([r[c] for r in rows]) for c in cols}
    lines.append("| mean ± std | " + " | ".join(f"{m[c].mean():.3f} ± {m[c].std(ddof=1) if len(rows) > 1 else 0:.3f}"
                                             for c in cols) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m minibort.bench.agora", description=__doc__.split("\n")[0])
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--first-seed", type=int, default=0, help="seeds run: first-seed .. first-seed + seeds - 1")
    ap.add_argument("--out", required=True, help="folder for results.json and table.md")
    ap.add_argument("--model", default="bort-tiny")
    ap.add_argument("--grid", default="experiment", help="experiment (4 sets), small, original, or a JSON file")
    ap.add_argument("--recipe", default="transformers", choices=("transformers", "bort"))
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--max-length", type=int, default=64)
    ap.add_argument("--train-size", type=int, default=40)
    ap.add_argument("--dev-size", type=int, default=100)
    ap.add_argument("--test-size", type=int, default=500)
    ap.add_argument("--generator", default="mlm")
    ap.add_argument("--no-speedup", action="store_true", help="skip the --workers 2 measurement")
    ap.add_argument("--conditions", nargs="+", choices=tuple(CONDITIONS), default=list(CONDITIONS),
                    help="the Agora runs to compare (default: all three)")
    ap.add_argument("--phi-only", action="store_true", help="only measure φ's edit-fraction bands")
    args = ap.parse_args(argv)
    os.makedirs(args.out, exist_ok=True)

    def log(message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    t0 = time.perf_counter()
    pool = task(args.train_size, args.dev_size, args.test_size, 0)
    reference = _Ref(pool["pool"])
    ref_dev = accuracy(reference.predict_ids(pool["dev"]), pool["dev"].label_ids())
    log(f"reference bow on {len(pool['pool'])} sentences: dev accuracy {ref_dev:.3f}")
    if args.phi_only:
        write_text_atomic(os.path.join(args.out, "phi.json"), json.dumps(measure_phi(args, reference, log), indent=1))
        return 0
    rows = []
    for seed in range(args.first_seed, args.first_seed + args.seeds):
        rows.append(run_seed(args, seed, reference, log))
        results = {"args": vars(args), "reference_dev": ref_dev, "rows": rows,
                   "wall_time": time.perf_counter() - t0}
        write_text_atomic(os.path.join(args.out, "results.json"), json.dumps(results, indent=1))
    if not args.no_speedup:
        results["speedup"] = workers_speedup(args, log)
    results["wall_time"] = time.perf_counter() - t0
    write_text_atomic(os.path.join(args.out, "results.json"), json.dumps(results, indent=1))
    text = table(rows)
    write_text_atomic(os.path.join(args.out, "table.md"), text + "\n")
    print(text)
    print(f"wall time {results['wall_time']:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
