"""minibort.data: every GLUE layout (hand-written fixtures in tests/fixtures/glue), generic CSV / TSV /
JSONL files, label maps, and an error naming the file, the line and the fix for each kind of bad file."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from conftest import FIXTURES

from minibort.data import (
    GLUE_TASKS,
    DataError,
    Dataset,
    Example,
    load_file,
    load_glue,
    read_glue_indices,
)

GLUE = FIXTURES / "glue"


# ------------------------------------------------------------------------------------ GLUE layouts


def test_cola_has_no_header_and_reads_columns_1_and_3():
    ds = load_glue("cola", GLUE / "CoLA", "train")
    assert len(ds) == 4 and ds.labels == ["0", "1"]
    assert ds[0] == Example("Our friends won't buy this analysis, let alone the next one we propose.", None, "1")
    assert ds[2].label == "0" and ds[2].text == "They drank the pub."
    assert ds[3].text.count('"') == 2                    # quotes are data
    assert ds.label_ids().tolist() == [1, 1, 0, 0]


def test_cola_test_file_has_a_header_and_no_labels():
    ds = load_glue("cola", GLUE, "test")                   # the parent GLUE folder works too
    assert [e.text for e in ds] == ["Bill whistled past the house.", "The car honked its way down the road."]
    assert all(e.label is None for e in ds) and not ds.is_labelled
    assert read_glue_indices("cola", GLUE, "test") == ["0", "1"]
    with pytest.raises(DataError, match="no label"):
        ds.label_ids()


def test_sst2():
    ds = load_glue("SST-2", GLUE / "SST-2", "train")
    assert len(ds) == 5 and ds.labels == ["0", "1"] and not ds.has_pairs
    assert ds[0] == Example("hide new secretions from the parental units ", None, "0")
    assert ds[4].text == 'a "quiet" film that \'s hard to forget '


def test_mrpc_quote_characters_are_data_and_bom_crlf_are_handled():
    ds = load_glue("mrpc", GLUE / "MRPC", "train")          # this fixture starts with a BOM, CRLF ends
    assert len(ds) == 3
    assert ds[0].text == ('Amrozi accused his brother , whom he called " the witness " , of deliberately '
                          "distorting his evidence .")
    assert ds[0].text_pair.startswith('Referring to him as only " the witness " ,')
    assert ds.label_ids().tolist() == [1, 0, 1]
    dev = load_glue("mrpc", GLUE / "MRPC", "dev")
    assert dev[0].text_pair.startswith('" The foodservice')  # a quote opening a field is data too
    test = load_glue("mrpc", GLUE / "MRPC", "test")
    assert len(test) == 2 and test[1].label is None and test[1].text_pair.startswith("Domestic sales")


def test_qqp_qnli_rte_wnli_pairs():
    qqp = load_glue("qqp", GLUE / "QQP", "train")
    assert qqp[1] == Example("How do I control my horny emotions?", "How do you control your horniness?", "1")
    assert load_glue("qqp", GLUE / "QQP", "test")[1].text_pair == \
        "What are the top ten Consumer-to-Business E-commerce online?"
    qnli = load_glue("qnli", GLUE / "QNLI", "dev")
    assert qnli.labels == ["entailment", "not_entailment"] and qnli.label_ids().tolist() == [0, 1]
    assert load_glue("qnli", GLUE / "QNLI", "test")[0].text_pair.count('"') == 4
    rte = load_glue("rte", GLUE / "RTE", "train")
    assert rte[0] == Example("No Weapons of Mass Destruction Found in Iraq Yet.",
                             "Weapons of Mass Destruction Found in Iraq.", "not_entailment")
    wnli = load_glue("wnli", GLUE / "WNLI", "train")
    assert wnli.labels == ["0", "1"] and wnli.label_ids().tolist() == [1, 1, 1, 0]


def test_stsb_float_labels_are_a_regression():
    ds = load_glue("stsb", GLUE / "STS-B", "train")
    assert ds.is_regression and ds.labels == [] and ds.num_labels == 1
    y = ds.label_ids()
    assert y.dtype == np.float32 and y.tolist() == pytest.approx([5.0, 3.8, 3.8, 2.6])
    assert ds[3].text == '"Three men are playing chess."'
    assert ds[0].text_pair == "An air plane is taking off."
    test = load_glue("stsb", GLUE / "STS-B", "test")
    assert test[1].text == "A group of men play soccer on the beach." and test[1].label is None


def test_mnli_splits():
    train = load_glue("mnli", GLUE / "MNLI", "train")
    assert train.labels == ["contradiction", "entailment", "neutral"]
    assert train.label_ids().tolist() == [2, 1, 1, 1, 1, 0]
    matched = load_glue("mnli", GLUE / "MNLI", "dev_matched")
    assert matched[0].label == "neutral"                   # gold_label, the last column, not label1
    assert load_glue("mnli", GLUE / "MNLI", "dev")[1] == matched[1]       # "dev" means matched
    mism = load_glue("mnli", GLUE / "MNLI", "dev_mismatched")
    assert mism[1].text == "The Old One always comforted Ca'daan, except today."
    assert load_glue("mnli", GLUE / "MNLI", "test_mismatched")[0].text_pair == "So what's your decision?"
    with pytest.raises(DataError, match="dev_matched"):
        load_glue("mnli", GLUE / "MNLI", "validation")


def test_every_task_reads_all_its_fixture_splits():
    for task in GLUE_TASKS.values():
        for split in task.splits:
            ds = load_glue(task.name, GLUE, split)
            assert len(ds) >= 1 and all(e.text for e in ds)
            assert ds.is_labelled == (not split.startswith("test")), (task.name, split)
            assert ds.has_pairs == (task.text_pair is not None)


def test_glue_errors(tmp_path):
    with pytest.raises(DataError, match="unknown GLUE task 'sst3'"):
        load_glue("sst3", GLUE, "train")
    with pytest.raises(DataError, match="no train.tsv"):
        load_glue("sst2", tmp_path, "train")
    d = tmp_path / "SST-2"
    d.mkdir()
    (d / "train.tsv").write_text("sentence\tlabel\ngood\t1\nbad\tpositive\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"train.tsv, line 3: unknown label 'positive'.*\['0', '1'\]"):
        load_glue("sst2", tmp_path, "train")
    (d / "train.tsv").write_text("text\tlabel\ngood\t1\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"line 1: no column 'sentence'.*\['text', 'label'\]"):
        load_glue("sst2", tmp_path, "train")
    (d / "train.tsv").write_text("sentence\tlabel\ngood\t1\nbad\t0\textra\n", encoding="utf-8")
    with pytest.raises(DataError, match="line 3: 3 fields where the header has 2; fix that row"):
        load_glue("sst2", tmp_path, "train")
    c = tmp_path / "CoLA"
    c.mkdir()
    (c / "train.tsv").write_text("gj04\t1\t\tfine.\ngj04\t0\tbroken row\n", encoding="utf-8")
    with pytest.raises(DataError, match="line 2: 3 fields where CoLA's layout"):
        load_glue("cola", tmp_path, "train")
    s = tmp_path / "STS-B"
    s.mkdir()
    head = "index\tgenre\tfilename\tyear\told_index\tsource1\tsource2\tsentence1\tsentence2\tscore\n"
    (s / "train.tsv").write_text(head + "0\tg\tf\ty\to\tn\tn\ta\tb\thigh\n", encoding="utf-8")
    with pytest.raises(DataError, match="line 2: score 'high' is not a number"):
        load_glue("stsb", tmp_path, "train")


# ------------------------------------------------------------------------------------ generic files


def test_csv_with_quoting_and_inferred_labels(tmp_path):
    p = tmp_path / "reviews.csv"
    p.write_text('review,stars\n"Great, really great",good\n"He said ""no""",bad\nfine,good\n', encoding="utf-8")
    ds = load_file(p, text_column="review", label_column="stars")
    assert ds.labels == ["bad", "good"] and ds.name == "reviews.csv"
    assert ds[0].text == "Great, really great" and ds[1].text == 'He said "no"'
    assert ds.label_ids().tolist() == [1, 0, 1]
    assert ds.id2label() == {0: "bad", 1: "good"} and ds.label2id() == {"bad": 0, "good": 1}


