"""The shipped bort-tiny against its own record: fill-mask probes and the v1 held-out masks.

`tests/fixtures/fill_mask_probes.tsv` holds plain-sentence Python facts written for this test (not
copied from the training text), one <mask> each, whose answer is one token of bort-tiny's vocabulary.
training.json records the shipped model's top-1 / top-5 hits on them and its accuracy on the first
bort-tiny's held-out masks (`heldout_eval_v1.npz`), so old and new models compare on the same masks;
these tests recompute both from the shipped files.

    python tests/test_bort_tiny.py [MODEL_DIR ...]      # the probe table for any model folders
    python tests/test_bort_tiny.py --record weights/bort-tiny runs/bort-tiny-v1 runs/corpus \\
        runs/bort-tiny-v2/tokens-88938238f90528f7.npz runs/bort-tiny-v2/checkpoint.npz
                                                        # how bort-tiny v2's record was completed
"""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

PROBES = os.path.join(os.path.dirname(__file__), "fixtures", "fill_mask_probes.tsv")


def read_probes(path: str = PROBES) -> list[tuple[str, str]]:
    """(sentence with one <mask>, expected word) per line; lines starting with # are comments."""
    out = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.strip() and not line.startswith("#"):
                sentence, word = line.rstrip("\n").split("\t")
                out.append((sentence, word))
    return out


def probe(model, tok, probes: list[tuple[str, str]], top_k: int = 5) -> list[dict]:
    """Each probe's top-k words (special tokens excluded) and the expected word's rank (None if beyond)."""
    from minibort.generate import fill_masks
    rows = []
    for sentence, word in probes:
        filled = fill_masks(model, tok, tok.encode(sentence), top_k=top_k)
        top = [c["token"].strip() for c in filled["masks"][0]["candidates"]]
        rows.append({"sentence": sentence, "expected": word, "top": top,
                     "rank": top.index(word) + 1 if word in top else None})
    return rows


def summary(rows: list[dict]) -> dict:
    return {"probes": len(rows), "top1": sum(r["rank"] == 1 for r in rows),
            "top5": sum(r["rank"] is not None for r in rows)}


def _shipped() -> str:
    import minibort.weights
    return os.path.join(minibort.weights.__path__[0], "bort-tiny")


@pytest.fixture(scope="module")
def shipped():
    from minibort import BortForMaskedLM
    from minibort.tokenizer import Tokenizer
    folder = _shipped()
    with open(os.path.join(folder, "training.json"), encoding="utf-8") as f:
        record = json.load(f)
    return BortForMaskedLM.from_pretrained(folder).eval(), Tokenizer.from_pretrained(folder), record, folder


def test_probes_are_single_token_facts(shipped):
    _, tok, _, _ = shipped
    probes = read_probes()
    assert len(probes) >= 20
    for sentence, word in probes:
        assert sentence.count("<mask>") == 1, sentence
        assert len(tok.encode(" " + word, add_special_tokens=False)) == 1, f"{word!r} is not one token"


def test_probe_results_match_the_record(shipped):
    model, tok, record, _ = shipped
    if "probes" not in record:
        pytest.skip("this bort-tiny's training.json has no probe results")
    rows = probe(model, tok, read_probes())
    for r in rows:
        print(f"{r['expected']:>10}  rank {r['rank']}  top {r['top']}")
    got = summary(rows)
    print(f"top-1 {got['top1']}/{got['probes']}, top-5 {got['top5']}/{got['probes']}")
    assert got == {k: record["probes"][k] for k in ("probes", "top1", "top5")}


