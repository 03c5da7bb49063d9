"""Labelled text for fine-tuning: GLUE task folders, your own CSV / TSV / JSONL files, and a small
binary task built from the standard library's documentation. Standard library only.

    Example(text, text_pair=None, label=None)     one labelled sentence (or sentence pair)
    Dataset(examples, labels, name)               examples + the label names in id order
    load_glue("sst2", "glue_data/SST-2", "dev")   any GLUE task, in its distribution's exact layout
    load_file("reviews.csv", text_column="review", label_column="stars")

A label is what the file says: a name such as "entailment" or "1" (a `str`), a float for regression
(STS-B), or None in a test file. `Dataset.labels` lists the names in id order (the model's `id2label`);
an `int` label in an Example is taken as an id into that list. Regression datasets have `labels == []`.

Every error names the file, the line and the fix. GLUE's TSV files are read with no quoting at all:
MRPC's and MNLI's sentences contain `"` characters that are data.

    python -m minibort.data docs-task OUT_DIR     # the stdlib-documentation task, in SST-2 layout
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import hashlib
import io
import json
import os
import re
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np


class DataError(ValueError):
    """A data file cannot be read as asked; the message names the file, the line and the fix."""


@dataclass(frozen=True)
class Example:
    """One example: a text, an optional second text (pair tasks), and its label (None if unlabelled)."""

    text: str
    text_pair: str | None = None
    label: str | int | float | None = None


@dataclass
class Dataset:
    """Examples and the label names in id order (`labels[i]` is id i; empty for regression)."""

    examples: list[Example]
    labels: list[str] = field(default_factory=list)
    name: str = ""

    def __len__(self) -> int:
        return len(self.examples)

    def __iter__(self) -> Iterator[Example]:
        return iter(self.examples)

    def __getitem__(self, i: int) -> Example:
        return self.examples[i]

    @property
    def is_regression(self) -> bool:
        return not self.labels

    @property
    def num_labels(self) -> int:
        """Outputs the model needs: the number of classes, or 1 for regression."""
        return len(self.labels) or 1

    @property
    def has_pairs(self) -> bool:
        return any(e.text_pair is not None for e in self.examples)

    @property
    def is_labelled(self) -> bool:
        return bool(self.examples) and all(e.label is not None for e in self.examples)

    def id2label(self) -> dict[int, str]:
        return dict(enumerate(self.labels))

    def label2id(self) -> dict[str, int]:
        return {name: i for i, name in enumerate(self.labels)}

    def label_id(self, label: str | float | None, where: str = "") -> int | float:
        """One label as the model sees it: a class id, or a float target for regression."""
        where = where or (self.name or "dataset")
        if label is None:
            raise DataError(f"{where}: the example has no label (a test file?); only labelled data can "
                            "be trained on or scored")
        if self.is_regression:
            try:
                return float(label)
            except (TypeError, ValueError):
                raise DataError(f"{where}: label {label!r} is not a number, but this dataset is a "
                                "regression (labels == []); give numbers, or list the class names") from None
        if isinstance(label, (bool, float)):
            raise DataError(f"{where}: label {label!r} is not a class name or id; classes are {self.labels}")
        if isinstance(label, int):
            if not 0 <= label < len(self.labels):
                raise DataError(f"{where}: label id {label} is outside [0, {len(self.labels)}); "
                                f"classes are {self.labels}")
            return label
        ids = self.label2id()
        if label not in ids:
            raise DataError(f"{where}: unknown label {label!r}; the classes are {self.labels}: fix the "
                            "label, or pass labels=[...] naming every class")
        return ids[label]

    def label_ids(self) -> np.ndarray:
        """(N,) int64 class ids, or float32 targets for regression."""
        dtype = np.float32 if self.is_regression else np.int64
        return np.array([self.label_id(e.label, f"{self.name or 'dataset'} example {i}")
                         for i, e in enumerate(self.examples)], dtype=dtype)

    def with_examples(self, new_examples: Sequence[Example]) -> Dataset:
        """A dataset with other examples and the same label names (and name)."""
        return Dataset(list(new_examples), list(self.labels), self.name)

    def label_counts(self) -> dict[str, int]:
        """How many examples carry each class (classification, labelled examples only)."""
        counts = {name: 0 for name in self.labels}
        for e in self.examples:
            if e.label is not None and not self.is_regression:
                counts[self.labels[int(self.label_id(e.label))]] += 1
        return counts


# ------------------------------------------------------------------------------------ reading rows


def _read_text(path: str) -> str:
    """The file as text (UTF-8, a byte-order mark allowed); an encoding error names its line."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        raise DataError(f"{path}: no such file; check the path (or --data / --train / --dev)") from None
    except IsADirectoryError:
        raise DataError(f"{path} is a folder; give a file (or use --task NAME --data {path})") from None
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = data[:e.start].count(b"\n") + 1
        raise DataError(f"{path}, line {line}: byte 0x{data[e.start]:02x} is not UTF-8; save the file as "
                        "UTF-8 (e.g. `iconv -f latin1 -t utf-8 in > out`)") from None


