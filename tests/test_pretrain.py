"""minibort.pretrain: masking, packing, the loop (loss falls, resume == uninterrupted), checkpoints,
distillation, the command line, and the shipped bort-tiny against its training record."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import mmap
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from minibort import BortForMaskedLM
from minibort import pretrain as P
from minibort.trainer import Trainer, TrainingError, run_lock

SP = P.Specials(bos=0, eos=2, pad=1, mask=4, vocab_size=32, others=(3,))
TINY = {"hidden_size": 32, "num_attention_heads": 4, "intermediate_size": 24, "max_position_embeddings": 32,
        "seq_len": 32, "batch_size": 16, "lr": 1e-2, "warmup": 0.1, "progress": False,
        "hidden_dropout_prob": 0.1, "attention_probs_dropout_prob": 0.1}   # dropout on: resume must replay it


def toy_sequences(n_docs: int = 64, seed: int = 0) -> np.ndarray:
    """Documents that repeat one token: a masked token is predictable from its neighbours only."""
    rng = np.random.default_rng(seed)
    docs = [[np.full(rng.integers(8, 30), 5 + s % 27)] for s in range(n_docs)]
    return P.pack(docs, 32, SP)


# ------------------------------------------------------------------------------------ data


def test_pack_keeps_paragraphs_whole_and_documents_apart():
    docs = [[np.arange(5, 15), np.arange(20, 25)], [np.arange(5, 50)]]   # the second is longer than a row
    seqs = P.pack(docs, 16, SP)
    assert seqs.shape[1] == 16 and (seqs[:, 0] == SP.bos).all()
    # row 0: <s> p1 </s> ; p2 does not fit whole with p1 (11 + 6 > 15), so it opens row 1
    assert seqs[0, 1:12].tolist() == list(range(5, 15)) + [SP.eos]
    assert seqs[1, 1:7].tolist() == list(range(20, 25)) + [SP.eos]
    # document 2 starts a new row and is cut into pieces of at most 15 tokens
    body = [t for row in seqs[2:] for t in row[1:] if t != SP.pad]
    assert body == list(range(5, 50)) + [SP.eos]


def test_bert_masking_80_10_10_never_specials_or_padding():
    rng = np.random.default_rng(0)
    ids = rng.integers(5, 32, (64, 128))
    ids[:, 0], ids[:, 100] = SP.bos, SP.eos
    ids[:, 101:] = SP.pad
    att = (ids != SP.pad).astype(np.int64)
    masked, labels = P.mask_tokens(ids, att, SP, np.random.default_rng(1))
    sel = labels != -100
    assert not sel[:, 0].any() and not sel[:, 100:].any()                 # no <s>, </s>, padding
    assert (labels[sel] == ids[sel]).all() and (masked[~sel] == ids[~sel]).all()
    share = sel[:, 1:100].mean()
    to_mask = (masked[sel] == SP.mask).mean()
    unchanged = (masked[sel] == ids[sel]).mean()
    print(f"selected {share:.3f} (0.15), <mask> {to_mask:.3f} (0.8), unchanged {unchanged:.3f} (~0.1 + 0.1/27)")
    assert abs(share - 0.15) < 0.01 and abs(to_mask - 0.8) < 0.02 and abs(unchanged - 0.1) < 0.02
    assert not np.isin(masked[sel & (masked != SP.mask)], [0, 1, 2, 3]).any()  # replacements are normal
    again = P.mask_tokens(ids, att, SP, np.random.default_rng(1))
    assert (again[0] == masked).all() and (again[1] == labels).all()


def test_salient_masking_selects_its_ids_at_their_own_rate():
    from minibort.masking import selection_table
    rng = np.random.default_rng(0)
    ids = rng.integers(5, 32, (64, 128))
    att = np.ones_like(ids)
    # A table that gives every id 0.15 is the scalar form exactly: same draws, same outcome.
    flat = P.mask_tokens(ids, att, SP, np.random.default_rng(1), np.full(SP.vocab_size, 0.15))
    scalar = P.mask_tokens(ids, att, SP, np.random.default_rng(1), 0.15)
    assert all((a == b).all() for a, b in zip(flat, scalar, strict=True))
    salient = np.array([7, 11])
    table = selection_table(SP.vocab_size, 0.15, salient, 0.6)
    assert table[7] == table[11] == 0.6 and table[8] == 0.15
    masked, labels = P.mask_tokens(ids, att, SP, np.random.default_rng(1), table)
    sel, is_sal = labels != -100, np.isin(ids, salient)
    print(f"salient selected {sel[is_sal].mean():.3f} (0.6), others {sel[~is_sal].mean():.3f} (0.15)")
    assert abs(sel[is_sal].mean() - 0.6) < 0.03 and abs(sel[~is_sal].mean() - 0.15) < 0.01
    assert (labels[sel] == ids[sel]).all() and (masked[~sel] == ids[~sel]).all()


def test_salient_ids_are_single_tokens_of_pythons_names():
    import builtins
    import keyword

    from minibort import Tokenizer
    from minibort.masking import salient_token_ids
    tok = Tokenizer.from_pretrained("bort-tiny")
    ids, words = salient_token_ids(tok)
    assert "break" in words and "len" in words and "ValueError" in words and "__name__" not in words
    assert set(words) == set(keyword.kwlist) | set(keyword.softkwlist) | {
        n for n in dir(builtins) if not n.startswith("_")}
    for w in ("break", "return", "len"):                                 # one token each, with the space
        assert tok.encode(" " + w, add_special_tokens=False)[0] in ids
    assert len(tok.encode(" UnicodeTranslateError", add_special_tokens=False)) > 1   # several: not listed
    decoded = {tok.decode([int(i)]).strip() for i in ids}
    assert decoded <= set(words) and len(ids) == len(np.unique(ids))
    with pytest.raises(ValueError, match="--salient-mask-prob must be in"):
        P.PretrainConfig(salient_mask_prob=1.0)
    with pytest.raises(TrainingError, match="needs the salient ids"):                  # never silently off
        P.MaskedLMStep(None, toy_sequences(), SP, P.PretrainConfig(salient_mask_prob=0.5))


def test_heldout_masks_are_fixed_by_their_seed():
    seqs = toy_sequences()
    a, b = P.heldout_eval_set(seqs, SP, 5), P.heldout_eval_set(seqs, SP, 5)
    assert all((a[k] == b[k]).all() for k in a)
    assert not (P.heldout_eval_set(seqs, SP, 6)["labels"] == a["labels"]).all()


# ------------------------------------------------------------------------------------ the loop


def test_loss_falls_on_a_small_run():
    seqs = toy_sequences()
    cfg = P.PretrainConfig(**TINY, steps=30, eval_every=0, checkpoint_every=0)
    tr = P.mlm_trainer(cfg, seqs, P.heldout_eval_set(seqs[:16], SP, 7), SP)
    before = tr.evaluate()
    tr.run(log=lambda m: None)
    L, after = tr.state["losses"], tr.state["evals"][-1]
    print(f"train loss {np.mean(L[:5]):.3f} -> {np.mean(L[-5:]):.3f}; held-out loss "
          f"{before['loss']:.3f} -> {after['loss']:.3f}")
    assert np.mean(L[-5:]) < np.mean(L[:5]) - 0.5
    assert after["loss"] < before["loss"] - 0.5


def _run(tmp_path, name: str, stop_after: int, steps: int = 12, **kw) -> Trainer:
    seqs = toy_sequences()
    ev = P.heldout_eval_set(seqs[:16], SP, 7)
    ckpt = str(tmp_path / f"{name}.npz")
    cfg = P.PretrainConfig(**TINY, steps=steps, eval_every=4, checkpoint_every=5, stop_after=stop_after, **kw)
    tr = P.mlm_trainer(cfg, seqs, ev, SP, checkpoint_path=ckpt)
    res = tr.run(log=lambda m: None)
    if not res["finished"]:                     # a fresh process: new objects, state from the file only
        tr = P.mlm_trainer(dataclasses.replace(cfg, stop_after=0), seqs, ev, SP, checkpoint_path=ckpt)
        tr.load(ckpt)
        assert tr.state["step"] == stop_after
        assert tr.run(log=lambda m: None)["finished"]
    return tr


def test_resume_after_interrupt_equals_uninterrupted_run(tmp_path):
    straight = _run(tmp_path, "straight", 0)
    resumed = _run(tmp_path, "resumed", 7)       # stop mid-epoch, between two checkpoints
    worst = max(float(np.abs(straight.model.params[k] - resumed.model.params[k]).max())
                for k in straight.model.params)
    print(f"max |param difference| after 12 steps, straight vs stopped at 7 and resumed: {worst}")
    assert worst == 0.0
    assert straight.state["losses"] == resumed.state["losses"]
    assert straight.state["evals"] == resumed.state["evals"]
    assert straight.optimizer.step_count == resumed.optimizer.step_count == 12


def test_resume_refuses_other_settings(tmp_path):
    _run(tmp_path, "x", 0, steps=2)
    seqs = toy_sequences()
    other = P.mlm_trainer(P.PretrainConfig(**{**TINY, "lr": 0.5}, steps=2), seqs,
                          P.heldout_eval_set(seqs[:16], SP, 7), SP)
    with pytest.raises(ValueError, match="lr=0.01"):
        other.load(str(tmp_path / "x.npz"))


def test_same_seed_same_run_other_seed_other_run(tmp_path):
    a, b = _run(tmp_path, "a", 0, steps=4), _run(tmp_path, "b", 0, steps=4)
    c = _run(tmp_path, "c", 0, steps=4, seed=1)
    assert a.state["losses"] == b.state["losses"]
    assert a.state["losses"] != c.state["losses"]


def test_checkpoint_write_is_atomic(tmp_path, monkeypatch):
    seqs = toy_sequences()
    ev = P.heldout_eval_set(seqs[:4], SP, 7)
    tr = P.mlm_trainer(P.PretrainConfig(**TINY, steps=3), seqs, ev, SP)
    path = str(tmp_path / "checkpoint.npz")
    tr.train_step()
    tr.save(path)
    good = Path(path).read_bytes()

    def broken_savez(f, **arrays):                # dies halfway through writing
        f.write(b"PK\x03\x04 half a file")
        raise OSError("disk full")
    monkeypatch.setattr(P.np, "savez", broken_savez)
    tr.train_step()
    with pytest.raises(OSError, match="disk full"):
        tr.save(path)
    assert Path(path).read_bytes() == good         # the old checkpoint is untouched
    monkeypatch.undo()
    tr2 = P.mlm_trainer(P.PretrainConfig(**TINY, steps=3), seqs, ev, SP)
    tr2.load(path)
    assert sorted(os.listdir(tmp_path)) == ["checkpoint.npz"]     # no temporary file left behind
    assert tr2.state["step"] == 1


def test_distillation_feeds_teacher_logits_at_the_masked_positions():
    seqs = toy_sequences()
    ev = P.heldout_eval_set(seqs[:8], SP, 7)
    cfg = P.PretrainConfig(**TINY, steps=2, eval_every=0)
    teacher = P.mlm_trainer(cfg, seqs, ev, SP).model.eval()
    tr = P.mlm_trainer(dataclasses.replace(cfg, seed=3), seqs, ev, SP, teacher=teacher)
    assert tr.step_fn.mlm_weight == 0.1             # Bort: 0.1 MLM + 0.5 KD, T = 2
    # the step's loss, recomputed by hand from the same batch, masks and dropout draws
    batch = tr.epoch_batches(tr.state["epoch"])[tr.state["batch"]]
    mask_state = tr.rngs["mask"].bit_generator.state
    drop_state = tr.model.dropout_rng.bit_generator.state
    params = {k: v.copy() for k, v in tr.model.params.items()}
    loss = tr.train_step()
    ids, att = P.trim(seqs[batch], SP.pad)
    rng = np.random.default_rng()
    rng.bit_generator.state = mask_state
    masked, labels = P.mask_tokens(ids, att, SP, rng, cfg.mask_prob)
    student = BortForMaskedLM(tr.model.config, params).train()
    student.dropout_rng.bit_generator.state = drop_state
    t_logits = teacher(masked, att, positions=labels != -100)
    want, _ = student.loss_and_grads(masked, labels, att, teacher_logits=t_logits, mlm_weight=0.1,
                                     distill_weight=0.5, temperature=2.0)
    assert loss == want


# ------------------------------------------------------------------------------------ command line


def test_help_lists_every_config_field(capsys):
    with pytest.raises(SystemExit):
        P.build_parser().parse_args(["--help"])
    text = capsys.readouterr().out
    for f in dataclasses.fields(P.PretrainConfig):
        assert "--" + f.name.replace("_", "-") in text, f.name


def test_flags_override_the_config():
    cfg = P.config_from_args(["--steps", "7", "--hidden-size", "64", "--no-resume", "--mlm-weight", "0.3"])
    assert (cfg.steps, cfg.hidden_size, cfg.resume, cfg.mlm_weight) == (7, 64, False, 0.3)
    assert cfg.batch_size == P.PretrainConfig().batch_size


def _maps_a_file(a: np.ndarray) -> bool:
    while a is not None:
        if isinstance(a, (np.memmap, mmap.mmap)):
            return True
        a = getattr(a, "base", None)
    return False


def test_init_starts_from_a_model_folder_and_refuses_another_shape(tmp_path):
    seqs = toy_sequences()
    cfg = P.PretrainConfig(**TINY, steps=3, eval_every=0, checkpoint_every=0)
    trained = P.mlm_trainer(cfg, seqs, P.heldout_eval_set(seqs[:16], SP, 7), SP)
    trained.run(log=lambda m: None)
    trained.model.save_pretrained(tmp_path / "m")
    model, record = P.initial_model(dataclasses.replace(cfg, init=str(tmp_path / "m")), SP.vocab_size, SP.pad)
    assert not any(_maps_a_file(v) for v in model.params.values())      # a long run never reads a mapped file
    assert all(np.array_equal(model.params[k], trained.model.params[k]) for k in trained.model.params)
    assert record["model"] == str(tmp_path / "m") and len(record["model_safetensors_sha256"]) == 64
    assert model.config.hidden_dropout_prob == cfg.hidden_dropout_prob
    wider = dataclasses.replace(cfg, init=str(tmp_path / "m"), hidden_size=64)
    with pytest.raises(SystemExit, match="hidden_size=32, this run has hidden_size=64; pass --hidden-size 32"):
        P.initial_model(wider, SP.vocab_size, SP.pad)


@pytest.mark.parametrize("argv,words", [
    (["--steps", "0"], "--steps must be positive, got 0 (0 steps would export an untrained model)"),
    (["--steps", "many"], "invalid int value"),
    (["--warmup", "2"], "--warmup must be in [0, 1]"),
    (["--seq-len", "512"], "--seq-len must be in [3, --max-position-embeddings = 128]"),
    (["--hidden-size", "100"], "hidden_size (100) must be divisible by num_attention_heads (8)"),
    (["--ship-dtype", "int8"], "--ship-dtype must be float16 or float32"),
])
def test_bad_arguments_give_an_error_line_and_status_2(capsys, argv, words):
    with pytest.raises(SystemExit) as e:
        P.main(argv)
    err = capsys.readouterr().err
    assert e.value.code == 2 and "error:" in err and words in err and "Traceback" not in err


def test_the_command_line_as_a_subprocess_refuses_steps_0(tmp_path):
    r = subprocess.run([sys.executable, "-m", "minibort.pretrain", "--steps", "0", "--out", str(tmp_path / "o")],
                       capture_output=True, text=True, cwd=tmp_path, check=False)
    assert r.returncode == 2 and "error: --steps must be positive" in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "o").exists()                                # nothing was written


def test_recorded_command_has_no_machine_paths():
    cmd = P.portable_command("python -m minibort.pretrain",
                             ["--out", "/home/me/runs/x", "--corpus=/data/corpus", "--tokenizer", "tok",
                              "--steps", "10", "--ship", "../weights/bort-tiny"], P.PATH_FIELDS)
    assert cmd == ("python -m minibort.pretrain --out OUT --corpus=CORPUS --tokenizer tok --steps 10 "
                   "--ship SHIP")


# ------------------------------------------------------------------------------------ user corpus, one --out


def _user_corpus(folder: Path) -> dict[str, bytes]:
    """The user's own train.txt and heldout.txt: documents of paragraphs, blank lines between documents."""
    words = ["the", "loop", "reads", "a", "file", "and", "writes", "each", "line", "to", "the", "output", "after", "it", "strips", "the", "spaces"]
    rng = np.random.default_rng(0)

    def text(n_docs):
        return "".join("\n".join(" ".join(rng.choice(words, 12)) for _ in range(4)) + "\n\n"
                       for _ in range(n_docs)).encode()
    folder.mkdir()
    files = {"train.txt": text(24), "heldout.txt": text(4)}
    for name, data in files.items():
        (folder / name).write_bytes(data)
    return files


