"""Forward-pass benchmark: minibort against PyTorch, with transformers' default attention (SDPA,
PyTorch's fused scaled_dot_product_attention) and with its eager attention, on the same random weights.

    python -m minibort.bench.forward [--repeats 5] [--threads 2] [--size bort|tiny] [--json]

Float32. Times are medians of --repeats runs after one warm-up; each ratio is minibort / PyTorch
from this same run. GFLOP/s counts the matrix products (2 * m * n * k each), nearly all of the
arithmetic. PyTorch runs in a child process afterwards, with --threads threads and glibc's default
malloc settings (minibort tunes them for its own process; PyTorch users get the defaults); its
OpenMP threads keep spinning for a while after each call and would steal a core from minibort if
the two were interleaved. minibort uses MINIBORT_NUM_THREADS threads (default: as many as BLAS;
see minibort/_threads.py). Without torch and transformers, or with --no-torch, it times minibort alone.

Also timed: the encoder's matrix products alone (every linear layer's x @ W.T, no attention, no
elementwise work) in NumPy and in torch, on the same shapes: what the forward would take if all else
were free, and how NumPy's BLAS compares with PyTorch's on the arithmetic both must do. And
one layer's T x T attention alone (scores, softmax, context; no projections) at the
largest case, minibort's blocked `layers.attention` and its textbook `attention_reference` against
torch's scaled_dot_product_attention and the same three steps written out in torch.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

import numpy as np

from minibort import BortConfig, BortForMaskedLM, BortModel
from minibort import layers as L
from minibort.bench.report import Output, fmt, machine, machine_line, markdown_table, median_time

MLM_FRACTION = 0.15
# (model, B, T) per size; a BortForMaskedLM row appears twice: logits everywhere, then at 15 %.
ROWS = {
    "bort": [("BortModel", 1, 128), ("BortModel", 8, 128), ("BortModel", 1, 512), ("BortModel", 8, 512),
             ("BortForMaskedLM", 8, 128), ("BortForMaskedLM", 8, 128)],
    "tiny": [("BortModel", 2, 32), ("BortForMaskedLM", 2, 32), ("BortForMaskedLM", 2, 32)],
}
ATTENTION_CASE = {"bort": (8, 512), "tiny": (2, 32)}            # (B, T) of the isolated attention
GEMM_CASES = {"bort": [(8, 128), (8, 512)], "tiny": [(2, 32)]}  # (B, T) of the GEMMs-alone timing
ATTENTION_KEYS = ["minibort attention (blocked)", "minibort attention_reference", "torch SDPA", "torch eager"]


def config_for(size: str) -> BortConfig:
    """Bort's shape, or bort-tiny's (the shipped model's config; weights are random either way)."""
    if size == "bort":
        return BortConfig.bort()
    from minibort.checkpoint import embedded_dir
    return BortConfig.from_json(embedded_dir("bort-tiny") / "config.json")


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


def random_bort_weights(cfg: BortConfig, seed: int = 0) -> dict[str, np.ndarray]:
    """Float32 weights with LayerNorm and biases perturbed (as transformers names them)."""
    m = BortForMaskedLM(cfg, seed=seed)
    rng = np.random.default_rng(seed + 1)
    for k, v in m.params.items():
        if "LayerNorm" in k or k.endswith("bias"):
            v += (0.1 * rng.standard_normal(v.shape)).astype(v.dtype)
    return m.params


def make_cases(cfg: BortConfig, size: str, repeats: int) -> list[dict]:
    """The benchmark's inputs, the same in both processes (a fixed seed)."""
    rng = np.random.default_rng(0)
    cases = []
    for name, B, T in ROWS[size]:
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
        cases.append({"label": label, "name": name, "ids": ids, "mask": np.ones((B, T), dtype=np.int64),
                      "pos": pos, "rows": rows_l, "repeats": max(2, repeats // 2) if B * T >= 4096 else repeats})
    return cases


def attention_inputs(cfg: BortConfig, size: str):
    """(B, N, T, D) float32 q, k, v for the isolated attention, as transposed views of (B, T, H)."""
    B, T = ATTENTION_CASE[size]
    N, H = cfg.num_attention_heads, cfg.hidden_size
    rng = np.random.default_rng(1)
    return [rng.standard_normal((B, T, H), dtype=np.float32).reshape(B, T, N, H // N).transpose(0, 2, 1, 3)
            for _ in range(3)]


def gemm_inputs(cfg: BortConfig, B: int, T: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """(x, W) float32 pairs of every linear layer's product in the encoder at B x T: per layer the
    query, key, value and output projections (B*T, H) @ (H, H) and the FFN's two (I x H, H x I)."""
    H, I = cfg.hidden_size, cfg.intermediate_size
    rng = np.random.default_rng(2)
    shapes = [(H, H)] * 4 + [(H, I), (I, H)]                         # (in, out) per product
    return [(rng.standard_normal((B * T, i), dtype=np.float32), rng.standard_normal((o, i), dtype=np.float32))
            for _ in range(cfg.num_hidden_layers) for i, o in shapes]


def time_gemms(pairs, repeats: int) -> float:
    """Median seconds of all the products x @ W.T, one after another (NumPy or torch arrays alike)."""
    def run():
        for x, W in pairs:
            x @ W.T
    return median_time(run, repeats)


# ------------------------------------------------------------------------------------------ PyTorch


def time_pytorch(args) -> dict | None:
    """PyTorch's times (SDPA and eager) for the same cases, from a child process; None without torch."""
    env = dict(os.environ, MINIBORT_MALLOC_TUNING="0")
    cmd = [sys.executable, "-m", "minibort.bench.forward", "--torch-child", "--repeats", str(args.repeats),
           "--threads", str(args.threads), "--size", args.size]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    if out.returncode != 0:
        if "ModuleNotFoundError" in out.stderr:
            return None
        raise RuntimeError(f"the PyTorch child failed:\n{out.stderr}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def torch_model(cfg: BortConfig, params: dict, attn: str):
    """transformers' BertForMaskedLM with the given weights and attention implementation, in eval mode."""
    import torch
    import transformers
    tconf = transformers.BertConfig(**{k: v for k, v in cfg.to_dict().items() if k != "extra"},
                                    attn_implementation=attn)
    tm = transformers.BertForMaskedLM(tconf).float().eval()
    tm.load_state_dict({k: torch.from_numpy(v) for k, v in params.items()}, strict=False)
    tm.tie_weights()
    return tm


def torch_child(args) -> None:
    import torch
    import torch.nn.functional as F
    torch.set_num_threads(args.threads)
    cfg = config_for(args.size)
    params = random_bort_weights(cfg)
    result: dict = {"sdpa": [], "eager": []}
    for attn in ("sdpa", "eager"):
        tm = torch_model(cfg, params, attn)
        theirs = {"BortModel": tm.bert, "BortForMaskedLM": tm}
        for c in make_cases(cfg, args.size, args.repeats):      # PyTorch computes every position's logits
            model = theirs[c["name"]]
            ti, tmask = torch.from_numpy(c["ids"]), torch.from_numpy(c["mask"])

            def tfn():
                with torch.inference_mode():
                    return model(input_ids=ti, attention_mask=tmask)  # noqa: B023 (called at once, below)
            result[attn].append(median_time(tfn, c["repeats"]))
        del tm, theirs
    q, k, v = (torch.from_numpy(np.ascontiguousarray(t)) for t in attention_inputs(cfg, args.size))
    scale = 1.0 / float(q.shape[-1]) ** 0.5

    def eager():
        return torch.softmax(q @ k.transpose(-1, -2) * scale, dim=-1) @ v
    with torch.inference_mode():
        result["attention"] = {"torch SDPA": median_time(lambda: F.scaled_dot_product_attention(q, k, v),
                                                         args.repeats),
                               "torch eager": median_time(eager, args.repeats)}
    result["gemms"] = [time_gemms([(torch.from_numpy(x), torch.from_numpy(W)) for x, W in gemm_inputs(cfg, B, T)],
                                  args.repeats) for B, T in GEMM_CASES[args.size]]
    result["torch"] = torch.__version__
    print(json.dumps(result))


# ------------------------------------------------------------------------------------------ main


def main(argv=None) -> list[dict]:
    ap = argparse.ArgumentParser(prog="python -m minibort.bench.forward", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=5, help="timed runs per case (median; default 5)")
    ap.add_argument("--threads", type=int, default=2, help="PyTorch's threads (default 2)")
    ap.add_argument("--size", choices=sorted(ROWS), default="bort",
                    help="Bort's shape (default) or bort-tiny's, with small batches (a quick check)")
    ap.add_argument("--no-torch", action="store_true", help="time minibort alone")
    ap.add_argument("--json", action="store_true",
                    help="print one JSON document to stdout (the lines go to stderr); "
                         "python -m minibort.bench.report turns it into the README's table")
    ap.add_argument("--torch-child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.repeats < 1 or args.threads < 1:
        ap.error("--repeats and --threads must be at least 1")
    if args.torch_child:
        torch_child(args)
        return []
    out = Output(args.json)
    info = machine(args.threads)
    cfg = config_for(args.size)
    params = random_bort_weights(cfg)
    ours = {"BortModel": BortModel(cfg, params), "BortForMaskedLM": BortForMaskedLM(cfg, params)}
    cases = make_cases(cfg, args.size, args.repeats)
    for c in cases:
        model, ids, mask, pos = ours[c["name"]], c["ids"], c["mask"], c["pos"]
        if c["name"] == "BortForMaskedLM":
            c["ours"] = median_time(lambda: model(ids, mask, positions=pos), c["repeats"])  # noqa: B023
        else:
            c["ours"] = median_time(lambda: model(ids, mask), c["repeats"])  # noqa: B023
    q, k, v = attention_inputs(cfg, args.size)
    bias = np.zeros((q.shape[0], 1, 1, q.shape[2]), dtype=np.float32)
    attention = {ATTENTION_KEYS[0]: median_time(lambda: L.attention(q, k, v, bias, keep_probs=False), args.repeats),
                 ATTENTION_KEYS[1]: median_time(lambda: L.attention_reference(q, k, v, bias), args.repeats)}
    gemms = [{"case": f"{B}x{T}", "gflop": sum(2 * x.shape[0] * x.shape[1] * W.shape[0] for x, W in pairs) / 1e9,
              "minibort_ms": 1e3 * time_gemms(pairs, args.repeats)}
             for B, T in GEMM_CASES[args.size] for pairs in [gemm_inputs(cfg, B, T)]]
    theirs = None if args.no_torch else time_pytorch(args)
    if theirs is None:
        out("torch/transformers not used: timing minibort alone")
    else:
        attention.update(theirs["attention"])
        for g, t in zip(gemms, theirs["gemms"], strict=True):
            g.update(torch_ms=1e3 * t, ratio=g["minibort_ms"] / (1e3 * t))
    rows = []
    for i, c in enumerate(cases):
        B, T = c["ids"].shape
        row = {"case": c["label"], "minibort_ms": 1e3 * c["ours"],
               "gflops": forward_flops(cfg, B, T, c["rows"]) / c["ours"] / 1e9}
        if theirs:
            sdpa, eager = theirs["sdpa"][i], theirs["eager"][i]
            row.update(sdpa_ms=1e3 * sdpa, eager_ms=1e3 * eager, ratio_sdpa=c["ours"] / sdpa,
                       ratio_eager=c["ours"] / eager)
        rows.append(row)
        out(f"{row['case']:45s} minibort {row['minibort_ms']:8.1f} ms   "
            + (f"SDPA {row['sdpa_ms']:8.1f} ms  eager {row['eager_ms']:8.1f} ms   ratio {row['ratio_sdpa']:.2f} "
               f"(SDPA) {row['ratio_eager']:.2f} (eager)   " if theirs else "")
            + f"{row['gflops']:.0f} GFLOP/s")
    for g in gemms:
        out(f"the encoder's GEMMs alone at {g['case']} ({g['gflop']:.1f} GFLOP): NumPy {g['minibort_ms']:.0f} ms"
            + (f", torch {g['torch_ms']:.0f} ms, ratio {g['ratio']:.2f}" if "torch_ms" in g else ""))
    B, T = ATTENTION_CASE[args.size]
    out(f"\none layer's T x T attention alone at {B}x{T}: "
        + ", ".join(f"{k} {1e3 * t:.1f} ms" for k, t in attention.items()))
    out("\n" + machine_line(info) + "\n")
    out(markdown_table(["case", "minibort (ms)", "SDPA (ms)", "eager (ms)", "vs SDPA", "vs eager"],
                       [[r["case"], fmt(r["minibort_ms"]), fmt(r.get("sdpa_ms")), fmt(r.get("eager_ms")),
                         fmt(r.get("ratio_sdpa"), 2), fmt(r.get("ratio_eager"), 2)] for r in rows]))
    out.emit({"benchmark": "forward", "size": args.size, "machine": info, "rows": rows,
              "attention": {k: 1e3 * t for k, t in attention.items()},
              "attention_case": f"{B}x{T}", "gemms": gemms})
    return rows


if __name__ == "__main__":
    main()