def _rows(path: str, delimiter: str, quoting: bool) -> list[tuple[int, list[str]]]:
    """(line number, fields) for each non-blank row. quoting=False reads `"` as data (GLUE's TSVs)."""
    text = _read_text(path)
    if quoting:
        reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    else:
        reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, quoting=csv.QUOTE_NONE)
    out = []
    try:
        for fields in reader:
            if fields and any(f.strip() for f in fields):
                out.append((reader.line_num, fields))
    except csv.Error as e:
        raise DataError(f"{path}, line {reader.line_num}: {e}; check the quoting of that row") from None
    if not out:
        raise DataError(f"{path}: the file is empty; it needs a header row and at least one example")
    return out


def _check_width(path: str, rows: list[tuple[int, list[str]]], width: int, what: str) -> None:
    for line, fields in rows:
        if len(fields) != width:
            raise DataError(f"{path}, line {line}: {len(fields)} fields where {what} has {width}; fix that "
                            "row (a tab or delimiter inside a text, or a missing field?)")


def _glue_column(path: str, header: list[str], name: str, task: str) -> int:
    """The index of column `name` in a GLUE header, or an error listing the columns there are."""
    if name in header:
        return header.index(name)
    raise DataError(f"{path}, line 1: no column {name!r}; the columns are {header}. This is not GLUE "
                    f"{task}'s layout: is it the right task's file, or was its header row edited?")


def _make_labels(path: str, found: list[tuple[int, str]], labels: Sequence[str] | None) -> list[str]:
    """The label names: the given list (each found label checked against it), or the sorted set found
    (numerically when every name is an integer, so "2" < "10")."""
    if labels is not None:
        labels = [str(x) for x in labels]
        known = set(labels)
        for line, value in found:
            if value not in known:
                raise DataError(f"{path}, line {line}: unknown label {value!r}; the classes are {labels}: "
                                "fix the label, or add it to the list of classes")
        return labels
    names = sorted({v for _, v in found})
    if names and all(re.fullmatch(r"-?\d+", n) for n in names):
        names.sort(key=int)
    return names


def _is_number(s: str) -> bool:
    try:
        float(s)
    except ValueError:
        return False
    return True


# ------------------------------------------------------------------------------------ your own files


