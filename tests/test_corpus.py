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
    """The standard-library corpus, built once; also notes which modules the build imported."""
    out = tmp_path_factory.mktemp("corpus")
    before = set(sys.modules)
    rec = C.build(str(out), docs=None)
    return out, rec, set(sys.modules) - before


def _shipped_record() -> dict | None:
    import minibort.weights
    path = os.path.join(minibort.weights.__path__[0], "bort-tiny", "training.json")
    if not os.path.exists(path):
        return None
    with open(path, encoding="utf-8") as f:
        return json.load(f)["corpus"]


def test_same_checksum_as_the_shipped_model_was_trained_on(built, tmp_path):
    """Built now and built when bort-tiny was trained: the same checksum (same Python version)."""
    _, rec, _ = built
    shipped = _shipped_record()
    if shipped is None:
        pytest.skip("weights/bort-tiny has no training.json yet")
    if shipped["python_version"] != rec["python_version"]:
        pytest.skip(f"bort-tiny's corpus was built by Python {shipped['python_version']}")
    if "python-docs" in shipped.get("sources", {}):
        if C.docs_folder() is None:
            pytest.skip(f"bort-tiny's corpus includes Python's documentation ({C.docs_package()} is not installed)")
        rec = C.build(str(tmp_path))
        assert rec["sources"]["python-docs"]["sources_sha256"] == shipped["sources"]["python-docs"]["sources_sha256"]
    print(f"corpus sha256 {rec['sha256']} (Python {rec['python_version']})")
    assert rec["sha256"] == shipped["sha256"]


def test_without_the_documentation_the_corpus_is_the_first_bort_tinys(built):
    """The standard-library corpus alone is byte for byte the one the first bort-tiny was trained on
    (weights/bort-tiny/training.json at commit 873a6d6), so its held-out documents stay held out."""
    _, rec, _ = built
    if rec["python_version"] != "3.11.7":
        pytest.skip("the first bort-tiny's corpus was built by Python 3.11.7")
    assert rec["sha256"] == "e4c5fce19559db38780d221457509274e8ec0a38ce00c974fb3e0d9a7d5d6d42"
    assert rec["files"]["heldout.txt"]["documents"] == 23


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
    stdlib, docs = _small_stdlib(tmp_path), _fake_docs(tmp_path / "docs")
    sums = []
    for seed in ("1", "2"):
        out = tmp_path / f"out{seed}"
        r = subprocess.run([sys.executable, "-m", "minibort.corpus", "--out", str(out), "--stdlib", stdlib,
                            "--docs", docs],
                           check=False, capture_output=True, text=True, timeout=120,
                           env={**os.environ, "PYTHONHASHSEED": seed})
        assert r.returncode == 0, r.stderr
        rec = json.loads((out / "corpus.json").read_text())
        assert rec["sha256"] in r.stdout and f"Python {sys.version.split()[0]}" in r.stdout
        sums.append(rec["sha256"])
        text = (out / "train.txt").read_text() + (out / "heldout.txt").read_text()
        assert "Must be skipped" not in text and "Command-line parsing library" in text
        assert "The break statement leaves a loop early." in text
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


# ------------------------------------------------------------------------------------ Python's documentation

SAMPLE_RST = """\
:tocdepth: 2

.. _tut-loops:

****************
Loops in Python
****************

.. index::
   single: loop; break

.. module:: loops
   :synopsis: Loop keywords.

The :keyword:`break` statement, like in C, breaks out of the innermost enclosing
:keyword:`for` or :keyword:`while` loop.  See :func:`len`, :meth:`~list.append`,
:ref:`the tutorial <tut-intro>`, :pep:`8` and ``x = 1``.  It is *fast* and **safe**.
Read `the docs <https://docs.python.org>`_ too [#]_.

Example::

   for n in range(3):
       break

A list:

* first item,
  continued
* second item

Term
   Its definition.

>>> print(1)
1

+-----+-----+
| a   | b   |
+-----+-----+

=====  =====
col 1  col 2
=====  =====
x      y
=====  =====

.. function:: spam(x)
              spam(x, y)
   :noindex:

   Return spam.

   .. versionadded:: 3.2

   .. versionchanged:: 3.3
      Now faster.

.. note::

   Be careful.

.. code-block:: python

   print("dropped")

.. |x| replace:: ``X()``

Use |x| here.

.. [#] A footnote.
"""