def test_integer_names_sort_numerically_and_given_labels_fix_the_order(tmp_path):
    p = tmp_path / "t.tsv"
    p.write_text("text\tlabel\na\t10\nb\t2\nc\t2\n", encoding="utf-8")
    assert load_file(p).labels == ["2", "10"]
    ds = load_file(p, labels=["10", "2", "7"])
    assert ds.labels == ["10", "2", "7"] and ds.label_ids().tolist() == [0, 1, 1]


def test_tsv_pairs_and_regression_inferred_from_floats(tmp_path):
    p = tmp_path / "sim.tsv"
    p.write_text("a\tb\tscore\nx y\tx z\t0.5\nu\tv\t4\n", encoding="utf-8")
    ds = load_file(p, text_column="a", text_pair_column="b", label_column="score")
    assert ds.is_regression and ds.label_ids().tolist() == [0.5, 4.0]
    assert ds[0] == Example("x y", "x z", 0.5)
    assert not load_file(p, "a", "b", "score", regression=False).is_regression


def test_jsonl(tmp_path):
    p = tmp_path / "d.jsonl"
    p.write_text('{"text": "a", "label": 1}\n\n{"text": "b", "label": 0}\n', encoding="utf-8")
    ds = load_file(p)
    assert ds.labels == ["0", "1"] and ds.label_ids().tolist() == [1, 0]
    q = tmp_path / "test.jsonl"
    q.write_text('{"text": "a"}\n{"text": "b"}\n', encoding="utf-8")
    assert [e.label for e in load_file(q)] == [None, None]