def load_file(path: str | os.PathLike, text_column: str = "text", text_pair_column: str | None = None,
              label_column: str | None = "label", labels: Sequence[str] | None = None,
              regression: bool | None = None, name: str = "") -> Dataset:
    """A CSV (`.csv`), TSV (`.tsv`, `.txt`) or JSON-lines (`.jsonl`, `.json`) file with named columns.

    labels: the class names in id order (default: the sorted set of labels found). regression: True
    for float targets; None decides from the data (every label a number, and not all integers). A file
    without the label column (or label_column=None) gives unlabelled examples (a test file).
    """
    path = os.fspath(path)
    ext = os.path.splitext(path)[1].lower()
    if os.path.isdir(path):
        raise DataError(f"{path} is a folder; give a file (or use --task NAME --data {path})")
    if ext in (".jsonl", ".json", ".ndjson"):
        records = _jsonl_records(path)
        header_line = records[0][0]
    elif ext in (".csv", ".tsv", ".txt", ".tab"):
        rows = _rows(path, "," if ext == ".csv" else "\t", quoting=ext == ".csv")
        (header_line, header), body = rows[0], rows[1:]
        if not body:
            raise DataError(f"{path}: only a header row; add at least one example below it")
        _check_width(path, body, len(header), "the header")
        records = [(line, dict(zip(header, fields))) for line, fields in body]
    else:
        raise DataError(f"{path}: unknown file type {ext!r}; use .csv, .tsv or .jsonl")
    columns = list(records[0][1])
    for col, flag in ((text_column, "--text-column"), (text_pair_column, "--text-pair-column")):
        if col is not None and col not in columns:
            raise DataError(f"{path}, line {header_line}: no column {col!r}; the columns are {columns}. "
                            f"Pass the right name ({flag} NAME), or add the column")
    has_label = label_column is not None and label_column in columns
    raw: list[tuple[int, str | None]] = []
    for line, rec in records:
        for col in (text_column, text_pair_column, label_column if has_label else None):
            if col is not None and col not in rec:
                raise DataError(f"{path}, line {line}: no field {col!r} in this record; add it")
        value = rec[label_column] if has_label else None
        raw.append((line, None if value is None or value == "" else str(value)))
    found = [(line, v) for line, v in raw if v is not None]
    if has_label and len(found) < len(raw):
        line = next(line for line, v in raw if v is None)
        raise DataError(f"{path}, line {line}: the label is empty; give every row a label (or none)")
    if regression is None:
        regression = bool(found) and labels is None and all(_is_number(v) for _, v in found) \
            and not all(re.fullmatch(r"-?\d+", v) for _, v in found)
    if regression:
        for line, v in found:
            if not _is_number(v):
                raise DataError(f"{path}, line {line}: label {v!r} is not a number, but the task is a "
                                "regression; fix the label (or pass regression=False)")
        names: list[str] = []
    else:
        names = _make_labels(path, found, labels)
    examples = []
    for (line, rec), (_, label) in zip(records, raw):
        pair = None if text_pair_column is None else str(rec[text_pair_column])
        examples.append(Example(str(rec[text_column]), pair,
                                None if label is None else (float(label) if regression else label)))
    return Dataset(examples, names, name or os.path.basename(path))


