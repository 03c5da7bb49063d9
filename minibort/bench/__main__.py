"""Run every benchmark in turn: python -m minibort.bench [forward training loading tokenizer]

Each part is also a module of its own (python -m minibort.bench.forward, ...). Run them on a quiet
machine: the ratios against PyTorch come from one run, both sides measured back to back.
"""

from __future__ import annotations

import importlib
import sys

PARTS = ["forward", "training", "loading", "tokenizer"]


def main(argv: list[str]) -> None:
    parts = argv or PARTS
    for part in parts:
        if part not in PARTS:
            raise SystemExit(f"unknown benchmark {part!r}; choose from {PARTS}")
    for part in parts:
        print(f"\n=== {part} ===", flush=True)
        module = importlib.import_module(f"minibort.bench.{part}")
        module.main([])


if __name__ == "__main__":
    main(sys.argv[1:])
