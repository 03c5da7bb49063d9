"""Fine-tuning benchmark, and the docs task's result table.

    python -m minibort.bench.finetune [--sizes tiny bort] [--steps 10] [--threads 2]
    python -m minibort.bench.finetune table [--seeds 5] [--epochs 3] [--json results.json]

speed (the default): one fine-tuning epoch of `--steps` steps, minibort against a plain PyTorch loop
on the same model, weights and batches: transformers' BertForSequenceClassification with its default
attention (SDPA) and again with its eager attention, AdamW + linear schedule + clip 1.0, training
mode, float32. Sizes: bort-tiny
(its real weights) at batch 16 x 128 and Bort size (random weights) at 8 x 128. Each side runs in
its own child process with `--threads` BLAS / torch threads (minibort's OpenBLAS is fixed by
OPENBLAS_NUM_THREADS when NumPy loads). Reported: seconds per step (the median, after one warm-up
step), examples/s, the ratios minibort / PyTorch from this one run, and where minibort's step goes
(forward + backward, clip + optimizer). Run it on a quiet machine. `--json FILE` writes the figures
in the form `python -m minibort.bench.report FILE` turns into the README's table.

table: the stdlib-documentation task (`minibort.data.docs_task`), test accuracy of: the majority
class, `minibort.bow.BowClassifier` (its l2 picked on dev from 1e-3, 1e-4, 1e-5), and bort-tiny
fine-tuned with each recipe at its defaults for `--epochs` epochs, over `--seeds` seeds (mean and
standard deviation; each run's best dev epoch is the one tested).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

import numpy as np

SIZES = {"tiny": {"batch": 16, "seq": 128}, "bort": {"batch": 8, "seq": 128}}


# ------------------------------------------------------------------------------------ speed


def _problem(size: str, steps: int):
    """(config, float32 classifier weights, ids (S, B, T), labels (S, B)) shared by both sides."""
    from minibort import BortConfig, BortForSequenceClassification
    from minibort.bench.forward import random_bort_weights
    if size == "tiny":
        model = BortForSequenceClassification.from_pretrained("bort-tiny", mmap=False)
    else:
        cfg = BortConfig.bort()
        model = BortForSequenceClassification(cfg, random_bort_weights(cfg), seed=0)
    cfg = model.config
    B, T = SIZES[size]["batch"], SIZES[size]["seq"]
    rng = np.random.default_rng(0)
    ids = rng.integers(3, cfg.vocab_size, size=(steps + 1, B, T))                    # (S, B, T)
    ids[:, :, 0] = 0
    labels = rng.integers(0, cfg.num_labels, size=(steps + 1, B))                     # (S, B)
    return cfg, model.params, ids, labels


def child(which: str, size: str, steps: int, attn: str = "sdpa") -> dict:
    """One side's epoch, in this (fresh) process: per-step times, and minibort's split. `attn` is
    PyTorch's attention implementation ("sdpa", transformers' default, or "eager")."""
    cfg, params, ids, labels = _problem(size, steps)
    mask = np.ones(ids.shape[1:], dtype=np.int64)
    times, split = [], {"forward+backward": 0.0, "clip+optimizer": 0.0}
    if which == "minibort":
        from minibort import BortForSequenceClassification, optim
        from minibort.finetune import make_optimizer
        model = BortForSequenceClassification(cfg, params).train()
        opt, sched = make_optimizer("transformers", model.params, 5e-5, 0.01, 0.1, steps + 1, 1)
        for s in range(steps + 1):
            t0 = time.perf_counter()
            _loss, grads = model.loss_and_grads(ids[s], labels[s], mask)
            t1 = time.perf_counter()
            optim.clip_grad_norm(grads, 1.0)
            opt.step(grads)
            sched.step()
            t2 = time.perf_counter()
            if s:                                                # step 0 is the warm-up
                times.append(t2 - t0)
                split["forward+backward"] += t1 - t0
                split["clip+optimizer"] += t2 - t1
    else:
        import torch
        import transformers
        torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
        tconf = transformers.BertConfig(**{k: v for k, v in cfg.to_dict().items() if k != "classifier_head"},
                                        attn_implementation=attn)
        tm = transformers.BertForSequenceClassification(tconf).float()
        tm.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in params.items()}, strict=False)
        tm.train()
        groups = [{"params": [p for n, p in tm.named_parameters() if not ("LayerNorm" in n or n.endswith("bias"))],
                   "weight_decay": 0.01},
                  {"params": [p for n, p in tm.named_parameters() if "LayerNorm" in n or n.endswith("bias")],
                   "weight_decay": 0.0}]
        opt = torch.optim.AdamW(groups, lr=5e-5)
        sched = transformers.get_linear_schedule_with_warmup(opt, int(0.1 * (steps + 1)), steps + 1)
        tmask = torch.from_numpy(mask)
        for s in range(steps + 1):
            t0 = time.perf_counter()
            out = tm(input_ids=torch.from_numpy(ids[s]), attention_mask=tmask, labels=torch.from_numpy(labels[s]))
            out.loss.backward()
            t1 = time.perf_counter()
            torch.nn.utils.clip_grad_norm_(tm.parameters(), 1.0)
            opt.step()
            sched.step()
            opt.zero_grad(set_to_none=True)
            t2 = time.perf_counter()
            if s:
                times.append(t2 - t0)
                split["forward+backward"] += t1 - t0
                split["clip+optimizer"] += t2 - t1
    from minibort import _threads
    return {"times": times, "split": split, "batch": int(ids.shape[1]), "seq": int(ids.shape[2]),
            "minibort_threads": _threads.num_threads(), "blas_threads": _threads.blas_threads()}


def run_child(which: str, size: str, steps: int, threads: int, attn: str = "sdpa") -> dict | None:
    env = dict(os.environ, OPENBLAS_NUM_THREADS=str(threads), OMP_NUM_THREADS=str(threads),
               MKL_NUM_THREADS=str(threads))
    if which == "torch":
        env["MINIBORT_MALLOC_TUNING"] = "0"                  # PyTorch users get glibc's defaults
    cmd = [sys.executable, "-m", "minibort.bench.finetune", "--child", which, "--sizes", size,
           "--steps", str(steps), "--attn", attn]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    if out.returncode != 0:
        if which == "torch" and "ModuleNotFoundError" in out.stderr:
            return None
        raise RuntimeError(f"the {which} child failed:\n{out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def speed(sizes: list[str], steps: int, threads: int, no_torch: bool = False) -> dict:
    """{"benchmark": "finetune", "machine": ..., "rows": [one per size]}, the lines printed as they come."""
    from minibort.bench.report import machine
    info = machine(threads)
    rows = []
    for size in sizes:
        mine = run_child("minibort", size, steps, threads)
        info.update(minibort_threads=mine["minibort_threads"], blas_threads=mine["blas_threads"])  # the child's
        B = mine["batch"]
        row = {"case": f"{'bort-tiny' if size == 'tiny' else 'Bort size'} {B}x{mine['seq']}",
               "minibort_s": statistics.median(mine["times"]),
               "minibort_split_s": {k: v / steps for k, v in mine["split"].items()}}
        row["minibort_examples_per_s"] = B / row["minibort_s"]
        line = (f"{row['case']} ({threads} threads, {steps} steps): minibort {row['minibort_s']:.3f} s/step "
                f"({row['minibort_examples_per_s']:.1f} ex/s; "
                + ", ".join(f"{k} {v:.3f} s" for k, v in row["minibort_split_s"].items()) + ")")
        for attn in ([] if no_torch else ["sdpa", "eager"]):
            theirs = run_child("torch", size, steps, threads, attn)
            if theirs is None:
                line += "; PyTorch not installed (pip install torch==2.13.0 transformers)"
                break
            t = statistics.median(theirs["times"])
            row.update({f"{attn}_s": t, f"{attn}_examples_per_s": B / t, f"ratio_{attn}": row["minibort_s"] / t})
            line += f"; PyTorch {attn} {t:.3f} s/step ({B / t:.1f} ex/s), ratio {row['minibort_s'] / t:.2f}x"
        print(line, flush=True)
        rows.append(row)
    return {"benchmark": "finetune", "machine": info, "rows": rows}


# ------------------------------------------------------------------------------------ the table


def table(seeds: int, epochs: int, model: str = "bort-tiny") -> dict:
    """Majority, bag-of-words and bort-tiny (both recipes) on the docs task's test split."""
    from minibort.bow import BowClassifier
    from minibort.data import docs_task
    from minibort.finetune import FinetuneConfig, finetune
    ds = docs_task()
    train, dev, test = ds["train"], ds["dev"], ds["test"]
    y = test.label_ids()
    rows: dict[str, dict] = {}
    majority = int(np.bincount(train.label_ids()).argmax())
    rows["majority class"] = {"test_accuracy": [float(np.mean(y == majority))]}
    best = max((BowClassifier(l2=l2).fit(train) for l2 in (1e-3, 1e-4, 1e-5)),
               key=lambda c: float(np.mean(c.predict(dev) == dev.label_ids())))
    rows[f"bag-of-words logistic regression (l2 {best.l2:g})"] = {
        "test_accuracy": [float(np.mean(best.predict(test) == y))]}
    for recipe in ("transformers", "bort"):
        accs, secs, dev_accs = [], [], []
        for seed in range(seeds):
            t0 = time.time()
            r = finetune(FinetuneConfig(model=model, recipe=recipe, epochs=epochs, seed=seed, progress=False),
                         train=train, dev=dev, test=test, progress=False)
            secs.append(time.time() - t0)
            accs.append(float(r.test_metrics["test"]["accuracy"]))
            dev_accs.append(r.score)
            print(f"{recipe} seed {seed}: dev {r.score:.4f} (epoch {r.best_epoch}), test {accs[-1]:.4f}, "
                  f"{secs[-1]:.0f} s", flush=True)
        c = r.config
        rows[f"{model}, {recipe} recipe (lr {c.lr:g}, batch {c.batch_size}, wd {c.weight_decay:g}, "
             f"warm-up {c.warmup_ratio:g}, {epochs} epochs)"] = {
            "test_accuracy": accs, "dev_accuracy": dev_accs, "seconds": secs}
    print(f"\ndocs task: train {len(train)}, dev {len(dev)}, test {len(test)} sentences; test accuracy")
    print("| model | mean | std | runs |\n|---|---|---|---|")
    for name, r in rows.items():
        a = np.array(r["test_accuracy"])
        print(f"| {name} | {a.mean():.4f} | {a.std(ddof=1) if len(a) > 1 else 0:.4f} | {len(a)} |")
    return {"sizes": {k: len(v) for k, v in ds.items()}, "rows": rows}


