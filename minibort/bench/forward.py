"""Forward-pass benchmark: minibort against PyTorch eager on the same random Bort-size weights.

    python -m minibort.bench.forward [--repeats 5] [--threads 2]

Float32, same thread count for both (NumPy's BLAS uses the machine's cores; torch is set to
--threads). Times are medians of --repeats runs after one warm-up; the ratio is minibort / PyTorch
from this same run; GFLOP/s counts the matrix products (2 * m * n * k each), which are nearly all
of the arithmetic. Without torch and transformers it times minibort alone.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time

import numpy as np

from minibort import BortConfig, BortForMaskedLM, BortModel

ROWS = [("BortModel", 1, 128), ("BortModel", 8, 128), ("BortModel", 1, 512), ("BortModel", 8, 512),
        ("BortForMaskedLM", 8, 128)]
MLM_FRACTION = 0.15


def forward_flops(cfg: BortConfig, B: int, T: int, logits_rows: int | None = None) -> float:
    """Multiply-adds x 2 of one forward; `logits_rows` = positions that get MLM logits (None: none)."""
    H, I, N, V = cfg.hidden_size, cfg.intermediate_size, cfg.num_attention_heads, cfg.vocab_size
    D = H // N
    R = B * T
    per_layer = 2 * R * H * 3 * H + 2 * R * H * H + 2 * R * H * I * 2 + 2 * 2 * B * N * T * T * D
    total = cfg.num_hidden_layers * per_layer
    if logits_rows is not None:
        total += 2 * logits_rows * H * H + 2 * logits_rows * H * V
    return float(total)


def median_time(fn, repeats: int) -> float:
    fn()                                                         # warm-up: allocations, BLAS threads
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def random_bort_weights(cfg: BortConfig, seed: int = 0) -> dict[str, np.ndarray]:
    """Bort-size float32 weights with LayerNorm and biases perturbed (as transformers names them)."""
    m = BortForMaskedLM(cfg, seed=seed)
    rng = np.random.default_rng(seed + 1)
    for k, v in m.params.items():
        if "LayerNorm" in k or k.endswith("bias"):
            v += (0.1 * rng.standard_normal(v.shape)).astype(v.dtype)
    return m.params


def time_pytorch(args) -> tuple[list[float] | None, str | None]:
    """PyTorch's times for the same cases, in a child process with glibc's default malloc settings
    (minibort tunes them for its own process; PyTorch users get the defaults), so neither side's
    allocator or OpenMP threads touch the other's timings."""
    env = dict(os.environ, MINIBORT_MALLOC_TUNING="0")
    cmd = [sys.executable, "-m", "minibort.bench.forward", "--torch-child", "--repeats", str(args.repeats),
           "--threads", str(args.threads)]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    if out.returncode != 0:
        if "ModuleNotFoundError" in out.stderr:
            return None, None
        raise RuntimeError(f"the PyTorch child failed:\n{out.stderr}")
    d = json.loads(out.stdout.strip().splitlines()[-1])
    return d["times"], d["torch"]


def torch_child(args) -> None:
    import torch
    import transformers
    torch.set_num_threads(args.threads)
    cfg = BortConfig.bort()
    params = random_bort_weights(cfg)
    tconf = transformers.BertConfig(**{k: v for k, v in cfg.to_dict().items() if k != "extra"},
                                    attn_implementation="eager")
    tm = transformers.BertForMaskedLM(tconf).float().eval()
    tm.load_state_dict({k: torch.from_numpy(v) for k, v in params.items()}, strict=False)
    tm.tie_weights()
    theirs = {"BortModel": tm.bert, "BortForMaskedLM": tm}
    times = []
    for c in make_cases(cfg, args):              # PyTorch computes every position's logits
        model = theirs[c["name"]]
        ti, tmask = torch.from_numpy(c["ids"]), torch.from_numpy(c["mask"])

        def tfn():
            with torch.inference_mode():
                return model(input_ids=ti, attention_mask=tmask)  # noqa: B023 (called at once, below)
        times.append(median_time(tfn, c["repeats"]))
    print(json.dumps({"times": times, "torch": torch.__version__}))