def test_file_without_label_column_is_unlabelled(tmp_path):
    p = tmp_path / "test.csv"
    p.write_text("text\nhello\n", encoding="utf-8")
    ds = load_file(p, labels=["neg", "pos"])
    assert ds.labels == ["neg", "pos"] and ds[0].label is None


@pytest.mark.parametrize("name, content, pattern", [
    ("e.csv", "", r"e.csv: the file is empty"),
    ("h.csv", "text,label\n", r"h.csv: only a header row"),
    ("m.csv", "sentence,label\nhi,1\n", (r"m.csv, line 1: no column 'text'; the columns are \['sentence', "
                                         r"'label'\]. Pass the right name \(--text-column NAME\)")),
    ("r.tsv", "text\tlabel\nok\t1\nragged\n", r"r.tsv, line 3: 1 fields where the header has 2"),
    ("b.jsonl", '{"text": "a", "label": 1}\n{"text": "b", label: 0}\n', r"b.jsonl, line 2: not valid JSON"),
    ("k.jsonl", '{"text": "a", "label": 1}\n{"label": 0}\n', r"k.jsonl, line 2: no field 'text'"),
    ("l.jsonl", '[1, 2]\n', r"l.jsonl, line 1: a JSON list, not an object"),
    ("n.csv", "text,label\na,1\nb,\n", r"n.csv, line 3: the label is empty"),
    ("x.xlsx", "text,label\n", r"unknown file type '.xlsx'"),
])
def test_bad_files_name_file_line_and_fix(tmp_path, name, content, pattern):
    p = tmp_path / name
    p.write_text(content, encoding="utf-8")
    with pytest.raises(DataError, match=pattern):
        load_file(p)


