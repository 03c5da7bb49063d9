"""minibort.corpus: deterministic, split by document, built from parsed (never imported) stdlib sources."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys

import pytest

from minibort import corpus as C


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """The full corpus, built once; also notes which modules the build imported."""
    out = tmp_path_factory.mktemp("corpus")
    before = set(sys.modules)
    rec = C.build(str(out))
    return out, rec, set(sys.modules) - before


def _shipped_record() -> dict | None:
    import minibort.weights
    path = os.path.join(minibort.weights.__path__[0], "bort-tiny", "training.json")
    if not os.path.exists(path):
        return None
    with open(path, encoding="utf-8") as f:
        return json.load(f)["corpus"]


def test_same_checksum_as_the_shipped_model_was_trained_on(built):
    """Built now and built when bort-tiny was trained: the same checksum (same Python version)."""
    _, rec, _ = built
    shipped = _shipped_record()
    if shipped is None:
        pytest.skip("weights/bort-tiny has no training.json yet")
    if shipped["python_version"] != rec["python_version"]:
        pytest.skip(f"bort-tiny's corpus was built by Python {shipped['python_version']}")
    print(f"corpus sha256 {rec['sha256']} (Python {rec['python_version']})")
    assert rec["sha256"] == shipped["sha256"]


def _small_stdlib(root) -> str:
    """A stand-in stdlib folder: two modules and a package with a test subpackage, copied from the real one."""
    import shutil
    import sysconfig
    real = sysconfig.get_paths()["stdlib"]
    for name in ("argparse.py", "textwrap.py"):
        shutil.copy(os.path.join(real, name), root / name)
    shutil.copytree(os.path.join(real, "json"), root / "json", ignore=shutil.ignore_patterns("__pycache__"))
    (root / "json" / "tests").mkdir(exist_ok=True)
    (root / "json" / "tests" / "__init__.py").write_text('"""Must be skipped."""\n')
    return str(root)


def test_command_line_gives_the_same_checksum_twice(tmp_path):
    """Two fresh processes with different hash seeds (set and dict order must not matter)."""
    stdlib = _small_stdlib(tmp_path)
    sums = []
    for seed in ("1", "2"):
        out = tmp_path / f"out{seed}"
        r = subprocess.run([sys.executable, "-m", "minibort.corpus", "--out", str(out), "--stdlib", stdlib],
                           check=False, capture_output=True, text=True, timeout=120,
                           env={**os.environ, "PYTHONHASHSEED": seed})
        assert r.returncode == 0, r.stderr
        rec = json.loads((out / "corpus.json").read_text())
        assert rec["sha256"] in r.stdout and f"Python {sys.version.split()[0]}" in r.stdout
        sums.append(rec["sha256"])
        text = (out / "train.txt").read_text() + (out / "heldout.txt").read_text()
        assert "Must be skipped" not in text and "Command-line parsing library" in text
    assert sums[0] == sums[1]


def test_record_describes_the_files(built):
    out, rec, _ = built
    assert rec["python_version"] == sys.version.split()[0]
    h = hashlib.sha256()
    for name in ("train.txt", "heldout.txt"):
        data = (out / name).read_bytes()
        assert rec["files"][name]["sha256"] == hashlib.sha256(data).hexdigest()
        assert rec["files"][name]["bytes"] == len(data)
        h.update(name.encode() + b"\0" + data)
    assert rec["sha256"] == h.hexdigest()
    assert rec["files"]["train.txt"]["bytes"] > 500_000           # the stdlib has plenty to say


def test_split_is_by_document(built):
    out, rec, _ = built
    train, held = C.read_split(str(out / "train.txt")), C.read_split(str(out / "heldout.txt"))
    assert len(held) == len(rec["heldout_documents"]) == rec["files"]["heldout.txt"]["documents"]
    assert all(C.is_heldout(name) for name in rec["heldout_documents"])
    share = len(held) / (len(held) + len(train))
    assert 0.01 < share < 0.15, share
    # no paragraph of substance appears on both sides
    train_paras = {p for d in train for p in d}
    shared = [p for d in held for p in d if p in train_paras and len(p) > 200]
    assert len(shared) < 0.05 * sum(len(d) for d in held), shared[:3]


def test_whitespace_is_normalised(built):
    out, _, _ = built
    text = (out / "train.txt").read_text(encoding="utf-8")
    assert "\t" not in text and "  " not in text and "\n\n\n" not in text
    assert C.normalise("  a\n  b\t c\n\n\n d ") == ["a b c", "d"]


def test_modules_are_parsed_not_imported(built):
    _, _, imported = built
    names = [n for n, _ in C.stdlib_modules()]
    assert names == sorted(names)
    assert {"argparse", "json.decoder", "collections", "email.utils"} <= set(names)
    for skipped in ("test", "idlelib", "tkinter", "turtledemo", "ensurepip", "lib2to3"):
        assert not any(n == skipped or n.startswith(skipped + ".") for n in names), skipped
    assert not any(".test" in n or n.split(".")[-1].startswith("test_") for n in names)
    # building read ~600 modules' sources but imported none of them (pydoc_data.topics is data, and
    # sysconfig.get_paths() loads its own _sysconfigdata module)
    imported = {n for n in imported if not n.startswith("_sysconfigdata")}
    assert imported <= {"pydoc_data", "pydoc_data.topics"}, sorted(imported)[:10]


def test_docstrings_come_in_source_order():
    src = '"""Module."""\nclass A:\n    """Class A."""\n    def f(self):\n        """Method f."""\n' \
          'def g():\n    """Function g."""\n'
    assert C.module_docstrings(src) == ["Module.", "Class A.", "Method f.", "Function g."]
