"""The tutorials are checked, not trusted.

Every tutorials/NN_*.ipynb (found by glob, so a new notebook is checked without anyone listing it):
- is stored executed, in order, with no error output, no path of this machine, small plots, a
  "Check yourself" section with answers, and relative links to the code it explains (plain JSON,
  no Jupyter needed);
- runs again under nbval (`pytest --nbval`), Jupyter's own checker, and every fresh output equals the
  saved one after the substitutions in tutorials/nbval_sanitize.cfg: a notebook that raises, or whose
  saved outputs went stale, fails here. Those tests need the `tutorials` extra and skip without it.
`python -m minibort.tutorials` is tested on small throw-away notebooks.
"""

from __future__ import annotations

import base64
import importlib.util
import json
import platform
import re
import subprocess
import sys
from pathlib import Path

import pytest

from minibort import tutorials

ROOT = Path(__file__).resolve().parents[1]
TUTORIALS = ROOT / "tutorials"
NOTEBOOKS = tutorials.find_notebooks(TUTORIALS)
SANITIZE = TUTORIALS / "nbval_sanitize.cfg"
SERIES = ("01_tokenizer", "02_forward", "03_backward", "04_checkpoints", "05_pretraining")
GENERIC_PATHS = ["/home/", "/Users/", "/work/", "/tmp/", "site-packages", "C:\\"]
MAX_PNG_BYTES = 120_000
MAX_FOLDER_BYTES = 5_000_000

MISSING = [m for m in (*tutorials.EXTRA_MODULES, "nbval") if importlib.util.find_spec(m) is None]
needs_extra = pytest.mark.skipif(
    bool(MISSING), reason=f"the tutorials extra is not installed (no {', '.join(MISSING)}): "
                          f"{tutorials.INSTALL_HINT}")


def load(path: Path) -> dict:
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def ids(paths):
    return [p.stem for p in paths]


def test_the_series_is_there():
    stems = [p.stem for p in NOTEBOOKS]
    missing = [s for s in SERIES if s not in stems]
    assert not missing, f"tutorials/ lacks {missing}; found {stems}"


# ------------------------------------------------------------------ the saved notebooks (no Jupyter)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=ids(NOTEBOOKS))
def test_saved_executed_in_order(path):
    nb = load(path)
    assert nb["nbformat"] == 4 and nb["metadata"]["kernelspec"]["name"] == tutorials.KERNEL
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    assert code, f"{path.name} has no code cells"
    counts = [c["execution_count"] for c in code]
    assert counts == list(range(1, len(code) + 1)), (
        f"{path.name} is not saved executed top to bottom (execution counts {counts}): "
        "run python -m minibort.tutorials --execute " + path.stem)
    assert any(c["outputs"] for c in code), f"{path.name} has no outputs"
    errors = [k for k, c in enumerate(code, 1) if any(o["output_type"] == "error" for o in c["outputs"])]
    assert not errors, f"{path.name}: code cells {errors} were saved with an error"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=ids(NOTEBOOKS))
def test_outputs_show_no_machine_path(path):
    problems = tutorials.paths_in_outputs(load(path), tutorials.machine_paths() + GENERIC_PATHS)
    assert not problems, f"{path.name}:\n" + "\n".join(problems)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=ids(NOTEBOOKS))
def test_plots_are_small_pngs(path):
    for k, cell in enumerate(c for c in load(path)["cells"] if c["cell_type"] == "code"):
        for out in cell["outputs"]:
            png = out.get("data", {}).get("image/png")
            if png:
                size = len(base64.b64decode("".join(png)))
                assert size <= MAX_PNG_BYTES, f"{path.name} code cell {k + 1}: a {size:,}-byte PNG"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=ids(NOTEBOOKS))
def test_links_code_and_ends_with_exercises_and_answers(path):
    markdown = ["".join(c["source"]) for c in load(path)["cells"] if c["cell_type"] == "markdown"]
    assert markdown and markdown[0].startswith("# "), f"{path.name} must open with a markdown title"
    text = "\n".join(markdown)
    assert re.search(r"\]\(\.\./(minibort|tests)/[\w/]+\.py", text), \
        f"{path.name} links no code with a relative link such as (../minibort/layers.py)"
    assert not re.search(r"\]\((/|file:)", text), f"{path.name} has an absolute link"
    tail = text[text.find("## Check yourself"):] if "## Check yourself" in text else ""
    assert tail, f"{path.name} has no '## Check yourself' section"
    assert tail.count("<details>") >= 2, f"{path.name}: 'Check yourself' needs answers in <details> blocks"


