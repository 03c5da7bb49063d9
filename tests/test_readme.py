"""README.md is run, not trusted: every Python block executes as printed, the shown `generate` output
is what the shipped model prints, and every command it names answers `--help`.

Blocks that use the hub id `amazon/bort` run against a mirror served on 127.0.0.1 that holds
amazon/bort's tokenizer files (from ../shared/hub-mirror) and a small Bort-shaped checkpoint this
test writes (the real weights cannot be downloaded here); they skip where ../shared is absent.
"""

from __future__ import annotations

import functools
import http.server
import json
import os
import re
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")


def fenced_blocks(text: str) -> list[tuple[str, str]]:
    """(language, body) of each ``` fenced block, in order."""
    blocks, lang, body = [], None, []
    for line in text.splitlines():
        if line.startswith("```"):
            if lang is None:
                lang, body = line[3:].strip(), []
            else:
                blocks.append((lang, "\n".join(body) + "\n"))
                lang = None
        elif lang is not None:
            body.append(line)
    return blocks


PY_BLOCKS = [body for lang, body in fenced_blocks(README) if lang == "python"]
COMMANDS = ("generate", "download", "pretrain", "corpus", "finetune", "agora", "bench", "tutorials")


def run_python(code: str, cwd: Path, env: dict | None = None, timeout: float = 300):
    return subprocess.run([sys.executable, "-c", code], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, **(env or {})}, check=False)


@pytest.fixture(scope="module")
def bort_mirror(tmp_path_factory, mirror_dir):
    """A hub mirror on 127.0.0.1 whose amazon/bort holds the real tokenizer files and a small
    Bort-shaped model (4 layers, 8 heads, width 64, FFN 48, RoBERTa's 50265-token vocabulary)."""
    from minibort import BortConfig, BortForMaskedLM
    root = tmp_path_factory.mktemp("mirror")
    repo = root / "amazon" / "bort" / "resolve" / "main"
    repo.mkdir(parents=True)
    for f in ("vocab.json", "merges.txt"):
        shutil.copy(mirror_dir / f, repo / f)
    real = json.loads((mirror_dir / "config.json").read_text())
    config = BortConfig.from_dict({**real, "hidden_size": 64, "intermediate_size": 48})
    BortForMaskedLM(config, seed=0).save_pretrained(repo)
    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    handler = functools.partial(Quiet, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_readme_has_python_blocks():
    assert len(PY_BLOCKS) >= 2, "README.md should show minibort in Python"


@pytest.mark.parametrize("i", range(len(PY_BLOCKS)))
def test_readme_python_block_runs(i, tmp_path, request):
    code = PY_BLOCKS[i]
    if "from distributed import" in code:
        pytest.importorskip("distributed", reason="the cluster extra is not installed: pip install -e \".[cluster]\"")
    env = {"MINIBORT_CACHE": str(tmp_path / "cache")}
    if "amazon/bort" in code:
        env["HF_ENDPOINT"] = request.getfixturevalue("bort_mirror")
    r = run_python(code, tmp_path, env)
    print(r.stdout[-2000:])
    assert r.returncode == 0, f"README block {i} failed:\n{code}\n--- stderr:\n{r.stderr[-3000:]}"


def shown_generate_runs() -> list[tuple[str, str]]:
    """Each `$ python -m minibort.generate ...` in the README's console blocks, with the output shown."""
    runs = []
    for lang, block in fenced_blocks(README):
        if lang:
            continue
        for m in re.finditer(r"^\$ (python -m minibort\.generate .*)\n((?:(?!\$ ).*\n?)*)", block, re.MULTILINE):
            runs.append((m.group(1), m.group(2).rstrip("\n")))
    return runs


def test_readme_shows_generate_output():
    assert shown_generate_runs(), "README.md should show what `python -m minibort.generate` prints"


@pytest.mark.parametrize("command,shown", shown_generate_runs())
def test_readme_generate_output_is_real(command, shown, tmp_path):
    import shlex
    args = shlex.split(command)[3:]
    r = subprocess.run([sys.executable, "-m", "minibort.generate", *args], capture_output=True, text=True,
                       cwd=tmp_path, timeout=120, check=False)
    assert r.returncode == 0, r.stderr
    assert r.stdout.rstrip("\n") == shown, f"README shows:\n{shown}\n\nthe model prints:\n{r.stdout}"


@pytest.mark.parametrize("name", COMMANDS)
def test_every_command_answers_help(name, tmp_path):
    r = subprocess.run([sys.executable, "-m", f"minibort.{name}", "--help"], capture_output=True, text=True,
                       cwd=tmp_path, timeout=120, check=False)
    assert r.returncode == 0, f"python -m minibort.{name} --help failed:\n{r.stderr[-2000:]}"
    assert "usage:" in r.stdout
    assert "Traceback" not in r.stderr


def test_readme_opening_commands_are_the_ci_ones():
    first, second = next(body for lang, body in fenced_blocks(README) if lang == "bash").splitlines()[:2]
    assert first.startswith("pip install . && python -m minibort.generate ")
    assert second.startswith("pip install -e \".[test]\" && python -m pytest")
    assert "readme_line" in (ROOT / ".ci" / "run").read_text()        # CI extracts them from here


@pytest.mark.slow
def test_tests_ignore_the_callers_hub_settings(tmp_path):
    """The hub and download tests pass in a shell that exports HF_HUB_OFFLINE=1 and friends, as many
    transformers users' shells do: conftest clears them before every test."""
    hostile = {"HF_HUB_OFFLINE": "1", "HF_ENDPOINT": "http://127.0.0.1:1", "HF_TOKEN": "hf_user",
               "MINIBORT_CACHE": str(tmp_path / "users-cache"), "XDG_CACHE_HOME": str(tmp_path / "xdg"),
               "MINIBORT_HUB_TIMEOUT": "0.001"}
    r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                        "tests/test_hub.py", "tests/test_download.py"], cwd=ROOT, capture_output=True,
                       text=True, timeout=600, env={**os.environ, **hostile}, check=False)
    assert r.returncode == 0, r.stdout[-3000:]
