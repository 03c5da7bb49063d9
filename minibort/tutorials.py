"""Re-execute the tutorial notebooks and save their outputs, with Jupyter's own tools (nbclient).

    python -m minibort.tutorials --execute                 # every tutorials/NN_*.ipynb, in order
    python -m minibort.tutorials --execute 02_forward      # one (or several) by name
    python -m minibort.tutorials --list

The notebooks in tutorials/ are committed executed, so that GitHub shows their results; the tests
(tests/test_tutorials.py, with nbval) fail when a saved output no longer matches what the code
prints. Re-run this after changing a notebook, or code whose results a notebook shows, and commit
the notebooks it rewrites. Each notebook runs in a fresh `python3` kernel whose working directory is
tutorials/; a notebook is written back (atomically) only if every cell ran and no output contains a
path of this machine. Needs the `tutorials` extra: pip install -e ".[tutorials]".
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

from ._files import write_text_atomic

NOTEBOOK_GLOB = "[0-9][0-9]_*.ipynb"        # NN_topic.ipynb; tests/test_tutorials.py uses the same glob
KERNEL = "python3"
EXTRA_MODULES = ("nbformat", "nbclient", "nbconvert", "ipykernel", "matplotlib")
INSTALL_HINT = 'pip install -e ".[tutorials]"'


class TutorialError(Exception):
    """A problem this command reports as `error: ...` (missing extra, unknown notebook, failed cell)."""


def default_dir() -> Path:
    """tutorials/ beside the minibort package: present in a clone (and its editable install)."""
    return Path(__file__).resolve().parents[1] / "tutorials"


def find_notebooks(folder: str | os.PathLike) -> list[Path]:
    """The tutorial notebooks in `folder`, in reading order (NN_topic.ipynb)."""
    return sorted(Path(folder).glob(NOTEBOOK_GLOB))


def machine_paths() -> list[str]:
    """Strings that must not appear in a saved output: this machine's folders."""
    candidates = [str(Path(__file__).resolve().parents[1]), os.path.expanduser("~"), tempfile.gettempdir(),
                  sys.prefix, "site-packages"]
    return [c for c in dict.fromkeys(candidates) if len(c) > 1]


def output_texts(nb) -> list[tuple[int, str]]:
    """(code cell number, text) for every text output of a notebook: streams, text/plain, errors."""
    found = []
    code_cells = [c for c in nb["cells"] if c["cell_type"] == "code"]
    for k, cell in enumerate(code_cells, start=1):
        for out in cell.get("outputs", []):
            if "text" in out:
                found.append((k, "".join(out["text"])))
            for mime in ("text/plain", "text/html", "text/markdown", "text/latex"):
                if mime in out.get("data", {}):
                    found.append((k, "".join(out["data"][mime])))
            if out.get("output_type") == "error":
                found.append((k, "\n".join(out.get("traceback", []))))
    return found


def paths_in_outputs(nb, forbidden: list[str] | None = None) -> list[str]:
    """Problems found: each names the code cell whose output shows a machine path."""
    forbidden = machine_paths() if forbidden is None else forbidden
    problems = []
    for k, text in output_texts(nb):
        for f in forbidden:
            if f in text:
                line = next(line for line in text.splitlines() if f in line)
                problems.append(f"code cell {k} prints a path of this machine ({f!r}): {line.strip()[:120]}")
    return problems


def _import_extra():
    """nbformat and nbclient, or a TutorialError that says how to install them."""
    import importlib
    modules = {}
    for name in EXTRA_MODULES:
        try:
            modules[name] = importlib.import_module(name)
        except ImportError as e:
            raise TutorialError(f"the `tutorials` extra is not installed ({e}); install it with: "
                                f"{INSTALL_HINT}") from None
    return modules["nbformat"], modules["nbclient"]


