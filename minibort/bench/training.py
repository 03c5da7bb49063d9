"""Training-step benchmark: one Bort-size MLM step (forward, backward, AdamW update), minibort against
PyTorch eager on the same weights and inputs.

    python -m minibort.bench.training [--repeats 3] [--threads 2] [--no-memory] [--no-profile]

Bort size (4 x 1024, FFN 768, V 50265), float32, batch 8 x 128, 15 % of positions labelled,
training mode (dropout 0.1) on both sides, AdamW (wd 0.01), torch.set_num_threads(--threads);
NumPy's BLAS uses the machine's cores (2 here). Reported:

1. time: medians of --repeats steps after one warm-up step each (which also allocates the
   optimizer's moments), minibort's and PyTorch's steps interleaved; the ratio minibort / PyTorch
   comes from this one run.
   PyTorch's BertForMaskedLM computes all B*T*V logits, minibort only the labelled rows' (that is
   part of what is being compared: the loss and gradients are the same, tests/test_backward_reference.py);
2. peak memory: each side in a fresh subprocess, started before this process allocates anything
   large (Linux carries a parent's peak RSS into a child's ru_maxrss); the child reports its resident
   memory after imports + weights (baseline) and the peak ru_maxrss over two steps;
3. where minibort's time goes: forward / backward / AdamW split, then cProfile of one step
   (exclusive time per function; a NumPy operator such as `@` counts toward the function using it).

Run it on a quiet machine. With another busy process on one of the two cores, OpenBLAS's two
threads wait for each other at every BLAS call, and minibort makes many small ones: each per-head
product (q k^T, probs v and their gradients) is B * N = 64 GEMMs of 128 x 128 x 128. Measured here
(2026-11-26) the attention then took 1-2 s per layer instead of ~20 ms, and the whole step 8-30 s
instead of ~2.5 s (the same step with BLAS held to one thread inside attention: ~5.2 s). PyTorch
slows too (4 -> 12 s). A fair comparison on a shared machine is one thread each:

    OPENBLAS_NUM_THREADS=1 python -m minibort.bench.training --threads 1
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import os
import platform
import pstats
import resource
import statistics
import subprocess
import sys
import time

import numpy as np

from minibort import BortConfig, BortForMaskedLM, optim
from minibort.bench.forward import random_bort_weights

B, T, MLM_FRACTION = 8, 128, 0.15


def batch(cfg: BortConfig, seed: int = 0):
    """(B, T) ids without padding, and labels at exactly 15 % of positions (-100 elsewhere)."""
    rng = np.random.default_rng(seed)
    ids = rng.integers(3, cfg.vocab_size, size=(B, T))
    ids[:, 0] = 0
    labels = np.full((B, T), -100, dtype=np.int64)
    flat = rng.choice(B * T, size=round(MLM_FRACTION * B * T), replace=False)
    labels.reshape(-1)[flat] = rng.integers(3, cfg.vocab_size, flat.size)
    return ids, np.ones((B, T), dtype=np.int64), labels


# ------------------------------------------------------------------------------------------ the steps


def minibort_step_fn(cfg, params, ids, mask, labels):
    model = BortForMaskedLM(cfg, params, dtype=np.float32).train(seed=0)
    opt = optim.AdamW(model.params, lr=1e-5, weight_decay=0.01)

    def step():
        loss, grads = model.loss_and_grads(ids, labels, mask)
        opt.step(grads)
        return loss
    return step, model, opt


def torch_step_fn(cfg, params, ids, mask, labels, threads):
    import torch
    import transformers
    torch.set_num_threads(threads)
    tconf = transformers.BertConfig(**{k: v for k, v in cfg.to_dict().items() if k != "extra"},
                                    attn_implementation="eager")
    tm = transformers.BertForMaskedLM(tconf).float()
    tm.load_state_dict({k: torch.from_numpy(v.copy()) for k, v in params.items()}, strict=False)
    tm.tie_weights()
    tm.train()
    opt = torch.optim.AdamW(tm.parameters(), lr=1e-5, weight_decay=0.01)
    ti, tmask, tl = torch.from_numpy(ids), torch.from_numpy(mask), torch.from_numpy(labels)
    torch.manual_seed(0)

    def step():
        out = tm(input_ids=ti, attention_mask=tmask, labels=tl)
        out.loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return out.loss.item()
    return step


def median_time(fn, repeats: int) -> tuple[float, list[float]]:
    fn()                                                     # warm-up: optimizer state, BLAS threads
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), times


# ------------------------------------------------------------------------------------------ memory


def _rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def child(which: str, threads: int) -> None:
    """Run in a fresh process: baseline RSS after imports + weights, then peak over two steps."""
    cfg = BortConfig.bort()
    ids, mask, labels = batch(cfg)
    if which == "torch":
        import torch  # noqa: F401  (imported before the baseline, like minibort's numpy)
        import transformers  # noqa: F401
    params = random_bort_weights(cfg)
    if which == "minibort":
        step = minibort_step_fn(cfg, params, ids, mask, labels)[0]
    else:
        step = torch_step_fn(cfg, params, ids, mask, labels, threads)
        del params                                          # torch holds its own copy
    import gc
    gc.collect()
    base = _rss_mb()
    base_peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    step()
    step()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"baseline_rss_mb": base, "peak_before_steps_mb": base_peak, "peak_mb": peak}))


def measure_memory(which: str, threads: int) -> dict:
    out = subprocess.run([sys.executable, "-m", "minibort.bench.training", "--child", which,
                          "--threads", str(threads)], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


# ------------------------------------------------------------------------------------------ profile


def profile(step, model, opt, ids, mask, labels, top: int = 18) -> None:
    # forward only (same work as the step's forward: encoder + head at the labelled rows + loss)
    sel = labels != -100

    def forward():
        model._rng = np.random.default_rng(0)
        model(ids, mask, positions=sel)
    t_fwd = median_time(forward, 2)[0]
    t_lg = median_time(lambda: model.loss_and_grads(ids, labels, mask), 2)[0]
    _, grads = model.loss_and_grads(ids, labels, mask)
    t_opt = median_time(lambda: opt.step(grads), 2)[0]
    print(f"\nminibort step split: forward ~{1e3 * t_fwd:.0f} ms, backward ~{1e3 * (t_lg - t_fwd):.0f} ms, "
          f"AdamW {1e3 * t_opt:.0f} ms (step total ~{1e3 * (t_lg + t_opt):.0f} ms)")
    pr = cProfile.Profile()
    pr.enable()
    step()
    pr.disable()
    s = io.StringIO()
    ps = pstats.Stats(pr, stream=s)
    total = sum(v[2] for v in ps.stats.values())
    rows = sorted(ps.stats.items(), key=lambda kv: -kv[1][2])[:top]
    print(f"\ncProfile of one minibort step (exclusive time, {1e3 * total:.0f} ms profiled):")
    print(f"{'ms':>8} {'%':>6} {'calls':>6}  function")
    for (file, line, fn), (cc, nc, tt, ct, _) in rows:
        where = fn if file == "~" else f"{os.path.basename(file)}:{line} {fn}"
        print(f"{1e3 * tt:8.1f} {100 * tt / total:5.1f}% {nc:6d}  {where}")


# ------------------------------------------------------------------------------------------ main


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--no-memory", action="store_true", help="skip the subprocess memory measurement")
    ap.add_argument("--no-profile", action="store_true", help="skip the time breakdown")
    ap.add_argument("--child", choices=["minibort", "torch"], help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        child(args.child, args.threads)
        return {}
    try:
        import torch
        import transformers  # noqa: F401
        have_torch = True
    except ImportError:
        have_torch = False
        print("torch/transformers not installed: timing minibort alone")
    result: dict = {}
    # 1. memory first, while this process is still small (children inherit its peak RSS)
    if not args.no_memory:
        for which in ["minibort"] + (["torch"] if have_torch else []):
            m = measure_memory(which, args.threads)
            result[f"{which}_memory"] = m
            print(f"{which:8s} peak RSS {m['peak_mb']:7.0f} MB; after imports + weights {m['baseline_rss_mb']:6.0f} MB;"
                  f" step adds {m['peak_mb'] - m['baseline_rss_mb']:6.0f} MB", flush=True)
    # 2. time: both warmed up, then their steps interleaved, so a busy machine slows both alike
    cfg = BortConfig.bort()
    params = random_bort_weights(cfg)
    ids, mask, labels = batch(cfg)
    step, model, opt = minibort_step_fn(cfg, params, ids, mask, labels)
    tstep = torch_step_fn(cfg, params, ids, mask, labels, args.threads) if have_torch else None
    ours_all, torch_all, ours_cpu, torch_cpu = [], [], [], []
    step()
    if tstep:
        tstep()
    for _ in range(args.repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        step()
        ours_all.append(time.perf_counter() - t0)
        ours_cpu.append(time.process_time() - c0)
        if tstep:
            t0, c0 = time.perf_counter(), time.process_time()
            tstep()
            torch_all.append(time.perf_counter() - t0)
            torch_cpu.append(time.process_time() - c0)
    t_ours = statistics.median(ours_all)
    result.update(minibort_s=t_ours, minibort_cpu_s=statistics.median(ours_cpu))
    print(f"minibort  MLM step {B}x{T} (15 % labelled): median {t_ours:.3f} s wall, "
          f"{result['minibort_cpu_s']:.3f} s CPU (runs {', '.join(f'{t:.3f}' for t in ours_all)})", flush=True)
    if tstep:
        t_torch = statistics.median(torch_all)
        result.update(torch_s=t_torch, torch_cpu_s=statistics.median(torch_cpu), ratio=t_ours / t_torch)
        print(f"PyTorch   MLM step {B}x{T} (all logits):     median {t_torch:.3f} s wall, "
              f"{result['torch_cpu_s']:.3f} s CPU (runs {', '.join(f'{t:.3f}' for t in torch_all)})")
        print(f"ratio minibort / PyTorch: {t_ours / t_torch:.2f} wall-clock (goal <= 0.6), "
              f"{result['minibort_cpu_s'] / result['torch_cpu_s']:.2f} in CPU time (all threads; a steadier "
              "figure when other processes share the cores)")
        del tstep
    print(f"load average while measuring: {os.getloadavg()[0]:.1f} (on {os.cpu_count()} cores; "
          "other processes slow both sides)")
    print(f"{time.strftime('%Y-%m-%d %H:%M')}, {platform.machine()}, Python {platform.python_version()}, "
          f"numpy {np.__version__}" + (f", torch {torch.__version__} ({args.threads} threads)" if have_torch else ""))
    # 3. profile
    if not args.no_profile:
        profile(step, model, opt, ids, mask, labels)
    return result


if __name__ == "__main__":
    main()
