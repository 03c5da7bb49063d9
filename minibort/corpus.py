"""A pretraining corpus that every Python installation carries: the standard library's own words.

Two sources, gathered without importing anything but `pydoc_data.topics` (a plain dict of strings):

1. the documentation topics `pydoc_data.topics.topics` (what `help("with")` shows), one document each;
2. the docstrings of the pure-Python standard-library modules, one document per module: the
   module's docstring, then every class's, function's and method's, in source order. Modules are
   found with `pkgutil.iter_modules` on the folder `sysconfig.get_paths()["stdlib"]` (no import) and
   parsed with `ast` (importing a module runs its code; parsing does not).

Everything is deterministic: modules are visited in sorted order, tests, GUI code, vendored
packages and installers are skipped (`SKIP`), whitespace is normalised (each paragraph becomes one
line with single spaces), and each document goes to the training or held-out split by a hash of its
name (`heldout_fraction` of the names), so a document never straddles the split.

The output folder holds `train.txt` and `heldout.txt` (one paragraph per line, a blank line between
documents) and `corpus.json` (sizes, the sha256 of both files and the Python version). The checksum
depends on the Python version, since each release edits its docstrings.

    python -m minibort.corpus --out /tmp/corpus
"""

from __future__ import annotations

import argparse
import ast
import hashlib
import json
import os
import pkgutil
import re
import sys
import sysconfig
import warnings

# Top-level packages and modules left out: tests, GUI and demo code, vendored or installer
# packages, and files that are data rather than prose.
SKIP = frozenset({
    "test", "tests", "idlelib", "tkinter", "turtledemo", "ensurepip", "lib2to3", "site-packages",
    "lib-dynload", "__pycache__", "pydoc_data", "__phello__", "__hello__", "antigravity", "this",
    "_sysconfigdata__linux_x86_64-linux-gnu", "turtle", "venv",
})

HELDOUT_FRACTION = 0.05
FORMAT_VERSION = 1


def _skip(dotted: str) -> bool:
    parts = dotted.split(".")
    if parts[0] in SKIP or parts[0].startswith("_sysconfigdata"):
        return True
    # test packages and modules deeper down (e.g. `unittest.test`, `ctypes.test`, `test_*`)
    return any(p in ("test", "tests") or p.startswith("test_") for p in parts)


def stdlib_modules(stdlib_dir: str | None = None) -> list[tuple[str, str]]:
    """Sorted (dotted name, source path) of the pure-Python stdlib modules, found without importing."""
    stdlib_dir = stdlib_dir or sysconfig.get_paths()["stdlib"]
    found: list[tuple[str, str]] = []

    def walk(folder: str, prefix: str) -> None:
        for info in pkgutil.iter_modules([folder]):     # reads file names only, imports nothing
            dotted = prefix + info.name
            if _skip(dotted):
                continue
            if info.ispkg:
                sub = os.path.join(folder, info.name)
                found.append((dotted, os.path.join(sub, "__init__.py")))
                walk(sub, dotted + ".")
            else:
                path = os.path.join(folder, info.name + ".py")
                if os.path.isfile(path):                # extension modules (.so) have no source
                    found.append((dotted, path))

    walk(stdlib_dir, "")
    return sorted(found)


def normalise(text: str) -> list[str]:
    """Split on blank lines into paragraphs; each becomes one line with single spaces."""
    paragraphs = re.split(r"\n\s*\n", text.replace("\r\n", "\n"))
    out = []
    for p in paragraphs:
        p = " ".join(p.split())
        if p:
            out.append(p)
    return out