# ------------------------------------------------------------------------------------ command line


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    ap = argparse.ArgumentParser(prog="python -m minibort.bench.finetune", description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("what", nargs="?", default="speed", choices=["speed", "table"])
    ap.add_argument("--sizes", nargs="+", default=["tiny", "bort"], choices=list(SIZES))
    ap.add_argument("--steps", type=int, default=10, help="timed steps per side (plus one warm-up)")
    ap.add_argument("--threads", type=int, default=2, help="BLAS / torch threads of each side")
    ap.add_argument("--seeds", type=int, default=5, help="table: seeds per recipe")
    ap.add_argument("--epochs", type=int, default=3, help="table: epochs per fine-tuning run")
    ap.add_argument("--no-torch", action="store_true", help="speed: time minibort alone")
    ap.add_argument("--json", default=None, help="also write the results to this JSON file")
    ap.add_argument("--child", default=None, choices=["minibort", "torch"], help=argparse.SUPPRESS)
    ap.add_argument("--attn", default="sdpa", choices=["sdpa", "eager"], help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.steps < 1:
        ap.error("--steps must be at least 1")
    if args.child:
        print(json.dumps(child(args.child, args.sizes[0], args.steps, args.attn)))
        return 0
    if args.what == "speed":
        result = speed(args.sizes, args.steps, args.threads, args.no_torch)
    else:
        result = table(args.seeds, args.epochs)
    if args.json:
        from minibort._files import write_text_atomic
        write_text_atomic(args.json, json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