def test_rst_markup_is_stripped_by_the_stated_rules():
    paragraphs, modules = C.rst_to_paragraphs(SAMPLE_RST)
    assert paragraphs == [
        "Loops in Python",
        ("The break statement, like in C, breaks out of the innermost enclosing for or while loop. See len(), "
         "append(), the tutorial, PEP 8 and x = 1. It is fast and safe. Read the docs too."),
        "Example:",                     # the literal block after "::" is dropped
        "A list:", "first item, continued", "second item",
        "Term", "Its definition.",      # doctest block, grid and simple tables dropped
        "spam(x)", "spam(x, y)", "Return spam.", "New in version 3.2.", "Changed in version 3.3: Now faster.",
        "Be careful.",                  # code-block dropped
        "Use X() here.",                # substitution replaced, footnote dropped
    ]
    assert modules == ["loops"]


def test_literal_block_markers_render_as_sphinx_does():
    assert C.rst_to_paragraphs("Like this::\n\n   x\n\nOr this ::\n\n   y\n\n::\n\n   z\n")[0] == \
        ["Like this:", "Or this"]


def _fake_docs(root) -> str:
    """A stand-in html/_sources folder: a held-out page, its copy, a page overlapping it, others."""
    (root / "library").mkdir(parents=True)
    (root / "tutorial").mkdir()
    (root / "c-api").mkdir()                                   # not one of DOCS_SECTIONS
    held = "Built-ins\n=========\n\nThe :func:`len` function returns the number of items of a container such as a list or a dict.\n"
    (root / "library" / "functions.rst.txt").write_text(held)   # "doc:library/functions" hashes held out
    (root / "library" / "functions2.rst.txt").write_text(held)  # the same text under another name
    (root / "library" / "doctest.rst.txt").write_text(
        ".. module:: doctest\n\nDoctest runs the examples in docstrings.\n")
    (root / "tutorial" / "loops.rst.txt").write_text(
        "Loops\n=====\n\nThe ``len`` function returns the number of items of a container such as a list, as said.\n\n"
        "The :keyword:`break` statement leaves a loop early.\n")
    (root / "c-api" / "intro.rst.txt").write_text("C API text.\n")
    (root / "glossary.rst.txt").write_text("Glossary\n========\n\nA term of art.\n")
    return str(root)


def test_documentation_split_keeps_held_out_text_out_of_training(tmp_path):
    assert C.is_heldout("doc:library/functions") and C.is_heldout("module:doctest")
    assert not any(C.is_heldout(n) for n in ("doc:library/functions2", "doc:library/doctest",
                                              "doc:tutorial/loops", "doc:glossary", "module:argparse"))
    stdlib = [("module:argparse", ["Command-line parsing library."]), ("module:doctest", ["Doctests."])]
    docs = C.gather_docs(_fake_docs(tmp_path))
    assert [n for n, _, _ in docs] == ["doc:glossary", "doc:library/doctest", "doc:library/functions",
                                       "doc:library/functions2", "doc:tutorial/loops"]
    train, held, excluded = C.split_documents(stdlib, docs)
    assert [n for n, _ in held] == ["doc:library/doctest", "doc:library/functions", "module:doctest"]
    assert excluded == {"heldout_by_module": ["doc:library/doctest"],
                        "same_text_as_heldout": ["doc:library/functions2"], "paragraphs_overlapping_heldout": 1}
    assert train == [("doc:glossary", ["Glossary", "A term of art."]),
                     ("doc:tutorial/loops", ["Loops", "The break statement leaves a loop early."]),
                     ("module:argparse", ["Command-line parsing library."])]