def make_cases(cfg: BortConfig, args) -> list[dict]:
    """The benchmark's inputs, the same in both processes (a fixed seed)."""
    rng = np.random.default_rng(0)
    cases = []
    for name, B, T in ROWS + [("BortForMaskedLM", 8, 128)]:
        ids = rng.integers(3, cfg.vocab_size, size=(B, T))
        label, pos, rows_l = f"{name} {B}x{T}", None, None
        if name == "BortForMaskedLM":
            if any(c["label"].startswith(label) for c in cases):   # the second MLM row: 15 % of positions
                pos = rng.random((B, T)) < MLM_FRACTION
                rows_l = int(pos.sum())
                label += f" (logits at {MLM_FRACTION:.0%})"
            else:
                rows_l = B * T
                label += " (logits everywhere)"
        cases.append({"label": label, "name": name, "ids": ids, "mask": np.ones((B, T), dtype=np.int64), "pos": pos,
                          "rows": rows_l, "repeats": max(2, args.repeats // 2) if B * T >= 4096 else args.repeats})
    return cases


def main(argv=None) -> list[dict]:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--torch-child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.torch_child:
        torch_child(args)
        return []
    cfg = BortConfig.bort()
    params = random_bort_weights(cfg)
    ours = {"BortModel": BortModel(cfg, params), "BortForMaskedLM": BortForMaskedLM(cfg, params)}
    cases = make_cases(cfg, args)

    # minibort here; PyTorch in a child process afterwards: its OpenMP threads keep spinning for a
    # while after each call, and would steal a core from OpenBLAS if the two were interleaved.
    for c in cases:
        model, ids, mask, pos = ours[c["name"]], c["ids"], c["mask"], c["pos"]
        if c["name"] == "BortForMaskedLM":
            c["ours"] = median_time(lambda: model(ids, mask, positions=pos), c["repeats"])  # noqa: B023
        else:
            c["ours"] = median_time(lambda: model(ids, mask), c["repeats"])  # noqa: B023
    torch_times, torch_version = time_pytorch(args)
    if torch_times is None:
        print("torch/transformers not installed: timing minibort alone")
    for c, t in zip(cases, torch_times or [None] * len(cases)):
        c["torch"] = t
    rows = []
    for c in cases:
        t_ours, t_torch = c["ours"], c.get("torch")
        B, T = c["ids"].shape
        row = {"case": c["label"], "minibort_ms": 1e3 * t_ours,
                   "torch_ms": None if t_torch is None else 1e3 * t_torch,
                   "ratio": None if t_torch is None else t_ours / t_torch,
                   "gflops": forward_flops(cfg, B, T, c["rows"]) / t_ours / 1e9}
        rows.append(row)
        print(f"{row['case']:45s} minibort {row['minibort_ms']:8.1f} ms   "
              + (f"PyTorch {row['torch_ms']:8.1f} ms   ratio {row['ratio']:.2f}   " if t_torch else "")
              + f"{row['gflops']:.0f} GFLOP/s", flush=True)
    print(f"\n{time.strftime('%Y-%m-%d')}, {platform.machine()}, Python {platform.python_version()}, "
          f"numpy {np.__version__}"
          + (f", torch {torch_version} ({args.threads} threads)" if torch_version else ""))
    print("\n| case | minibort (ms) | PyTorch (ms) | ratio | minibort GFLOP/s |\n|---|---|---|---|---|")
    for r in rows:
        t = f"{r['torch_ms']:.0f}" if r["torch_ms"] else "-"
        ratio = f"{r['ratio']:.2f}" if r["ratio"] else "-"
        print(f"| {r['case']} | {r['minibort_ms']:.0f} | {t} | {ratio} | {r['gflops']:.0f} |")
    return rows


if __name__ == "__main__":
    main()
