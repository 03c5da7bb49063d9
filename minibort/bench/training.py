"""Training-step benchmark: one step (forward, backward, AdamW update) of minibort against PyTorch with
transformers' default attention (SDPA) and with its eager attention, on the same weights and inputs.

    python -m minibort.bench.training [--case mlm tiny] [--repeats 3] [--threads 2] [--json]
                                      [--no-memory] [--no-profile] [--no-torch] [--batch BxT]

Two steps, float32, AdamW (weight decay 0.01) on both sides, torch.set_num_threads(--threads),
minibort on MINIBORT_NUM_THREADS threads (default: as many as BLAS; minibort/_threads.py):

  mlm   Bort size (4 x 1024, FFN 768, V 50265), masked-LM pretraining step, batch 8 x 128, 15 % of
        positions labelled, dropout 0.1. PyTorch's BertForMaskedLM computes all B*T*V logits,
        minibort only the labelled rows' (that is part of what is compared: the loss and gradients
        are the same, tests/test_backward_reference.py).
  tiny  bort-tiny's shape (4 x 256, FFN 192, V 4096; random weights), a sequence-classification
        fine-tuning step, batch 16 x 128, 2 labels, gradients clipped to norm 1 (as transformers'
        Trainer does), the config's dropout (0).

Reported for each:

1. time: medians of --repeats steps after one warm-up step each (which also allocates the
   optimizer's moments), minibort's, SDPA's and eager's steps interleaved; each ratio
   minibort / PyTorch comes from this one run;
2. peak memory: each side in a fresh subprocess, started before this process allocates anything
   large (Linux carries a parent's peak RSS into a child's ru_maxrss); the child reports its resident
   memory after imports + weights (baseline) and the peak ru_maxrss over two steps (PyTorch: SDPA);
3. where minibort's time goes: forward / backward / AdamW split, then cProfile of one step
   (exclusive time per function; a NumPy operator such as `@` counts toward the function using it).

Run it on a quiet machine. When another busy process holds one of two cores, OpenBLAS's two threads
wait for each other at every product (and PyTorch's OpenMP threads likewise); MINIBORT_NUM_THREADS=1
(with --threads 1 for PyTorch) runs both on one core each.
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import io
import json
import os
import pstats
import resource
import statistics
import subprocess
import sys
import time
import warnings

import numpy as np

from minibort import BortForMaskedLM, BortForSequenceClassification, optim
from minibort.bench.forward import config_for, random_bort_weights
from minibort.bench.report import Output, fmt, machine, machine_line, markdown_table, run_times

MLM_FRACTION = 0.15
CASES = {"mlm": ("bort", (8, 128), "Bort MLM step"), "tiny": ("tiny", (16, 128), "bort-tiny fine-tuning step")}


def batch(cfg, case: str, B: int, T: int, seed: int = 0):
    """(B, T) ids without padding, mask, and labels: MLM labels at 15 % of positions (-100 elsewhere),
    or one class label per sequence."""
    rng = np.random.default_rng(seed)
    ids = rng.integers(3, cfg.vocab_size, size=(B, T))
    ids[:, 0] = 0
    mask = np.ones((B, T), dtype=np.int64)
    if case == "tiny":
        return ids, mask, rng.integers(0, 2, size=B)
    labels = np.full((B, T), -100, dtype=np.int64)
    flat = rng.choice(B * T, size=max(1, round(MLM_FRACTION * B * T)), replace=False)
    labels.reshape(-1)[flat] = rng.integers(3, cfg.vocab_size, flat.size)
    return ids, mask, labels


def setup(case: str, B: int, T: int):
    """The config, the weights (minibort's names) and a batch; the same in every process."""
    size = CASES[case][0]
    overrides = {"hidden_dropout_prob": 0.1, "attention_probs_dropout_prob": 0.1} if case == "mlm" else {}
    cfg = config_for(size)
    if overrides:
        cfg = type(cfg).from_dict({**cfg.to_dict(), **overrides})
    params = random_bort_weights(cfg)
    if case == "tiny":
        with warnings.catch_warnings():                       # the new classifier head, by design
            warnings.simplefilter("ignore")
            params = BortForSequenceClassification(cfg, params, seed=0).params
    return cfg, params, batch(cfg, case, B, T)


# ------------------------------------------------------------------------------------------ the steps


def minibort_step_fn(case, cfg, params, data):
    ids, mask, labels = data
    cls = BortForMaskedLM if case == "mlm" else BortForSequenceClassification
    model = cls(cfg, params, dtype=np.float32).train(seed=0)
    opt = optim.AdamW(model.params, lr=1e-5, weight_decay=0.01)

    def step():
        loss, grads = model.loss_and_grads(ids, labels, mask)
        if case == "tiny":
            optim.clip_grad_norm(grads, 1.0)
        opt.step(grads)
        return loss
    return step, model, opt


def torch_step_fn(case, cfg, params, data, threads: int, attn: str):
    import torch
    import transformers
    torch.set_num_threads(threads)
    tconf = transformers.BertConfig(**{k: v for k, v in cfg.to_dict().items() if k != "extra"},
                                    attn_implementation=attn)
    cls = transformers.BertForMaskedLM if case == "mlm" else transformers.BertForSequenceClassification
    tm = cls(tconf).float()
    tm.load_state_dict({k: torch.from_numpy(v.copy()) for k, v in params.items()}, strict=False)
    if case == "mlm":
        tm.tie_weights()
    tm.train()
    opt = torch.optim.AdamW(tm.parameters(), lr=1e-5, weight_decay=0.01)
    ti, tmask, tl = (torch.from_numpy(a) for a in data)
    torch.manual_seed(0)

    def step():
        out = tm(input_ids=ti, attention_mask=tmask, labels=tl)
        out.loss.backward()
        if case == "tiny":
            torch.nn.utils.clip_grad_norm_(tm.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        return out.loss.item()
    return step


# ------------------------------------------------------------------------------------------ memory


def _rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def child(which: str, case: str, B: int, T: int, threads: int) -> None:
    """Run in a fresh process: baseline RSS after imports + weights, then peak over two steps."""
    if which == "torch":
        import torch  # noqa: F401  (imported before the baseline, like minibort's numpy)
        import transformers  # noqa: F401
    cfg, params, data = setup(case, B, T)
    if which == "minibort":
        step = minibort_step_fn(case, cfg, params, data)[0]
    else:
        step = torch_step_fn(case, cfg, params, data, threads, "sdpa")
        del params                                          # torch holds its own copy
    gc.collect()
    base = _rss_mb()
    step()
    step()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"baseline_rss_mb": base, "peak_mb": peak}))