def module_docstrings(source: str) -> list[str]:
    """Docstrings of a module, its classes, functions and methods, in source order (via ast)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")                 # invalid escape sequences in old sources
        tree = ast.parse(source)
    docs = []
    for node in [tree] + sorted(
            (n for n in ast.walk(tree)
             if isinstance(n, (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))),
            key=lambda n: (n.lineno, n.col_offset)):
        doc = ast.get_docstring(node, clean=True)
        if doc:
            docs.append(doc)
    return docs


def gather(stdlib_dir: str | None = None) -> list[tuple[str, list[str]]]:
    """All documents as sorted (name, paragraphs): "topic:<key>" and "module:<dotted name>"."""
    # a dict of strings; importing it has no side effects
    from pydoc_data.topics import topics
    docs = []
    for key in sorted(topics):
        paras = normalise(topics[key])
        if paras:
            docs.append((f"topic:{key}", paras))
    for dotted, path in stdlib_modules(stdlib_dir):
        try:
            with open(path, "rb") as f:
                source = f.read()
            texts = module_docstrings(source)
        except (OSError, SyntaxError, ValueError):
            continue
        paras = [p for t in texts for p in normalise(t)]
        if paras:
            docs.append((f"module:{dotted}", paras))
    return sorted(docs)


def is_heldout(name: str, fraction: float = HELDOUT_FRACTION) -> bool:
    """Split by document: the first 8 hex digits of sha256(name), as a fraction of 16^8."""
    h = int(hashlib.sha256(name.encode("utf-8")).hexdigest()[:8], 16)
    return h < fraction * 16 ** 8


def render(docs: list[tuple[str, list[str]]]) -> str:
    """One paragraph per line, a blank line between documents."""
    return "".join("\n".join(paras) + "\n\n" for _, paras in docs)


def build(out_dir: str, stdlib_dir: str | None = None, heldout_fraction: float = HELDOUT_FRACTION) -> dict:
    """Write train.txt, heldout.txt and corpus.json into `out_dir`; return the record."""
    docs = gather(stdlib_dir)
    train = [d for d in docs if not is_heldout(d[0], heldout_fraction)]
    held = [d for d in docs if is_heldout(d[0], heldout_fraction)]
    os.makedirs(out_dir, exist_ok=True)
    texts = {"train.txt": render(train), "heldout.txt": render(held)}
    digest = hashlib.sha256()
    record: dict = {"format_version": FORMAT_VERSION,
                    "python_version": sys.version.split()[0],
                    "heldout_fraction": heldout_fraction, "files": {}}
    for fname, text in texts.items():
        data = text.encode("utf-8")
        digest.update(fname.encode() + b"\0" + data)
        _write_atomic(os.path.join(out_dir, fname), data)
        split = train if fname == "train.txt" else held
        record["files"][fname] = {"documents": len(split), "paragraphs": sum(len(p) for _, p in split),
                                  "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    record["sha256"] = digest.hexdigest()
    record["heldout_documents"] = [n for n, _ in held]
    _write_atomic(os.path.join(out_dir, "corpus.json"),
                  (json.dumps(record, indent=2) + "\n").encode("utf-8"))
    return record


def read_split(path: str) -> list[list[str]]:
    """Read train.txt / heldout.txt back as a list of documents, each a list of paragraphs."""
    with open(path, encoding="utf-8") as f:
        blocks = f.read().split("\n\n")
    return [b.split("\n") for b in blocks if b.strip()]


def _write_atomic(path: str, data: bytes) -> None:
    tmp = path + ".part"
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m minibort.corpus", description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", required=True, help="output folder for train.txt, heldout.txt, corpus.json")
    ap.add_argument("--heldout-fraction", type=float, default=HELDOUT_FRACTION,
                    help="share of documents (by name hash) kept for evaluation")
    ap.add_argument("--stdlib", default=None, help="stdlib folder (default: sysconfig's)")
    args = ap.parse_args(argv)
    rec = build(args.out, args.stdlib, args.heldout_fraction)
    for fname, info in rec["files"].items():
        print(f"{fname}: {info['documents']} documents, {info['paragraphs']} paragraphs, "
              f"{info['bytes']:,} bytes")
    print(f"Python {rec['python_version']}  sha256 {rec['sha256']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