def resolve(names: list[str], folder: Path) -> list[Path]:
    """Notebook names (with or without .ipynb, or paths) -> files in `folder`; all of them if none."""
    available = find_notebooks(folder)
    if not names:
        if not available:
            raise TutorialError(f"no notebooks matching {NOTEBOOK_GLOB} in {folder}")
        return available
    chosen = []
    for name in names:
        stem = Path(name).name.removesuffix(".ipynb")
        match = [p for p in available if p.stem == stem or p.stem.startswith(stem + "_") or p.stem[:2] == stem]
        if len(match) != 1:
            listing = ", ".join(p.stem for p in available) or "none"
            raise TutorialError(f"no single notebook called {name!r} in {folder} (available: {listing})")
        chosen.append(match[0])
    return chosen


def execute(path: Path, timeout: int = 600) -> float:
    """Run every cell of the notebook at `path` in a fresh kernel and save it with its outputs.

    Returns the seconds it took. Raises TutorialError (and leaves the file as it was) when a cell
    raises or an output shows a path of this machine.
    """
    nbformat, nbclient = _import_extra()
    nb = nbformat.read(path, as_version=4)
    client = nbclient.NotebookClient(nb, timeout=timeout, kernel_name=KERNEL, record_timing=False,
                                     resources={"metadata": {"path": str(path.parent)}})
    start = time.perf_counter()
    try:
        client.execute()
    except nbclient.exceptions.CellExecutionError as e:
        first = str(e).strip().splitlines()
        raise TutorialError(f"{path.name}: a cell raised; the notebook was not saved.\n"
                            + "\n".join(first[-15:])) from None
    except nbclient.exceptions.CellTimeoutError:
        raise TutorialError(f"{path.name}: a cell ran longer than {timeout} s (--timeout); not saved") from None
    seconds = time.perf_counter() - start
    # A kernel flushes print output in chunks that depend on timing; one stream per cell keeps the
    # saved file the same from run to run (nbconvert's own preprocessor).
    from nbconvert.preprocessors import CoalesceStreamsPreprocessor
    nb, _ = CoalesceStreamsPreprocessor().preprocess(nb, {})
    problems = paths_in_outputs(nb)
    if problems:
        raise TutorialError(f"{path.name} was not saved: its outputs must not depend on this machine.\n  "
                            + "\n  ".join(problems) + "\nPrint a basename or a path relative to the repository.")
    nbformat.validate(nb)
    write_text_atomic(path, nbformat.writes(nb) + "\n")
    return seconds


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m minibort.tutorials",
        description="Re-execute the tutorial notebooks (nbclient) and save their outputs in place. "
                    f"Needs the tutorials extra: {INSTALL_HINT}.")
    action = p.add_mutually_exclusive_group(required=True)
    action.add_argument("--execute", nargs="*", metavar="NAME",
                        help="execute these notebooks (02_forward, 02_forward.ipynb or 02), or all of them")
    action.add_argument("--list", action="store_true", help="list the notebooks in reading order")
    p.add_argument("--dir", type=Path, default=None,
                   help="the tutorials folder (default: tutorials/ beside the minibort package)")
    p.add_argument("--timeout", type=int, default=600, help="seconds one cell may run (default 600)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    folder = args.dir or default_dir()
    try:
        if not folder.is_dir():
            raise TutorialError(f"{folder} is not a folder. The notebooks live in the repository, not in an "
                                f"installed wheel: clone it, {INSTALL_HINT}, or pass --dir")
        if args.list:
            for path in find_notebooks(folder):
                print(path.name)
            return 0
        paths = resolve(args.execute, folder)
        _import_extra()
        total = 0.0
        for path in paths:
            print(f"{path.name}: executing ...", flush=True)
            seconds = execute(path, args.timeout)
            total += seconds
            print(f"{path.name}: executed in {seconds:.1f} s, saved", flush=True)
        if len(paths) > 1:
            print(f"{len(paths)} notebooks in {total:.1f} s")
        return 0
    except TutorialError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("error: interrupted; the notebook being executed was left as it was", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