def measure_memory(which: str, case: str, B: int, T: int, threads: int) -> dict:
    out = subprocess.run([sys.executable, "-m", "minibort.bench.training", "--child", which, "--case", case,
                          "--batch", f"{B}x{T}", "--threads", str(threads)],
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


# ------------------------------------------------------------------------------------------ profile


def gemm_floor(cfg, B: int, T: int, Q: int, head: list[tuple[int, int, int]], repeats: int = 3) -> float:
    """Seconds that the step's matrix products alone take here: every forward and backward GEMM of
    the step at its own shape, on random float32 arrays (the same count and shapes the step runs;
    the attention products as batched matmuls over (B, N) at the shapes the blocked form uses).
    The last block computes only the Q rows per sequence its head reads (keys and values still come
    from all T), and `head` lists the head's (rows, in, out) linears.
    The step cannot be faster than this on this BLAS; the rest is NumPy's elementwise work."""
    H, I, N = cfg.hidden_size, cfg.intermediate_size, cfg.num_attention_heads
    D, R, Rq = H // N, B * T, B * Q
    rng = np.random.default_rng(0)

    def arr(*shape):
        return rng.standard_normal(shape, dtype=np.float32)
    full = [(R, H, H)] * 4 + [(R, H, I), (R, I, H)]                   # (rows, in, out) per layer
    last = [(Rq, H, H), (R, H, H), (R, H, H), (Rq, H, H), (Rq, H, I), (Rq, I, H)]   # q k v o, FFN
    shapes = []                                                       # (a, b) pairs: a @ b
    for rows, n_in, n_out in full * (cfg.num_hidden_layers - 1) + last + head:
        x, W, dy = arr(rows, n_in), arr(n_out, n_in), arr(rows, n_out)
        shapes += [(x, W.T), (dy, W), (dy.T, x)]                      # forward, dx, dW
    for q_rows in [T] * (cfg.num_hidden_layers - 1) + [Q]:            # forward 2, backward 4
        q, s, kt, k = arr(B, N, q_rows, D), arr(B, N, q_rows, T), arr(B, N, D, T), arr(B, N, T, D)
        st = s.transpose(0, 1, 3, 2)
        shapes += [(q, kt), (s, k), (s, k), (q, kt), (st, q), (st, q)]  # qk^T, pv; dq, dp; dv, dk

    def all_products():
        for a, b in shapes:
            a @ b
    return min(run_times(all_products, repeats))


def profile(out: Output, step, model, opt, data, top: int = 22) -> dict:
    """Forward / backward / optimizer split and a cProfile of one step; returns the split in ms."""
    ids, mask, labels = data
    sel = labels != -100 if labels.ndim == 2 else None

    def forward():
        if sel is not None:
            model(ids, mask, positions=sel)
        else:
            model(ids, mask)
    t_fwd = min(run_times(forward, 3))
    t_lg = min(run_times(lambda: model.loss_and_grads(ids, labels, mask), 3))
    _, grads = model.loss_and_grads(ids, labels, mask)
    t_opt = min(run_times(lambda: opt.step(grads), 3))
    B, T = ids.shape
    cfg = model.config
    if sel is not None:                                               # masked LM: the labelled rows
        Q, M = int(sel.sum(axis=1).max()), int(sel.sum())
        head = [(M, cfg.hidden_size, cfg.hidden_size), (M, cfg.hidden_size, cfg.vocab_size)]
    else:                                                             # classifier: <s> only
        Q = 1
        head = [(B, cfg.hidden_size, cfg.hidden_size), (B, cfg.hidden_size, cfg.num_labels)]
    t_gemm = gemm_floor(cfg, B, T, Q, head)
    split = {"forward_ms": 1e3 * t_fwd, "backward_ms": 1e3 * (t_lg - t_fwd), "adamw_ms": 1e3 * t_opt,
             "gemm_floor_ms": 1e3 * t_gemm}
    out(f"minibort step split (best of 3): forward ~{split['forward_ms']:.0f} ms, backward "
        f"~{split['backward_ms']:.0f} ms, AdamW {split['adamw_ms']:.0f} ms; the step's matrix products "
        f"alone {split['gemm_floor_ms']:.0f} ms (the step is {(t_lg + t_opt) / t_gemm:.2f}x that)")
    pr = cProfile.Profile()
    pr.enable()
    step()
    pr.disable()
    ps = pstats.Stats(pr, stream=io.StringIO())
    total = sum(v[2] for v in ps.stats.values())
    rows = sorted(ps.stats.items(), key=lambda kv: -kv[1][2])[:top]
    out(f"cProfile of one minibort step (exclusive time, {1e3 * total:.0f} ms profiled):")
    out(f"{'ms':>8} {'%':>6} {'calls':>6}  function")
    prof = []
    for (file, line, fn), (_cc, nc, tt, _ct, _) in rows:
        where = fn if file == "~" else f"{os.path.basename(file)}:{line} {fn}"
        out(f"{1e3 * tt:8.1f} {100 * tt / total:5.1f}% {nc:6d}  {where}")
        prof.append({"function": where, "ms": 1e3 * tt, "calls": nc})
    return {**split, "profile": prof}


# ------------------------------------------------------------------------------------------ main


def _batch_arg(text: str) -> tuple[int, int]:
    try:
        B, T = (int(x) for x in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not BxT, e.g. 16x128") from None
    if B < 1 or T < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: B and T must be at least 1")
    return B, T


def memory_row(case: str, args, out: Output, have_torch: bool) -> dict:
    """Peak memory of each side's step in fresh processes; run before this process grows (a child
    inherits its parent's peak RSS)."""
    B, T = args.batch or CASES[case][1]
    label = f"{CASES[case][2]} {B}x{T}"
    row: dict = {"case": label}
    for which in ["minibort"] + (["torch"] if have_torch else []):
        m = measure_memory(which, case, B, T, args.threads)
        row[f"{which}_peak_mb"] = m["peak_mb"]
        row[f"{which}_baseline_mb"] = m["baseline_rss_mb"]
        out(f"{label}: {which:8s} peak RSS {m['peak_mb']:7.0f} MB; after imports + weights "
            f"{m['baseline_rss_mb']:6.0f} MB")
    return row


def run_case(case: str, args, out: Output, have_torch: bool, row: dict) -> dict:
    B, T = args.batch or CASES[case][1]
    label = f"{CASES[case][2]} {B}x{T}"
    row["case"] = label
    cfg, params, data = setup(case, B, T)
    step, model, opt = minibort_step_fn(case, cfg, params, data)
    steps = {"minibort": step}
    if have_torch:
        for attn in ("sdpa", "eager"):
            steps[attn] = torch_step_fn(case, cfg, params, data, args.threads, attn)
    for fn in steps.values():
        fn()                                        # warm-up: optimizer state, threads
    wall: dict = {k: [] for k in steps}
    for _ in range(args.repeats):                   # interleaved: a busy machine slows all alike
        for k, fn in steps.items():
            t0 = time.perf_counter()
            fn()
            wall[k].append(time.perf_counter() - t0)
    med = {k: statistics.median(v) for k, v in wall.items()}
    row["minibort_s"] = med["minibort"]
    for attn in ("sdpa", "eager"):
        if attn in med:
            row[f"{attn}_s"] = med[attn]
            row[f"ratio_{attn}"] = med["minibort"] / med[attn]
    out(f"{label}: " + ", ".join(f"{k} {med[k]:.3f} s (runs {', '.join(f'{t:.3f}' for t in wall[k])})"
                                 for k in steps))
    if have_torch:
        out(f"{label}: ratio minibort / PyTorch {row['ratio_sdpa']:.2f} (SDPA), {row['ratio_eager']:.2f} (eager)")
    del steps
    if not args.no_profile:
        row.update(profile(out, step, model, opt, data))
    return row


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(prog="python -m minibort.bench.training", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--case", nargs="+", choices=sorted(CASES), default=["mlm", "tiny"],
                    help="which steps to time (default: both)")
    ap.add_argument("--batch", type=_batch_arg, default=None, metavar="BxT",
                    help="override the batch shape (default: 8x128 for mlm, 16x128 for tiny)")
    ap.add_argument("--repeats", type=int, default=3, help="timed steps per side (median; default 3)")
    ap.add_argument("--threads", type=int, default=2, help="PyTorch's threads (default 2)")
    ap.add_argument("--no-memory", action="store_true", help="skip the subprocess memory measurement")
    ap.add_argument("--no-profile", action="store_true", help="skip the time breakdown")
    ap.add_argument("--no-torch", action="store_true", help="time minibort alone")
    ap.add_argument("--json", action="store_true",
                    help="print one JSON document to stdout (the lines go to stderr); "
                         "python -m minibort.bench.report turns it into the README's table")
    ap.add_argument("--child", choices=["minibort", "torch"], help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.repeats < 1 or args.threads < 1:
        ap.error("--repeats and --threads must be at least 1")
    if args.child:
        B, T = args.batch or CASES[args.case[0]][1]
        child(args.child, args.case[0], B, T, args.threads)
        return {}
    out = Output(args.json)
    have_torch = False
    if not args.no_torch:
        try:
            import torch  # noqa: F401
            import transformers  # noqa: F401
            have_torch = True
        except ImportError:
            out("torch/transformers not installed: timing minibort alone")
    info = machine(args.threads)
    memory = {case: ({} if args.no_memory else memory_row(case, args, out, have_torch)) for case in args.case}
    rows = [run_case(case, args, out, have_torch, memory[case]) for case in args.case]
    info["load_average_end"] = round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None
    out("\n" + machine_line(info) + f"; load average at the end {info['load_average_end']}\n")
    out(markdown_table(["step", "minibort (s)", "SDPA (s)", "eager (s)", "vs SDPA", "vs eager"],
                       [[r["case"], fmt(r["minibort_s"], 3), fmt(r.get("sdpa_s"), 3), fmt(r.get("eager_s"), 3),
                         fmt(r.get("ratio_sdpa"), 2), fmt(r.get("ratio_eager"), 2)] for r in rows]))
    doc = {"benchmark": "training", "machine": info, "rows": rows}
    out.emit(doc)
    return doc


if __name__ == "__main__":
    main()