USER_RUN = {"hidden_size": 16, "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 16,
            "max_position_embeddings": 32, "seq_len": 32, "batch_size": 4, "vocab_size": 280, "steps": 2,
            "eval_every": 0, "checkpoint_every": 0, "progress": False}


def test_a_folder_of_the_users_text_is_read_as_their_corpus_and_left_untouched(tmp_path):
    files = _user_corpus(tmp_path / "mine")
    res = P.pretrain(P.PretrainConfig(**USER_RUN, corpus=str(tmp_path / "mine"), out=str(tmp_path / "out")), [])
    assert res["finished"]
    assert sorted(p.name for p in (tmp_path / "mine").iterdir()) == ["heldout.txt", "train.txt"]
    for name, data in files.items():
        assert (tmp_path / "mine" / name).read_bytes() == data          # not rebuilt, not rewritten
    record = res["training"]["corpus"]
    assert record["files"]["train.txt"]["sha256"] == hashlib.sha256(files["train.txt"]).hexdigest()
    assert record["python_version"] is None
    assert {"vocab.json", "merges.txt", "model.safetensors"} <= set(os.listdir(res["out_dir"]))
    assert not (tmp_path / "out" / ".lock").exists()


def test_salient_masking_reaches_the_training_batches_not_the_heldout_masks(tmp_path, monkeypatch):
    _user_corpus(tmp_path / "mine")
    seen = []

    def spy(ids, att, sp, rng, mask_prob=0.15):
        seen.append(np.ndim(mask_prob))
        return real(ids, att, sp, rng, mask_prob)
    real = P.mask_tokens
    monkeypatch.setattr(P, "mask_tokens", spy)                   # the training step's calls
    monkeypatch.setattr("minibort.masking.mask_tokens", spy)     # heldout_eval_set's call
    res = P.pretrain(P.PretrainConfig(**USER_RUN, corpus=str(tmp_path / "mine"), out=str(tmp_path / "out"),
                                      salient_mask_prob=0.5), [])
    assert seen == [0, 1, 1]                     # the held-out masks: --mask-prob; 2 steps: the table
    rec = res["training"]["salient_masking"]
    assert rec["prob"] == 0.5 and rec["ids"] > 0 and "and" in rec["words"]   # "and": a keyword of the text