def _jsonl_records(path: str) -> list[tuple[int, dict]]:
    records = []
    for line_no, line in enumerate(_read_text(path).splitlines(), 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as e:
            raise DataError(f"{path}, line {line_no}: not valid JSON ({e.msg}); write one JSON object "
                            "per line") from None
        if not isinstance(rec, dict):
            raise DataError(f"{path}, line {line_no}: a JSON {type(rec).__name__}, not an object; write "
                            'one object per line, e.g. {"text": "...", "label": "pos"}')
        records.append((line_no, rec))
    if not records:
        raise DataError(f"{path}: the file is empty; it needs one JSON object per line")
    return records


# ------------------------------------------------------------------------------------ GLUE


@dataclass(frozen=True)
class GlueTask:
    """Where one GLUE task keeps its texts and labels. Columns are header names, or indices for
    CoLA's header-less train/dev files."""

    name: str
    folder: str                      # the folder's name in the GLUE distribution
    labels: tuple[str, ...]          # () for regression
    text: str | int
    text_pair: str | int | None
    label: str | int
    test_text: str
    test_text_pair: str | None
    metric: str                      # the task's main GLUE metric (see minibort.metrics.glue_metric)
    header: bool = True
    splits: tuple[str, ...] = ("train", "dev", "test")


GLUE_TASKS: dict[str, GlueTask] = {t.name: t for t in [
    GlueTask("cola", "CoLA", ("0", "1"), 3, None, 1, "sentence", None, "mcc", header=False),
    GlueTask("sst2", "SST-2", ("0", "1"), "sentence", None, "label", "sentence", None, "accuracy"),
    GlueTask("mrpc", "MRPC", ("0", "1"), "#1 String", "#2 String", "Quality", "#1 String", "#2 String",
             "f1"),
    GlueTask("qqp", "QQP", ("0", "1"), "question1", "question2", "is_duplicate", "question1", "question2",
             "f1"),
    GlueTask("stsb", "STS-B", (), "sentence1", "sentence2", "score", "sentence1", "sentence2", "pearson"),
    GlueTask("mnli", "MNLI", ("contradiction", "entailment", "neutral"), "sentence1", "sentence2",
             "gold_label", "sentence1", "sentence2", "accuracy",
             splits=("train", "dev_matched", "dev_mismatched", "test_matched", "test_mismatched")),
    GlueTask("qnli", "QNLI", ("entailment", "not_entailment"), "question", "sentence", "label", "question",
             "sentence", "accuracy"),
    GlueTask("rte", "RTE", ("entailment", "not_entailment"), "sentence1", "sentence2", "label", "sentence1",
             "sentence2", "accuracy"),
    GlueTask("wnli", "WNLI", ("0", "1"), "sentence1", "sentence2", "label", "sentence1", "sentence2",
             "accuracy"),
]}
_ALIASES = {"sst-2": "sst2", "sts-b": "stsb", "mnli-m": "mnli", "mnli_matched": "mnli"}


def glue_task(task: str) -> GlueTask:
    """The GlueTask for a name such as "sst2", "SST-2" or "mnli"."""
    key = task.lower()
    key = _ALIASES.get(key, key)
    if key not in GLUE_TASKS:
        raise DataError(f"unknown GLUE task {task!r}; choose one of {', '.join(GLUE_TASKS)}, or give "
                        "your own files with --train/--dev")
    return GLUE_TASKS[key]


def glue_split_path(task: str, data_dir: str | os.PathLike, split: str) -> str:
    """The file of `split` in a task folder (or in a GLUE folder holding the task's folder).
    For MNLI, "dev" means dev_matched and "test" test_matched."""
    t = glue_task(task)
    if t.name == "mnli" and split in ("dev", "test"):
        split += "_matched"
    if split not in t.splits:
        raise DataError(f"GLUE {t.name} has no split {split!r}; its splits are {', '.join(t.splits)}")
    data_dir = os.fspath(data_dir)
    for folder in (data_dir, os.path.join(data_dir, t.folder)):
        path = os.path.join(folder, split + ".tsv")
        if os.path.isfile(path):
            return path
    raise DataError(f"no {split}.tsv in {data_dir} (nor in {os.path.join(data_dir, t.folder)}); --data "
                    f"must be the {t.folder} folder of the GLUE distribution")


def load_glue(task: str, data_dir: str | os.PathLike, split: str) -> Dataset:
    """One split of a GLUE task, read from the distribution's own TSV layout.

    Test files (split "test", "test_matched", ...) have no labels: their examples carry label None
    and the dataset keeps the task's label names, so predictions can be written as names.
    """
    t = glue_task(task)
    path = glue_split_path(task, data_dir, split)
    is_test = os.path.basename(path).startswith("test")
    rows = _rows(path, "\t", quoting=False)
    name = f"{t.name}/{os.path.basename(path)[:-4]}"
    if t.header or is_test:
        (_, header), body = rows[0], rows[1:]
        if not body:
            raise DataError(f"{path}: only a header row; the file has no examples")
        _check_width(path, body, len(header), "the header")
        text_col = t.test_text if is_test else t.text
        pair_col = t.test_text_pair if is_test else t.text_pair
        i_text = _glue_column(path, header, str(text_col), t.name)
        i_pair = None if pair_col is None else _glue_column(path, header, str(pair_col), t.name)
        i_label = None if is_test else _glue_column(path, header, str(t.label), t.name)
    else:                                                   # CoLA train/dev: no header, 4 columns
        body = rows
        if len(body[0][1]) == 2 and body[0][1][0] == "index":
            raise DataError(f"{path}, line 1: a test-file header in a {split} file; name it test.tsv")
        _check_width(path, body, 4, "CoLA's layout (source, label, original mark, sentence)")
        i_text, i_pair, i_label = int(t.text), None, int(t.label)
    examples = []
    for line, fields in body:
        label: str | float | None = None
        if i_label is not None:
            value = fields[i_label]
            if t.labels and value not in t.labels:
                raise DataError(f"{path}, line {line}: unknown label {value!r}; GLUE {t.name}'s labels are "
                                f"{list(t.labels)}: fix the row (is this the right task's file?)")
            if not t.labels:
                if not _is_number(value):
                    raise DataError(f"{path}, line {line}: score {value!r} is not a number; fix the row")
                label = float(value)
            else:
                label = value
        examples.append(Example(fields[i_text], None if i_pair is None else fields[i_pair], label))
    return Dataset(examples, list(t.labels), name)


def read_glue_indices(task: str, data_dir: str | os.PathLike, split: str) -> list[str]:
    """The `index` column of a GLUE test file (what a submission's `index` must repeat); for files
    without one, 0, 1, 2, ..."""
    path = glue_split_path(task, data_dir, split)
    rows = _rows(path, "\t", quoting=False)
    header = rows[0][1]
    for col in ("index", "id"):
        if col in header:
            i = header.index(col)
            return [fields[i] for _, fields in rows[1:]]
    return [str(k) for k in range(len(rows) - (1 if glue_task(task).header else 0))]


# ------------------------------------------------------------------------------------ the docs task

# A binary task no one here labelled by hand: sentences of the stdlib's docstrings, labelled by the
# family of modules they document. Split by module (a hash of its name), so no module's sentences are
# in two splits.
DOCS_FAMILIES = {
    "internet": ("email", "http", "urllib", "xmlrpc", "smtplib", "imaplib", "poplib", "ftplib", "nntplib",
                 "mailbox", "mimetypes", "socketserver", "wsgiref", "html", "cgi", "cgitb", "webbrowser",
                 "smtpd", "telnetlib", "mailcap", "quopri", "uu", "ipaddress", "ssl", "socket"),
    "concurrency": ("asyncio", "multiprocessing", "concurrent", "threading", "subprocess", "sched", "queue",
                    "selectors", "_threading_local", "asynchat", "asyncore", "signal"),
}
DOCS_LABELS = ("concurrency", "internet")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z])")


