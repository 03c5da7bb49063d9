"""What the benchmarks share: timing, the machine's description, --json output, and the README's tables.

    python -m minibort.bench.forward --json > forward.json
    python -m minibort.bench.training --json > training.json
    python -m minibort.bench.report forward.json training.json      # markdown tables for the README

With --json a benchmark prints its human-readable lines to stderr and one JSON document to stdout:
{"benchmark": name, "machine": {...}, "rows": [...], ...}. The report turns each file into the
markdown table the README shows, headed by the date and machine it was measured on.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable

import numpy as np


def run_times(fn: Callable[[], object], repeats: int) -> list[float]:
    """Seconds of `repeats` calls of fn, after one untimed warm-up call (allocations, BLAS threads)."""
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return times


def median_time(fn: Callable[[], object], repeats: int) -> float:
    """The median of `run_times(fn, repeats)`, in seconds."""
    return statistics.median(run_times(fn, repeats))


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine(threads: int | None = None) -> dict:
    """The date (UTC) and the machine a measurement was taken on, for the tables' heading."""
    from .. import _threads
    info = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "blas_threads": _threads.blas_threads(),
        "minibort_threads": _threads.num_threads(),
        "load_average": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None,
    }
    if threads is not None:
        info["torch_threads"] = threads
    from importlib.metadata import PackageNotFoundError, version
    try:            # versions without importing: a child's peak memory would start from this process's
        info["torch"], info["transformers"] = version("torch"), version("transformers")
    except PackageNotFoundError:
        pass
    return info


def machine_line(m: dict) -> str:
    """One line: date, CPU, cores, versions, thread counts, load average."""
    parts = [m["date"], f"{m['cpu']} ({m['cores']} cores)", f"Python {m['python']}", f"NumPy {m['numpy']}"]
    if m.get("torch"):
        threads = f" ({m['torch_threads']} threads)" if m.get("torch_threads") else ""
        parts.append(f"torch {m['torch']}{threads}, transformers {m['transformers']}")
    parts.append(f"minibort threads {m['minibort_threads']}, BLAS threads {m['blas_threads']}")
    if m.get("load_average") is not None:
        parts.append(f"load average {m['load_average']} at the start")
    return ", ".join(parts)


class Output:
    """Where a benchmark's lines go: stdout, or stderr when --json owns stdout."""

    def __init__(self, json_mode: bool):
        self.json_mode = json_mode

    def __call__(self, *args, **kwargs) -> None:
        print(*args, **kwargs, file=sys.stderr if self.json_mode else sys.stdout, flush=True)

    def emit(self, doc: dict) -> None:
        """With --json, the one JSON document on stdout."""
        if self.json_mode:
            print(json.dumps(doc, indent=1))


def fmt(x, digits: int = 0) -> str:
    """A number for a table cell; '-' for a missing one."""
    return "-" if x is None else f"{x:.{digits}f}"


def markdown_table(headers: list[str], rows: list[list[str]]) -> str:
    """A markdown table (the README's form)."""
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def table(doc: dict) -> str:
    """A benchmark's JSON document -> its README section: the heading line, then the table(s)."""
    name = doc.get("benchmark")
    out = [f"*{name}*, {machine_line(doc['machine'])}:", ""]
    if name == "forward":
        out.append(markdown_table(
            ["case", "minibort (ms)", "PyTorch SDPA (ms)", "PyTorch eager (ms)", "vs SDPA", "vs eager",
             "minibort GFLOP/s"],
            [[r["case"], fmt(r["minibort_ms"]), fmt(r.get("sdpa_ms")), fmt(r.get("eager_ms")),
              fmt(r.get("ratio_sdpa"), 2), fmt(r.get("ratio_eager"), 2), fmt(r["gflops"])] for r in doc["rows"]]))
        if doc.get("gemms"):
            out += ["", markdown_table(["the encoder's GEMMs alone", "GFLOP", "NumPy (ms)", "torch (ms)", "ratio"],
                                       [[g["case"], fmt(g["gflop"], 1), fmt(g["minibort_ms"]), fmt(g.get("torch_ms")),
                                         fmt(g.get("ratio"), 2)] for g in doc["gemms"]])]
        if doc.get("attention"):
            out += ["", markdown_table(["one layer's T x T attention", "ms"],
                                       [[k, fmt(v, 1)] for k, v in doc["attention"].items()])]
    elif name == "training":
        out.append(markdown_table(
            ["step", "minibort (s)", "PyTorch SDPA (s)", "PyTorch eager (s)", "vs SDPA", "vs eager",
             "minibort peak RSS (MB)", "PyTorch peak RSS (MB)"],
            [[r["case"], fmt(r["minibort_s"], 3), fmt(r.get("sdpa_s"), 3), fmt(r.get("eager_s"), 3),
              fmt(r.get("ratio_sdpa"), 2), fmt(r.get("ratio_eager"), 2), fmt(r.get("minibort_peak_mb")),
              fmt(r.get("torch_peak_mb"))] for r in doc["rows"]]))
    elif name == "finetune":
        out.append(markdown_table(
            ["fine-tuning step", "minibort (s)", "PyTorch SDPA (s)", "PyTorch eager (s)", "vs SDPA", "vs eager",
             "minibort examples/s", "minibort clip + optimizer (s)"],
            [[r["case"], fmt(r["minibort_s"], 3), fmt(r.get("sdpa_s"), 3), fmt(r.get("eager_s"), 3),
              fmt(r.get("ratio_sdpa"), 2), fmt(r.get("ratio_eager"), 2), fmt(r["minibort_examples_per_s"], 1),
              fmt(r["minibort_split_s"]["clip+optimizer"], 3)] for r in doc["rows"]]))
    elif name == "loading":
        out.append(markdown_table(["", "time (ms)", "target (ms)"],
                                  [[r["case"], fmt(r["ms"], 1), fmt(r["target_ms"])] for r in doc["rows"]]))
        out += ["", markdown_table(["load + one forward", "peak RSS (MB)", "weights + activations (MB)", "ratio"],
                                   [[m["model"], fmt(m["peak_above_interpreter_mb"]),
                                     fmt(m["weights_plus_activations_mb"]), fmt(m["ratio"], 2)]
                                    for m in doc["memory"]])]
    else:
        rows = doc.get("rows", [])
        keys = list(rows[0]) if rows else []
        out.append(markdown_table(keys, [[str(r.get(k, "-")) for k in keys] for r in rows]))
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m minibort.bench.report", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("files", nargs="+", metavar="FILE.json", help="output of a benchmark run with --json")
    args = ap.parse_args(argv)
    for path in args.files:
        try:
            with open(path) as f:
                doc = json.load(f)
            if not isinstance(doc, dict) or "benchmark" not in doc:
                raise KeyError("no 'benchmark' key")
            text = table(doc)
        except (OSError, json.JSONDecodeError, KeyError, TypeError, AttributeError) as e:
            print(f"error: {path}: not a benchmark's --json output ({e}); make one with e.g. "
                  "python -m minibort.bench.forward --json > forward.json", file=sys.stderr)
            return 1
        print(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