def test_a_folder_of_other_files_is_refused_not_overwritten(tmp_path, capsys):
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "train.txt").write_text("my only copy")
    with pytest.raises(TrainingError, match="not a corpus minibort can read.*train.txt and heldout.txt"):
        P.corpus_folder(P.PretrainConfig(corpus=str(tmp_path / "notes")))
    assert P.main(["--corpus", str(tmp_path / "notes"), "--out", str(tmp_path / "o"), "--tokenizer", ""]) == 2
    assert "error: --corpus" in capsys.readouterr().err
    assert (tmp_path / "notes" / "train.txt").read_text() == "my only copy"


def test_resume_compares_the_data_not_the_path(tmp_path):
    """Other text behind the same --corpus path: the checkpoint is refused, naming the digest."""
    _user_corpus(tmp_path / "mine")
    cfg = P.PretrainConfig(**{**USER_RUN, "steps": 3, "stop_after": 1}, corpus=str(tmp_path / "mine"),
                           out=str(tmp_path / "out"), tokenizer="")
    assert not P.pretrain(cfg, [])["finished"]
    train = tmp_path / "mine" / "train.txt"
    train.write_bytes(train.read_bytes().replace(b"loop", b"pool"))
    with pytest.raises(TrainingError, match="corpus_sha256"):
        P.pretrain(cfg, [])