def _docs_family(module: str) -> str | None:
    top = module.split(".")[0]
    for family, tops in DOCS_FAMILIES.items():
        if top in tops:
            return family
    return None


def _doc_hash(module: str) -> int:
    return int(hashlib.sha256(module.encode("utf-8")).hexdigest()[:8], 16)


def docs_task(dev_fraction: float = 0.2, test_fraction: float = 0.2, min_words: int = 6,
              max_words: int = 50, max_train: int | None = None, seed: int = 0,
              stdlib_dir: str | None = None) -> dict[str, Dataset]:
    """The stdlib-documentation task in memory: {"train", "dev", "test"} Datasets with labels
    ["concurrency", "internet"] (does a sentence document a concurrency module or an internet one?).

    Sentences of 6-50 words from the docstrings of the two families' modules (`DOCS_FAMILIES`);
    duplicates dropped (a sentence in two modules goes nowhere). Split by document, stratified by
    family: within each family the modules are taken in the order of a hash of their names, the first
    ones into test until it holds `test_fraction` of the family's sentences, the next into dev until
    `dev_fraction`, the rest into train; so no module's sentences are in two splits, and each split has
    about the family ratio of the whole. `max_train` keeps a random subset of that many training
    sentences (the scarce-data version), drawn with `seed`. Deterministic for one Python version.
    """
    from . import corpus as C
    by_module: dict[str, list[str]] = {}
    family_of: dict[str, str] = {}
    seen: dict[str, int] = {}
    for doc_name, paragraphs in C.gather(stdlib_dir):
        if not doc_name.startswith("module:"):
            continue
        module = doc_name.split(":", 1)[1]
        family = _docs_family(module)
        if family is None:
            continue
        family_of[module] = family
        for p in paragraphs:
            if p.startswith((">>>", "...")) or "::" in p:
                continue
            for s in _SENTENCE_END.split(p):
                if min_words <= len(s.split()) <= max_words and "\t" not in s:
                    seen[s] = seen.get(s, 0) + 1
                    by_module.setdefault(module, []).append(s)
    splits: dict[str, list[Example]] = {"train": [], "dev": [], "test": []}
    for family in DOCS_LABELS:
        modules = sorted((m for m in by_module if family_of[m] == family), key=lambda m: (_doc_hash(m), m))
        sentences = {m: [s for s in by_module[m] if seen[s] == 1] for m in modules}
        total = sum(len(v) for v in sentences.values())
        taken = 0
        for m in modules:
            split = ("test" if taken < test_fraction * total
                     else "dev" if taken < (test_fraction + dev_fraction) * total else "train")
            splits[split] += [Example(s, None, family) for s in sentences[m]]
            taken += len(sentences[m])
    out = {name: Dataset(ex, list(DOCS_LABELS), f"docs/{name}") for name, ex in splits.items()}
    if max_train is not None and max_train < len(out["train"]):
        rng = np.random.default_rng(seed)
        keep = sorted(rng.choice(len(out["train"]), size=max_train, replace=False).tolist())
        out["train"] = out["train"].with_examples([out["train"][i] for i in keep])
    return out


