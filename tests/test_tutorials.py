"""The tutorials run: each notebook's code cells, joined in order, are executed in a fresh Python
process (working directory `tutorials/`, 120 s limit), which must exit with status 0.

Jupyter is not needed: a notebook is JSON. Each notebook runs twice: as the machine has it, and
"bare", with matplotlib hidden (`import matplotlib` raises ImportError) and the shipped bort-tiny
hidden (`minibort.weights.__path__` pointed at an empty folder). Bare, notebook 1 trains its own
vocabulary and notebook 2 skips its fill-mask part and fine-tunes a random tiny model, each saying so.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

TUTORIALS = Path(__file__).resolve().parents[1] / "tutorials"
NOTEBOOKS = ("01_bort_from_the_inside.ipynb", "02_fill_mask_and_finetune.ipynb")
TIMEOUT = 120          # seconds per notebook run

# Executed by the child process: argv = [notebook path, "as-is" | "bare", empty folder].
RUNNER = r"""
import json, sys

path, mode = sys.argv[1], sys.argv[2]
if mode == "bare":
    sys.modules["matplotlib"] = None                  # any `import matplotlib...` raises ImportError
    import minibort.weights
    minibort.weights.__path__[:] = [sys.argv[3]]      # an empty folder: no bort-tiny
with open(path, encoding="utf-8") as f:
    nb = json.load(f)
code = "\n\n".join("".join(cell["source"]) for cell in nb["cells"] if cell["cell_type"] == "code")
exec(compile(code, path, "exec"), {"__name__": "__main__"})
"""

# What each notebook must print when bort-tiny and matplotlib are hidden.
BARE_MESSAGES = {
    "01_bort_from_the_inside.ipynb": ["bort-tiny is not installed", "matplotlib is not installed"],
    "02_fill_mask_and_finetune.ipynb": ["model.safetensors is absent", "matplotlib is not installed"],
}


def load(name: str) -> dict:
    with open(TUTORIALS / name, encoding="utf-8") as f:
        return json.load(f)


def run_notebook(name: str, mode: str, empty_dir: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, MPLBACKEND="Agg")          # a plot, if matplotlib is there, needs no display
    return subprocess.run([sys.executable, "-c", RUNNER, str(TUTORIALS / name), mode, str(empty_dir)],
                          check=False, cwd=TUTORIALS, env=env, capture_output=True, text=True,
                          timeout=TIMEOUT)


def explain_failure(name: str, mode: str, proc: subprocess.CompletedProcess) -> str:
    return (f"{name} ({mode}) exited with status {proc.returncode}\n"
            f"--- stdout (last 3000 characters) ---\n{proc.stdout[-3000:]}\n"
            f"--- stderr (last 5000 characters) ---\n{proc.stderr[-5000:]}")


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_is_plain_nbformat4_without_outputs(name):
    nb = load(name)
    assert nb["nbformat"] == 4
    assert nb["metadata"]["kernelspec"]["name"] == "python3"
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    assert code, f"{name} has no code cells"
    for k, cell in enumerate(code):
        assert cell["outputs"] == [], f"{name}: code cell {k} has stored outputs; clear them"
        assert cell["execution_count"] is None, f"{name}: code cell {k} has an execution count"
        for line in "".join(cell["source"]).splitlines():
            # The test runs the cells as plain Python, so IPython magics and shell escapes cannot work.
            assert not line.lstrip().startswith(("%", "!")), f"{name}: code cell {k} uses IPython syntax: {line!r}"


@pytest.mark.parametrize("mode", ["as-is", "bare"])
@pytest.mark.parametrize("name", [NOTEBOOKS[0], pytest.param(NOTEBOOKS[1], marks=pytest.mark.slow)])
def test_notebook_runs(name, mode, tmp_path):
    proc = run_notebook(name, mode, tmp_path)
    assert proc.returncode == 0, explain_failure(name, mode, proc)
    assert "done in" in proc.stdout, explain_failure(name, mode, proc)      # the last cell ran
    if mode == "bare":
        for message in BARE_MESSAGES[name]:
            assert message in proc.stdout, f"{name} (bare) did not print {message!r}\n{proc.stdout[-3000:]}"