def test_unknown_label_against_a_given_list(tmp_path):
    p = tmp_path / "u.csv"
    p.write_text("text,label\na,pos\nb,neutral\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"u.csv, line 3: unknown label 'neutral'; the classes are \['neg', "
                                        r"'pos'\]: fix the label, or add it"):
        load_file(p, labels=["neg", "pos"])


def test_encoding_error_names_the_line(tmp_path):
    p = tmp_path / "latin.tsv"
    p.write_bytes("text\tlabel\nok\t1\ncaf\u00e9\t0\n".encode("latin-1"))
    with pytest.raises(DataError, match=r"latin.tsv, line 3: byte 0xe9 is not UTF-8; save the file as UTF-8"):
        load_file(p)


def test_missing_file_and_folder(tmp_path):
    with pytest.raises(DataError, match="no such file"):
        load_file(tmp_path / "nope.csv")
    with pytest.raises(DataError, match="is a folder"):
        load_file(tmp_path)


# ------------------------------------------------------------------------------------ Dataset


def test_dataset_ids_and_with_examples():
    ds = Dataset([Example("a", label="x"), Example("b", label=1)], ["x", "y"], "toy")
    assert ds.label_ids().tolist() == [0, 1]           # an int label is an id
    assert ds.label_ids().dtype == np.int64
    more = ds.with_examples([Example("c", label="y")])
    assert more.labels == ["x", "y"] and more.name == "toy" and len(more) == 1 and len(ds) == 2
    assert ds.label_counts() == {"x": 1, "y": 1}
    with pytest.raises(DataError, match="label id 2 is outside"):
        Dataset([Example("a", label=2)], ["x", "y"]).label_ids()
    with pytest.raises(DataError, match="unknown label 'z'"):
        Dataset([Example("a", label="z")], ["x", "y"]).label_ids()
    with pytest.raises(DataError, match="not a number"):
        Dataset([Example("a", label="z")], []).label_ids()
    with pytest.raises(AttributeError):                # frozen
        ds[0].text = "changed"


# ------------------------------------------------------------------------------------ the docs task


def test_docs_task_split_by_module_and_sst2_layout(tmp_path):
    from minibort.data import docs_task, load_test_labels, write_sst2_layout
    ds = docs_task()
    assert set(ds) == {"train", "dev", "test"}
    texts = {s: {e.text for e in d} for s, d in ds.items()}
    assert not (texts["train"] & texts["dev"]) and not (texts["train"] & texts["test"])
    for d in ds.values():
        assert d.labels == ["concurrency", "internet"] and len(d) > 100
        assert min(d.label_counts().values()) > 50
    small = docs_task(max_train=100, seed=3)
    assert len(small["train"]) == 100 and {e.text for e in small["train"]} <= texts["train"]
    assert [e.text for e in docs_task(max_train=100, seed=3)["train"]] == [e.text for e in small["train"]]
    write_sst2_layout(small, tmp_path)
    back = load_glue("sst2", tmp_path, "train")
    assert [e.text for e in back] == [e.text for e in small["train"]]
    assert back.label_ids().tolist() == small["train"].label_ids().tolist()
    assert load_test_labels(tmp_path / "test_labels.tsv").tolist() == small["test"].label_ids().tolist()
    assert [e.text for e in load_glue("sst2", tmp_path, "test")] == [e.text for e in small["test"]]
    info = json.loads((tmp_path / "labels.json").read_text())
    assert info["labels"] == {"0": "concurrency", "1": "internet"}


def test_cli_show_and_error(tmp_path):
    ok = subprocess.run([sys.executable, "-m", "minibort.data", "show", str(GLUE / "MRPC"), "--task", "mrpc"],
                        capture_output=True, text=True, check=False)
    assert ok.returncode == 0 and "mrpc/train: 3 examples" in ok.stdout
    p = tmp_path / "bad.csv"
    p.write_text("sentence,label\nx,1\n", encoding="utf-8")
    bad = subprocess.run([sys.executable, "-m", "minibort.data", "show", str(p)], capture_output=True, text=True, check=False)
    assert bad.returncode == 2 and bad.stderr.startswith("error: ") and "Traceback" not in bad.stderr
    docs = subprocess.run([sys.executable, "-m", "minibort.data", "docs-task", str(tmp_path / "docs"),
                           "--max-train", "50"], capture_output=True, text=True, check=False)
    assert docs.returncode == 0 and "train: 50 sentences" in docs.stdout, docs.stderr
    assert len(load_glue("sst2", tmp_path / "docs", "train")) == 50
