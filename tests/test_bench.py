"""Smoke tests of the benchmark modules: --help works, a tiny --json run prints one JSON document that
bench.report turns into a table, bad options fail with a message. Speed is never asserted here."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TINY = {
    "forward": ["--size", "tiny", "--repeats", "1", "--no-torch"],
    "training": ["--case", "tiny", "--batch", "2x16", "--repeats", "1", "--no-memory", "--no-profile",
                 "--no-torch"],
    "loading": ["--size", "tiny", "--repeat", "1"],
}


def run(module: str, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
           "MINIBORT_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", f"minibort.bench.{module}", *args], capture_output=True,
                          text=True, env=env, cwd=ROOT, timeout=300, check=False)


@pytest.mark.parametrize("module", [*TINY, "report"])
def test_help(module):
    out = run(module, "--help")
    assert out.returncode == 0, out.stderr
    assert "usage:" in out.stdout
    if module != "report":
        assert "--json" in out.stdout


@pytest.mark.parametrize("module", TINY)
def test_tiny_json_run_parses_and_makes_a_table(module, tmp_path):
    out = run(module, *TINY[module], "--json")
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)                                    # stdout holds the JSON and nothing else
    assert doc["benchmark"] == module
    assert doc["machine"]["date"] and doc["machine"]["numpy"]
    assert doc["rows"], "no measurement in the document"
    for row in doc["rows"]:
        values = [v for k, v in row.items() if k.endswith(("ms", "_s")) and v is not None]
        assert values and all(v > 0 for v in values), row
    assert out.stderr.strip(), "the human-readable lines go to stderr with --json"
    path = tmp_path / f"{module}.json"
    path.write_text(out.stdout)
    table = run("report", str(path))
    assert table.returncode == 0, table.stderr
    assert table.stdout.count("\n|") >= 3 and doc["machine"]["date"] in table.stdout


def test_report_refuses_a_file_that_is_not_benchmark_output(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("[1, 2]")
    out = run("report", str(bad))
    assert out.returncode == 1
    assert out.stderr.startswith("error: ") and "--json" in out.stderr and "Traceback" not in out.stderr


def test_bad_batch_is_an_argument_error():
    out = run("training", "--batch", "16by128", "--no-torch")
    assert out.returncode == 2 and "BxT" in out.stderr and "Traceback" not in out.stderr


def test_training_without_torch_shows_no_fake_zeros():
    """--no-torch leaves PyTorch's cells empty ("-") instead of printing 0.000 s and 0.00x."""
    out = run("training", *TINY["training"])
    assert out.returncode == 0, out.stderr
    table = [line for line in (out.stdout + out.stderr).splitlines() if line.startswith("| bort-tiny")]
    assert table and "0.000" not in table[-1] and table[-1].rstrip().endswith("| - | - | - | - |"), table


def test_agora_experiment_miniature_writes_its_files(tmp_path):
    """A miniature of Agora's experiment (one seed, tiny splits, one condition) runs end to end and
    writes results.json and table.md whole, with no temporary files left beside them."""
    out = run("agora", "--seeds", "1", "--out", str(tmp_path), "--train-size", "8", "--dev-size", "10",
              "--test-size", "10", "--epochs", "1", "--no-speedup", "--conditions", "no_generation")
    assert out.returncode == 0, out.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results.json", "table.md"]
    doc = json.loads((tmp_path / "results.json").read_text())
    assert len(doc["rows"]) == 1 and doc["wall_time"] > 0
    assert "| seed 0 |" in (tmp_path / "table.md").read_text()


def test_finetune_speed_json_makes_a_table(tmp_path):
    """bench.finetune speed (minibort alone here) writes the shared JSON form, which bench.report
    turns into a table headed by the thread counts the timed child really used."""
    path = tmp_path / "finetune.json"
    out = run("finetune", "--sizes", "tiny", "--steps", "1", "--no-torch", "--json", str(path))
    assert out.returncode == 0, out.stderr
    doc = json.loads(path.read_text())
    assert doc["benchmark"] == "finetune" and doc["machine"]["minibort_threads"] == 1
    (row,) = doc["rows"]
    assert row["case"] == "bort-tiny 16x128" and row["minibort_s"] > 0 and "ratio_sdpa" not in row
    table = run("report", str(path))
    assert table.returncode == 0, table.stderr
    assert "| bort-tiny 16x128 |" in table.stdout and "minibort threads 1" in table.stdout