def write_sst2_layout(datasets: dict[str, Dataset], out_dir: str | os.PathLike) -> dict[str, str]:
    """Write {"train", "dev", "test"} as GLUE SST-2 files: train/dev `sentence\\tlabel` (label ids),
    test `index\\tsentence`, plus labels.json (the test labels as test_labels.tsv, for scoring)."""
    from ._files import write_text_atomic
    out_dir = os.fspath(out_dir)
    os.makedirs(out_dir, exist_ok=True)
    paths = {}
    for split, ds in datasets.items():
        ids = ds.label_ids()
        if split == "test":
            lines = ["index\tsentence"] + [f"{i}\t{e.text}" for i, e in enumerate(ds)]
            gold = ["index\tlabel"] + [f"{i}\t{y}" for i, y in enumerate(ids)]
            write_text_atomic(os.path.join(out_dir, "test_labels.tsv"), "\n".join(gold) + "\n")
        else:
            lines = ["sentence\tlabel"] + [f"{e.text}\t{y}" for e, y in zip(ds, ids)]
        paths[split] = os.path.join(out_dir, f"{split}.tsv")
        write_text_atomic(paths[split], "\n".join(lines) + "\n")
    info = {"labels": {str(i): name for i, name in enumerate(DOCS_LABELS)},
            "sizes": {s: len(d) for s, d in datasets.items()},
            "label_counts": {s: d.label_counts() for s, d in datasets.items()},
            "python_version": sys.version.split()[0]}
    write_text_atomic(os.path.join(out_dir, "labels.json"), json.dumps(info, indent=2) + "\n")
    return paths


def load_test_labels(path: str | os.PathLike) -> np.ndarray:
    """test_labels.tsv (`index\\tlabel`) as an int64 array in index order."""
    rows = _rows(os.fspath(path), "\t", quoting=False)
    return np.array([int(f[1]) for _, f in rows[1:]], dtype=np.int64)


# ------------------------------------------------------------------------------------ command line


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m minibort.data", description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="command", required=True)
    d = sub.add_parser("docs-task", help="write the stdlib-documentation task in GLUE SST-2 layout")
    d.add_argument("out_dir", help="folder for train.tsv, dev.tsv, test.tsv, test_labels.tsv, labels.json")
    d.add_argument("--max-train", type=int, default=None, help="keep only this many training sentences")
    d.add_argument("--seed", type=int, default=0, help="seed of the --max-train subset")
    s = sub.add_parser("show", help="read a data file (or a GLUE split) and print what minibort sees")
    s.add_argument("path", help="a .csv/.tsv/.jsonl file, or a GLUE task folder with --task")
    s.add_argument("--task", default=None, help="GLUE task name: read PATH as its folder")
    s.add_argument("--split", default="train", help="GLUE split (train, dev, test, dev_matched, ...)")
    s.add_argument("--text-column", default="text")
    s.add_argument("--text-pair-column", default=None)
    s.add_argument("--label-column", default="label")
    args = ap.parse_args(argv)
    try:
        if args.command == "docs-task":
            ds = docs_task(max_train=args.max_train, seed=args.seed)
            write_sst2_layout(ds, args.out_dir)
            for split, d_ in ds.items():
                print(f"{split}: {len(d_)} sentences {d_.label_counts()}")
            print(f"written to {args.out_dir}")
        else:
            if args.task:
                ds_ = load_glue(args.task, args.path, args.split)
            else:
                ds_ = load_file(args.path, args.text_column, args.text_pair_column, args.label_column)
            print(f"{ds_.name}: {len(ds_)} examples; "
                  f"{'regression' if ds_.is_regression else f'labels {ds_.labels}'}; pairs: {ds_.has_pairs}")
            for e in ds_.examples[:3]:
                print("  ", dataclasses.asdict(e))
    except DataError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