def test_build_with_documentation_records_its_source(tmp_path):
    docs = _fake_docs(tmp_path / "docs")
    stdlib = _small_stdlib(tmp_path)
    rec = C.build(str(tmp_path / "a"), stdlib, docs=docs)
    again = C.build(str(tmp_path / "b"), stdlib, docs=docs)
    assert rec["sha256"] == again["sha256"]
    info = rec["sources"]["python-docs"]
    assert info["files"] == 5 and info["documents"] == 5 and info["package"] == C.docs_package()
    assert "The break statement leaves a loop early." in (tmp_path / "a" / "train.txt").read_text()
    assert "doc:library/functions" in rec["heldout_documents"]
    assert rec["sha256"] != C.build(str(tmp_path / "c"), stdlib, docs=None)["sha256"]


def test_without_the_package_it_says_how_to_get_it_and_falls_back(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(C, "docs_folder", lambda: None)
    stdlib = _small_stdlib(tmp_path)
    rec = C.build(str(tmp_path / "a"), stdlib)
    assert f"apt-get install {C.docs_package()}" in capsys.readouterr().err
    assert list(rec["sources"]) == ["stdlib"]
    assert rec["sha256"] == C.build(str(tmp_path / "b"), stdlib, docs=None)["sha256"]


@pytest.mark.parametrize("argv, message", [
    (["--heldout-fraction", "2"], "not between 0 and 1"),
    (["--heldout-fraction", "0"], "not between 0 and 1"),
    (["--heldout-fraction", "half"], "not a number"),
])
def test_command_line_refuses_a_fraction_outside_0_1(tmp_path, capsys, argv, message):
    with pytest.raises(SystemExit) as e:
        C.main(["--out", str(tmp_path / "out"), *argv])
    assert e.value.code == 2 and message in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_command_line_names_a_missing_docs_folder(tmp_path, capsys):
    assert C.main(["--out", str(tmp_path / "out"), "--docs", str(tmp_path / "nowhere")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "apt-get install" in err and "Traceback" not in err


def test_repeat_weights_training_documents_and_never_the_held_out(tmp_path, capsys):
    docs = _fake_docs(tmp_path / "docs")
    stdlib = _small_stdlib(tmp_path)
    plain = C.build(str(tmp_path / "a"), stdlib, docs=docs)
    rec = C.build(str(tmp_path / "b"), stdlib, docs=docs, repeat={"doc:tutorial/": 3, "doc:glossary": 2})
    assert rec["repeat"] == {"doc:tutorial/": {"times": 3, "documents": 1},
                             "doc:glossary": {"times": 2, "documents": 1}}
    assert "repeat" not in plain
    train = C.read_split(str(tmp_path / "b" / "train.txt"))
    assert [d[0] for d in train].count("Loops") == 3 and [d[0] for d in train].count("Glossary") == 2
    assert rec["files"]["train.txt"]["documents"] == plain["files"]["train.txt"]["documents"] + 3
    assert rec["files"]["heldout.txt"] == plain["files"]["heldout.txt"]
    assert rec["sha256"] != plain["sha256"]
    with pytest.raises(ValueError, match="doc:tutorail/ matches no training document"):
        C.build(str(tmp_path / "c"), stdlib, docs=docs, repeat={"doc:tutorail/": 2})
    assert not (tmp_path / "c").exists()
    assert C.main(["--out", str(tmp_path / "d"), "--docs", docs, "--stdlib", stdlib,
                   "--repeat", "doc:tutorial/=3", "--repeat", "doc:glossary=2"]) == 0
    assert "repeated 3x: 1 documents named doc:tutorial/*" in capsys.readouterr().out
    assert (tmp_path / "d" / "train.txt").read_bytes() == (tmp_path / "b" / "train.txt").read_bytes()
    for bad in ("doc:tutorial/", "doc:tutorial/=0", "=3", "doc:tutorial/=x"):
        with pytest.raises(SystemExit) as e:
            C.main(["--out", str(tmp_path / "e"), "--repeat", bad])
        assert e.value.code == 2
    assert "is not PREFIX=N" in capsys.readouterr().err
