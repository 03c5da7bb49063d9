"""How fast minibort loads Bort-size checkpoints, and how much memory loading plus a forward takes.

    python -m minibort.bench.loading [--dir DIR] [--repeat 3] [--size bort|tiny] [--json]

Writes, from random weights with NumPy alone, a Bort-size (76 M parameters) float32
model.safetensors and a hub-like float16 pytorch_model.bin (with the `position_ids` buffer and a
random untied decoder, like amazon/bort's), then measures:

1. loading the float32 safetensors (memory-mapped; target < 0.2 s), raw and through
   `BortForMaskedLM.from_pretrained`;
2. loading the float16 .bin, converted to float32 (target < 2 s), raw and through `from_pretrained`;
3. in a fresh subprocess per model, the peak resident memory (`ru_maxrss`, cross-checked with
   Linux's VmHWM) of loading the safetensors copy and running one 8x128 forward, above the
   interpreter's own (numpy and minibort imported), against the weights' bytes plus the
   activations' (NumPy's peak allocation during that forward, measured with tracemalloc);
   target: below 1.3x. Memory-mapped pages the forward never reads (embedding rows of tokens
   not in the batch) are never loaded, which is why BortModel stays below its weights' size.

A child process inherits its parent's peak RSS in `ru_maxrss` (Linux carries it across fork and
exec), so the files are written by a subprocess too, and the memory is measured before this
process loads anything large.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

from ..checkpoint import load_state_dict
from ..formats.safetensors import save_file
from ..formats.torch_zip import save_torch_zip
from ..model import BortForMaskedLM
from .report import Output, machine, machine_line

B, T = 8, 128


def make_files(directory: Path, size: str = "bort") -> tuple[int, int]:
    """Write model.safetensors (float32) and pytorch_model.bin (float16, hub-like). Returns their sizes."""
    from .forward import config_for
    config = config_for(size)
    rng = np.random.default_rng(0)
    state = {}
    for name, shape in BortForMaskedLM.param_shapes(config).items():
        state[name] = (rng.standard_normal(shape, dtype=np.float32) * 0.02).astype(np.float32)
    (directory / "st").mkdir(parents=True, exist_ok=True)
    (directory / "bin").mkdir(parents=True, exist_ok=True)
    config.to_json(directory / "st" / "config.json")
    config.to_json(directory / "bin" / "config.json")
    save_file(state, directory / "st" / "model.safetensors")
    hub = {k: v.astype(np.float16) for k, v in state.items()}
    hub["bert.embeddings.position_ids"] = np.arange(config.max_position_embeddings, dtype=np.int64)[None]
    hub["cls.predictions.decoder.weight"] = rng.standard_normal((config.vocab_size, config.hidden_size),
                                                                dtype=np.float32).astype(np.float16)
    hub["cls.predictions.decoder.bias"] = hub["cls.predictions.bias"]
    save_torch_zip(hub, directory / "bin" / "pytorch_model.bin")
    return ((directory / "st" / "model.safetensors").stat().st_size,
            (directory / "bin" / "pytorch_model.bin").stat().st_size)


def best_of(repeat: int, fn) -> float:
    """Fastest of `repeat` runs, in seconds (the page cache is warm after the first)."""
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


# Run in a fresh interpreter, so that ru_maxrss is this measurement's alone.
_MEMORY_SCRIPT = r"""
import json, resource, sys, tracemalloc, warnings
import numpy as np
import minibort
warnings.simplefilter("ignore")
kb = lambda: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
base = kb()
cls = getattr(minibort, sys.argv[2])
model = cls.from_pretrained(sys.argv[1])
after_load = kb()
rng = np.random.default_rng(0)
ids = rng.integers(3, model.config.vocab_size, (8, 128))
kwargs = {"positions": rng.random((8, 128)) < 0.15} if sys.argv[2] == "BortForMaskedLM" else {}
tracemalloc.start()
out = model(ids, **kwargs)
activations = tracemalloc.get_traced_memory()[1]
tracemalloc.stop()
weights = sum(v.nbytes for v in model.params.values())
hwm = 0
try:
    with open("/proc/self/status") as f:
        hwm = next(int(l.split()[1]) * 1024 for l in f if l.startswith("VmHWM:"))
except (OSError, StopIteration):
    pass
print(json.dumps({"baseline": base, "after_load": after_load, "peak": kb(), "vmhwm": hwm, "weights": weights,
                  "activations": activations}))
"""


def _python(code: str, *args: str) -> str:
    """Run `code` in a fresh interpreter that imports this checkout's minibort; return its stdout."""
    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(root), os.environ.get("PYTHONPATH")]))}
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, env=env,
                          check=True).stdout


