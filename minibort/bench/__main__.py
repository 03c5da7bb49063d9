"""Run every benchmark in turn: python -m minibort.bench [forward training loading tokenizer ...]

Each part is also a module of its own (python -m minibort.bench.forward, ...), with its own --help
and options. Run them on a quiet machine: the ratios against PyTorch come from one run, both sides
measured back to back.
"""

from __future__ import annotations

import argparse
import importlib
import sys

PARTS = ["forward", "training", "loading", "tokenizer", "finetune"]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m minibort.bench", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("parts", nargs="*", metavar="PART",
                    help=f"benchmarks to run, in order (default: all of {', '.join(PARTS)})")
    args = ap.parse_args(argv)
    for part in args.parts:
        if part not in PARTS:
            ap.error(f"unknown benchmark {part!r}; choose from {', '.join(PARTS)}")
    for part in args.parts or PARTS:
        print(f"\n=== {part} ===", flush=True)
        module = importlib.import_module(f"minibort.bench.{part}")
        module.main([])
    return 0


if __name__ == "__main__":
    sys.exit(main())
