"""Forward-pass benchmark: minibort against PyTorch eager on the same random Bort-size weights.

    python -m minibort.bench.forward [--repeats 5] [--threads 2] [--markdown]

Float32, same thread count for both (NumPy's BLAS uses the machine's cores; torch is set to
--threads). Times are medians of --repeats runs after one warm-up; the ratio is minibort / PyTorch
from this same run; GFLOP/s counts the matrix products (2 * m * n * k each), which are nearly all
of the arithmetic. Without torch and transformers it times minibort alone.
"""

from __future__ import annotations

import argparse
import platform
import statistics
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


def main(argv=None) -> list[dict]:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)
    cfg = BortConfig.bort()
    params = random_bort_weights(cfg)
    ours = {"BortModel": BortModel(cfg, params), "BortForMaskedLM": BortForMaskedLM(cfg, params)}
    try:
        import torch
        import transformers
        torch.set_num_threads(args.threads)
        tconf = transformers.BertConfig(**{k: v for k, v in cfg.to_dict().items() if k != "extra"},
                                        attn_implementation="eager")
        tm = transformers.BertForMaskedLM(tconf).float().eval()
        tm.load_state_dict({k: torch.from_numpy(v) for k, v in params.items()}, strict=False)
        tm.tie_weights()
        theirs = {"BortModel": tm.bert, "BortForMaskedLM": tm}
    except ImportError:
        torch = None
        print("torch/transformers not installed: timing minibort alone")
    rng = np.random.default_rng(0)
    rows = []
    cases = [(name, B, T, None) for name, B, T in ROWS] + [("BortForMaskedLM", 8, 128, MLM_FRACTION)]
    for name, B, T, frac in cases:
        ids = rng.integers(3, cfg.vocab_size, size=(B, T))
        mask = np.ones((B, T), dtype=np.int64)
        label = f"{name} {B}x{T}"
        if name == "BortForMaskedLM":
            if frac is None:
                fn, rows_l = (lambda: ours[name](ids, mask)), B * T
                label += " (logits everywhere)"
            else:
                pos = rng.random((B, T)) < frac
                fn, rows_l = (lambda: ours[name](ids, mask, positions=pos)), int(pos.sum())
                label += f" (logits at {frac:.0%})"
        else:
            fn, rows_l = (lambda: ours[name](ids, mask)), None
        reps = max(2, args.repeats // 2) if B * T >= 4096 else args.repeats
        t_ours = median_time(fn, reps)
        t_torch = None
        if torch is not None:
            ti, tmask = torch.from_numpy(ids), torch.from_numpy(mask)
            model = theirs[name]

            def tfn():
                with torch.inference_mode():
                    return model(input_ids=ti, attention_mask=tmask)
            t_torch = median_time(tfn, reps)                     # PyTorch computes every position's logits
        flops = forward_flops(cfg, B, T, rows_l)
        row = dict(case=label, minibort_ms=1e3 * t_ours, torch_ms=None if t_torch is None else 1e3 * t_torch,
                   ratio=None if t_torch is None else t_ours / t_torch, gflops=flops / t_ours / 1e9)
        rows.append(row)
        print(f"{label:45s} minibort {row['minibort_ms']:8.1f} ms   "
              + (f"PyTorch {row['torch_ms']:8.1f} ms   ratio {row['ratio']:.2f}   " if t_torch else "")
              + f"{row['gflops']:.0f} GFLOP/s", flush=True)
    print(f"\n{time.strftime('%Y-%m-%d')}, {platform.machine()}, {platform.python_version()}, numpy {np.__version__}"
          + (f", torch {torch.__version__} ({args.threads} threads)" if torch else ""))
    print("\n| case | minibort (ms) | PyTorch (ms) | ratio | minibort GFLOP/s |\n|---|---|---|---|---|")
    for r in rows:
        t = f"{r['torch_ms']:.0f}" if r["torch_ms"] else "-"
        ratio = f"{r['ratio']:.2f}" if r["ratio"] else "-"
        print(f"| {r['case']} | {r['minibort_ms']:.0f} | {t} | {ratio} | {r['gflops']:.0f} |")
    return rows


if __name__ == "__main__":
    main()