def peak_memory(directory: Path, cls: str) -> dict:
    """Peak RSS of loading `directory` and one 8x128 forward of `cls`, in a subprocess."""
    return json.loads(_python(_MEMORY_SCRIPT, str(directory), cls).strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    """Create the files, time the loads, measure peak memory; print a report."""
    p = argparse.ArgumentParser(prog="python -m minibort.bench.loading", description=__doc__.split("\n\n")[0])
    p.add_argument("--dir", type=Path, default=None, help="where to write the files (default: a temporary folder)")
    p.add_argument("--repeat", type=int, default=3, help="timed runs per measurement (best is reported)")
    p.add_argument("--size", choices=["bort", "tiny"], default="bort",
                   help="Bort's shape (default) or bort-tiny's (a quick check; the targets are for Bort)")
    p.add_argument("--json", action="store_true",
                   help="print one JSON document to stdout (the lines go to stderr)")
    args = p.parse_args(argv)
    if args.repeat < 1:
        p.error("--repeat must be at least 1")
    print_ = Output(args.json)
    doc: dict = {"benchmark": "loading", "size": args.size, "machine": machine(), "rows": [], "memory": []}
    warnings.simplefilter("ignore")                  # the untrained-MLM-head warning, by design here
    with tempfile.TemporaryDirectory() as tmp:
        d = args.dir or Path(tmp)
        t = time.perf_counter()
        out = _python("import sys; from pathlib import Path; from minibort.bench.loading import make_files; "
                      "print(*make_files(Path(sys.argv[1]), sys.argv[2]))", str(d), args.size)
        st_size, bin_size = map(int, out.split())
        print_(f"wrote {d}: model.safetensors {st_size / 2 ** 20:.0f} MiB (float32), pytorch_model.bin "
               f"{bin_size / 2 ** 20:.0f} MiB (float16) in {time.perf_counter() - t:.1f} s")

        for cls in ("BortModel", "BortForMaskedLM"):
            m = peak_memory(d / "st", cls)
            used = m["peak"] - m["baseline"]
            budget = m["weights"] + m["activations"]
            doc["memory"].append({"model": cls, "peak_above_interpreter_mb": used / 2 ** 20,
                                  "weights_plus_activations_mb": budget / 2 ** 20, "ratio": used / budget})
            print_(f"{cls} load + one {B}x{T} forward: peak RSS {used / 2 ** 20:.0f} MiB above the interpreter's "
                   f"{m['baseline'] / 2 ** 20:.0f} MiB; weights {m['weights'] / 2 ** 20:.0f} MiB + activations "
                   f"{m['activations'] / 2 ** 20:.0f} MiB = {budget / 2 ** 20:.0f} MiB; ratio {used / budget:.2f} "
                   f"(target < 1.3) {'ok' if used / budget < 1.3 else 'MISSED'}; VmHWM {m['vmhwm'] / 2 ** 20:.0f} "
                   "MiB in all")
        st = d / "st" / "model.safetensors"
        bn = d / "bin" / "pytorch_model.bin"
        rows = [
            ("safetensors float32, load_state_dict (memory map)", best_of(args.repeat, lambda: load_state_dict(st)), 0.2),
            ("safetensors float32, BortForMaskedLM.from_pretrained",
             best_of(args.repeat, lambda: BortForMaskedLM.from_pretrained(d / "st")), 0.2),
            (".bin float16 -> float32, load_state_dict", best_of(args.repeat, lambda: load_state_dict(bn)), 2.0),
            (".bin float16 -> float32, BortForMaskedLM.from_pretrained",
             best_of(args.repeat, lambda: BortForMaskedLM.from_pretrained(d / "bin")), 2.0),
        ]
        for name, secs, target in rows:
            doc["rows"].append({"case": name, "ms": secs * 1000, "target_ms": target * 1000})
            print_(f"{name:58s} {secs * 1000:8.1f} ms   (target < {target * 1000:.0f} ms) "
                   f"{'ok' if secs < target else 'MISSED'}")
        if importlib.util.find_spec("torch") is not None:   # for context only: PyTorch on the same file
            import torch

            def torch_load() -> None:
                sd = torch.load(bn, weights_only=True)
                {k: v.float() for k, v in sd.items()}
            t_torch = best_of(args.repeat, torch_load)
            doc["rows"].append({"case": "(PyTorch: torch.load + .float() of the same .bin)", "ms": t_torch * 1000,
                                "target_ms": None})
            print_(f"{'(PyTorch: torch.load + .float() of the same .bin)':58s} {t_torch * 1000:8.1f} ms")
    print_("\n" + machine_line(doc["machine"]))
    print_.emit(doc)
    return 0


if __name__ == "__main__":
    sys.exit(main())