def test_two_runs_on_one_out_cannot_collide(tmp_path):
    with run_lock(tmp_path / "out"), pytest.raises(TrainingError, match="in use by another run"):
        P.pretrain(P.PretrainConfig(**USER_RUN, out=str(tmp_path / "out")), [])


# ------------------------------------------------------------------------------------ the shipped model


def _shipped() -> str:
    import minibort.weights
    return os.path.join(minibort.weights.__path__[0], "bort-tiny")


@pytest.fixture(scope="module")
def shipped():
    folder = _shipped()
    if not os.path.exists(os.path.join(folder, "training.json")):
        pytest.skip("weights/bort-tiny has not been trained yet")
    with open(os.path.join(folder, "training.json"), encoding="utf-8") as f:
        record = json.load(f)
    return folder, record


def test_shipped_model_matches_its_training_record(shipped):
    folder, record = shipped
    model = BortForMaskedLM.from_pretrained(folder)
    with np.load(os.path.join(folder, record["heldout"]["masks_file"])) as z:
        ev = {k: z[k] for k in z.files}
    got = P.evaluate(model, ev)
    want = record["heldout"]
    n = want["masked_tokens"]
    print(f"held-out accuracy {got['accuracy']:.6f} (record {want['accuracy']:.6f}), perplexity "
          f"{got['perplexity']:.5f} (record {want['perplexity']:.5f}), {n} masks")
    assert got["masked_tokens"] == n
    # Only float rounding may differ: at most one argmax flip in a thousand masks, perplexity to 1e-5.
    assert abs(got["accuracy"] - want["accuracy"]) <= max(1, n // 1000) / n
    assert got["perplexity"] == pytest.approx(want["perplexity"], rel=1e-5)
    # and it beats both baselines recorded beside it
    assert got["accuracy"] > record["baselines"]["most_frequent"]["accuracy"]
    assert got["perplexity"] < record["baselines"]["unigram"]["perplexity"]


def test_shipped_heldout_masks_come_from_the_corpus(shipped, tmp_path):
    """Rebuild the held-out split, tokenize, pack and mask it: the shipped masks must come out."""
    folder, record = shipped
    if record["corpus"]["python_version"] != sys.version.split()[0]:
        pytest.skip(f"the corpus was built by Python {record['corpus']['python_version']}")
    from minibort import corpus
    from minibort.tokenizer import Tokenizer
    docs = None                                           # the first bort-tiny: the stdlib alone
    if "python-docs" in record["corpus"].get("sources", {}):
        docs = corpus.docs_folder()
        if docs is None:
            pytest.skip(f"bort-tiny was trained with Python's documentation ({corpus.docs_package()} "
                        "is not installed)")
    rec = corpus.build(str(tmp_path), docs=docs)
    assert rec["sha256"] == record["corpus"]["sha256"]
    tok = Tokenizer.from_pretrained(folder)
    docs = [[np.array(tok.encode(p, add_special_tokens=False)) for p in d]
            for d in corpus.read_split(str(tmp_path / "heldout.txt"))]
    cfg = record["config"]
    ev = P.heldout_eval_set(P.pack(docs, cfg["seq_len"], P.specials_of(tok)), P.specials_of(tok),
                            cfg["eval_seed"], cfg["mask_prob"])
    with np.load(os.path.join(folder, "heldout_eval.npz")) as z:
        for k in ev:
            assert (z[k] == ev[k]).all(), k