def test_tutorials_folder_stays_small():
    size = sum(p.stat().st_size for p in TUTORIALS.rglob("*") if p.is_file())
    assert size <= MAX_FOLDER_BYTES, f"tutorials/ holds {size:,} bytes"


# ------------------------------------------------------------------ nbval: run again, compare


@needs_extra
@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=ids(NOTEBOOKS))
def test_notebook_reruns_to_its_saved_outputs(path):
    saved_python = load(path)["metadata"].get("language_info", {}).get("version", "")
    depends = load(path)["metadata"].get("minibort", {}).get("outputs_depend_on")
    if depends == "python_version" and saved_python != platform.python_version():
        pytest.skip(f"{path.name} prints numbers from this Python's standard library; its outputs were saved "
                    f"with Python {saved_python}, this is {platform.python_version()}")
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--nbval", "--nbval-current-env",
           "--nbval-sanitize-with", str(SANITIZE), "--nbval-cell-timeout", "300", str(path)]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=900, check=False)
    assert proc.returncode == 0, (
        f"{path.name}: nbval failed (a cell raised, or its output no longer matches the saved one). If "
        f"the change is intended, run `python -m minibort.tutorials --execute {path.stem}` and commit.\n"
        + proc.stdout[-6000:] + proc.stderr[-2000:])


# ------------------------------------------------------------------ python -m minibort.tutorials


def run_cli(*args: str, prelude: str = "") -> subprocess.CompletedProcess:
    code = f"{prelude}\nimport sys\nfrom minibort.tutorials import main\nsys.exit(main(sys.argv[1:]))"
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=300,
                          check=False)


def write_notebook(folder: Path, name: str, *sources: str) -> Path:
    cells = [{"cell_type": "code", "execution_count": None, "id": f"c{k}", "metadata": {}, "outputs": [],
              "source": s} for k, s in enumerate(sources)]
    nb = {"cells": cells, "metadata": {"kernelspec": {"display_name": "Python 3", "language": "python",
                                                      "name": "python3"}},
          "nbformat": 4, "nbformat_minor": 5}
    path = folder / name
    path.write_text(json.dumps(nb), encoding="utf-8")
    return path


def test_cli_help_and_list():
    proc = run_cli("--help")
    assert proc.returncode == 0 and "--execute" in proc.stdout and "tutorials" in proc.stdout
    proc = run_cli("--list")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == [p.name for p in NOTEBOOKS]


def test_cli_unknown_notebook_names_the_available_ones(tmp_path):
    write_notebook(tmp_path, "01_one.ipynb", "1")
    proc = run_cli("--execute", "99_nothing", "--dir", str(tmp_path))
    assert proc.returncode == 1 and proc.stderr.startswith("error: ") and "01_one" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_cli_without_the_extra_says_how_to_install_it(tmp_path):
    write_notebook(tmp_path, "01_one.ipynb", "1")
    proc = run_cli("--execute", "--dir", str(tmp_path), prelude="import sys; sys.modules['nbclient'] = None")
    assert proc.returncode == 1 and proc.stderr.startswith("error: "), proc.stderr
    assert tutorials.INSTALL_HINT in proc.stderr and "Traceback" not in proc.stderr


@needs_extra
def test_cli_executes_and_saves_outputs(tmp_path):
    chunked = "import time\nprint('a', flush=True)\ntime.sleep(0.3)\nprint('b')"   # two flushes
    path = write_notebook(tmp_path, "01_one.ipynb", "x = 6 * 7", "print(x)", chunked)
    proc = run_cli("--execute", "01", "--dir", str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    code = [c for c in load(path)["cells"] if c["cell_type"] == "code"]
    assert [c["execution_count"] for c in code] == [1, 2, 3]
    assert "".join(code[1]["outputs"][0]["text"]) == "42\n"
    assert [("".join(o["text"])) for o in code[2]["outputs"]] == ["a\nb\n"], "streams not coalesced"
    assert "executed in" in proc.stdout


@needs_extra
def test_cli_refuses_to_save_a_failing_notebook_or_a_machine_path(tmp_path):
    failing = write_notebook(tmp_path, "01_fails.ipynb", "print('before')", "1 / 0")
    leaking = write_notebook(tmp_path, "02_leaks.ipynb", "import os\nprint(os.getcwd())")
    before = failing.read_bytes(), leaking.read_bytes()
    proc = run_cli("--execute", "01", "--dir", str(tmp_path))
    assert proc.returncode == 1 and "ZeroDivisionError" in proc.stderr and "not saved" in proc.stderr
    proc = run_cli("--execute", "02_leaks", "--dir", str(tmp_path))
    assert proc.returncode == 1 and "path of this machine" in proc.stderr, proc.stderr
    assert (failing.read_bytes(), leaking.read_bytes()) == before