def test_v1_heldout_masks_give_the_recorded_accuracy(shipped):
    from minibort.pretrain import evaluate
    model, _, record, folder = shipped
    path = os.path.join(folder, "heldout_eval_v1.npz")
    if "heldout_v1_masks" not in record or not os.path.exists(path):
        pytest.skip("this bort-tiny has no result on the v1 held-out masks")
    with np.load(path) as z:
        ev = {k: z[k] for k in z.files}
    r = evaluate(model, ev)
    print(f"v1 held-out masks: accuracy {r['accuracy']:.4f}, perplexity {r['perplexity']:.2f}")
    want = record["heldout_v1_masks"]
    n = want["masked_tokens"]
    assert r["masked_tokens"] == n
    # as test_pretrain's check of the shipped record: float rounding may flip one argmax in a thousand
    assert abs(r["accuracy"] - want["accuracy"]) <= max(1, n // 1000) / n
    assert r["perplexity"] == pytest.approx(want["perplexity"], rel=1e-5)
    assert r["accuracy"] > want["baselines"]["most_frequent"]["accuracy"]


def table(folders: list[str]) -> dict[str, list[dict]]:
    """Print the probe table of each model folder, side by side; -> the rows of each."""
    from minibort import BortForMaskedLM
    from minibort.tokenizer import Tokenizer
    probes = read_probes()
    results = {}
    for folder in folders:
        model = BortForMaskedLM.from_pretrained(folder).eval()
        results[folder] = probe(model, Tokenizer.from_pretrained(folder), probes)
    for i, (sentence, word) in enumerate(probes):
        cells = [f"{'#' + str(results[f][i]['rank']) if results[f][i]['rank'] else '-':>3} "
                 f"{results[f][i]['top'][0]:<10}" for f in folders]
        print(f"{word:<10} | " + " | ".join(cells) + f" | {sentence}")
    for f in folders:
        s = summary(results[f])
        print(f"{f}: top-1 {s['top1']}/{s['probes']}, top-5 {s['top5']}/{s['probes']}")
    return results


def record(folder: str, v1_folder: str, corpus_dir: str, tokens: str, checkpoint: str = "") -> None:
    """Add to FOLDER/training.json what the run itself does not record: the corpus sources (from
    CORPUS_DIR/corpus.json), the result on the v1 held-out masks (copied in as heldout_eval_v1.npz)
    with baselines from this run's training tokens (TOKENS, the run's token cache), and the probes,
    beside the v1 model's; and from the run's CHECKPOINT, any changes of its schedule."""
    import shutil

    from minibort import BortForMaskedLM
    from minibort._files import write_text_atomic
    from minibort.pretrain import baselines, evaluate, specials_of
    from minibort.tokenizer import Tokenizer
    with open(os.path.join(folder, "training.json"), encoding="utf-8") as f:
        rec = json.load(f)
    with open(os.path.join(corpus_dir, "corpus.json"), encoding="utf-8") as f:
        corpus = json.load(f)
    assert corpus["sha256"] == rec["corpus"]["sha256"], "not the corpus this model was trained on"
    rec["corpus"]["sources"] = corpus["sources"]
    rec["corpus"]["heldout_documents"] = corpus["heldout_documents"]
    with open(os.path.join(v1_folder, "training.json"), encoding="utf-8") as f:
        v1 = json.load(f)
    shutil.copyfile(os.path.join(v1_folder, "heldout_eval.npz"), os.path.join(folder, "heldout_eval_v1.npz"))
    with np.load(os.path.join(folder, "heldout_eval_v1.npz")) as z:
        ev = {k: z[k] for k in z.files}
    model, tok = BortForMaskedLM.from_pretrained(folder).eval(), Tokenizer.from_pretrained(folder)
    with np.load(tokens) as z:
        train_ids = z["train_ids"]
    r = evaluate(model, ev)
    rec["heldout_v1_masks"] = {
        **{k: r[k] for k in ("accuracy", "perplexity", "loss", "masked_tokens")},
        "masks_file": "heldout_eval_v1.npz",
        "about": "the first bort-tiny's held-out masks (its corpus: the standard library alone), "
                 "scored by these (shipped) weights",
        "v1_model": {k: v1["heldout"][k] for k in ("accuracy", "perplexity")},
        "baselines": baselines(train_ids[None], ev, specials_of(tok)),
        "v1_baselines": v1["baselines"]}
    rows = {f: probe(BortForMaskedLM.from_pretrained(f).eval(), Tokenizer.from_pretrained(f), read_probes())
            for f in (folder, v1_folder)}
    rec["probes"] = {"file": "tests/fixtures/fill_mask_probes.tsv", **summary(rows[folder]),
                     "v1_model": summary(rows[v1_folder]),
                     "rows": [{"expected": a["expected"], "rank": a["rank"], "top": a["top"],
                               "v1_rank": b["rank"], "v1_top": b["top"]}
                              for a, b in zip(rows[folder], rows[v1_folder], strict=True)]}
    if checkpoint:
        with np.load(checkpoint) as z:
            state = json.loads(bytes(z["meta"]).decode("utf-8"))["state"]
        if state.get("schedule_changes"):
            rec["schedule_changes"] = {
                "changes": state["schedule_changes"],
                "about": "the run was stopped, the checkpoint's `steps` edited and the run resumed with the "
                         "new --steps, so the learning rate's linear decay was re-aimed at a new end (the "
                         "shared machine's speed changed); `command` is the last invocation"}
    write_text_atomic(os.path.join(folder, "training.json"), json.dumps(rec, indent=1) + "\n")
    os.chmod(os.path.join(folder, "heldout_eval_v1.npz"), 0o644)


if __name__ == "__main__":
    import argparse
    ap = argparse.ArgumentParser(description="bort-tiny's probe table; --record adds results to training.json")
    ap.add_argument("folders", nargs="*", help="model folders (default: the shipped bort-tiny)")
    ap.add_argument("--record", nargs=5, metavar=("FOLDER", "V1_FOLDER", "CORPUS_DIR", "TOKENS_NPZ", "CHECKPOINT"))
    args = ap.parse_args()
    if args.record:
        record(*args.record)
    else:
        table(args.folders or [_shipped()])
