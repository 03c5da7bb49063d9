"""minibort.generate: probabilities are the model's own softmax, mask-predict is seeded, and the
command line works (text, --json, stdin, hub ids, the original release) and fails clearly."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time

import numpy as np
import pytest

from minibort import generate as G
from minibort.checkpoint import embedded_dir

FOLDER = str(embedded_dir("bort-tiny"))
pytestmark = pytest.mark.skipif(not os.path.exists(os.path.join(FOLDER, "model.safetensors")),
                                reason="weights/bort-tiny is not there yet")


@pytest.fixture(scope="module")
def loaded():
    model, tok, _ = G.load_model("bort-tiny")
    return model, tok


def cli(*args: str, stdin: str | None = None, env: dict | None = None, timeout: float = 60):
    return subprocess.run([sys.executable, "-m", "minibort.generate", *args], input=stdin, check=False,
                          capture_output=True, text=True, timeout=timeout, env={**os.environ, **(env or {})})


# ------------------------------------------------------------------------------------ the numbers


def test_probabilities_are_a_softmax_over_the_models_logits(loaded):
    model, tok = loaded
    ids = tok.encode("The <mask> statement leaves a loop early.")
    pos = ids.index(tok.mask_token_id)
    r = G.fill_masks(model, tok, ids, top_k=10)
    logits = model(np.array([ids]))[0, pos].astype(np.float64)          # (V,) every position computed
    p = np.exp(logits - logits.max())
    p /= p.sum()
    got = [(c["token_id"], c["probability"]) for c in r["masks"][0]["candidates"]]
    worst = max(abs(prob - p[i]) for i, prob in got)
    print(f"max |generate's probability - softmax(logits)|: {worst:.2e} (tolerance 1e-6)")
    assert worst < 1e-6
    # they are the 10 most probable tokens that are not special tokens, in order
    special = {tok.bos_token_id, tok.pad_token_id, tok.eos_token_id, tok.unk_token_id, tok.mask_token_id}
    want = [int(i) for i in np.argsort(-p, kind="stable") if int(i) not in special][:10]
    assert [i for i, _ in got] == want
    assert r["masks"][0]["candidates"][0]["token"] == tok.decode([want[0]])


def test_several_masks_are_filled_most_confident_first(loaded):
    model, tok = loaded
    ids = tok.encode("Return a <mask> of the <mask> in the list.")
    masks = [i for i, t in enumerate(ids) if t == tok.mask_token_id]
    r = G.fill_masks(model, tok, ids, top_k=3)
    first = min(r["masks"], key=lambda m: m["order"])
    # with both masks open, the one filled first has the larger top probability
    logits = model(np.array([ids]), positions=np.array([masks]))[0]
    top = G.softmax64(logits)
    top[:, [tok.bos_token_id, tok.pad_token_id, tok.eos_token_id, tok.unk_token_id, tok.mask_token_id]] = 0
    assert masks[int(top.max(axis=1).argmax())] == first["position"]
    assert sorted(m["order"] for m in r["masks"]) == [1, 2]
    assert tok.mask_token_id not in r["ids"]
    assert r["ids"][first["position"]] == first["candidates"][0]["token_id"]


def test_mask_predict_same_seed_same_text(loaded):
    model, tok = loaded
    ids = tok.encode("Return the number of")
    x = ids[:-1] + [tok.mask_token_id] * 8 + ids[-1:]
    pos = list(range(len(ids) - 1, len(ids) + 7))
    a = G.mask_predict(model, tok, x, pos, steps=4, temperature=1.0, top_k=20, seed=3)
    b = G.mask_predict(model, tok, x, pos, steps=4, temperature=1.0, top_k=20, seed=3)
    others = {tuple(G.mask_predict(model, tok, x, pos, steps=4, temperature=1.0, top_k=20, seed=s))
              for s in range(4, 6)}
    assert a == b
    assert len(others | {tuple(a)}) > 1                               # the seed matters when sampling
    assert a[:len(ids) - 1] == ids[:-1] and a[-1] == ids[-1]          # the prompt is kept
    assert tok.mask_token_id not in a
    g0 = G.mask_predict(model, tok, x, pos, steps=4, temperature=0.0, top_k=5, seed=0)
    g1 = G.mask_predict(model, tok, x, pos, steps=4, temperature=0.0, top_k=5, seed=1)
    assert g0 == g1                                                   # greedy ignores the seed


# ------------------------------------------------------------------------------------ command line


def test_cli_fill_text_and_json():
    t0 = time.time()
    r = cli("The <mask> statement leaves a loop early.")
    wall = time.time() - t0
    assert r.returncode == 0, r.stderr
    lines = r.stdout.strip().split("\n")
    assert lines[0] == "<mask> 1:" and len(lines) == 1 + 5 + 1
    assert lines[-1].startswith("The") and lines[-1].endswith("statement leaves a loop early.")
    print(f"mask fill in a fresh process: {wall:.2f} s wall\n{r.stdout}")
    j = cli("The <mask> statement leaves a loop early.", "--json", "--top-k", "3")
    assert j.returncode == 0, j.stderr
    out = json.loads(j.stdout)
    assert out["mode"] == "fill" and out["model"] == "bort-tiny"
    probs = [c["probability"] for c in out["masks"][0]["candidates"]]
    assert len(probs) == 3 and probs == sorted(probs, reverse=True) and 0 < sum(probs) <= 1
    assert out["text"] == lines[-1]


def test_cli_generate_is_seeded_and_reads_stdin():
    a = cli("--length", "6", "--seed", "1", "--json", stdin="Return the number of\n")
    b = cli("Return the number of", "--length", "6", "--seed", "1", "--json")
    assert a.returncode == 0 and b.returncode == 0, a.stderr + b.stderr
    ja, jb = json.loads(a.stdout), json.loads(b.stdout)
    assert ja["mode"] == "generate" and ja["text"] == jb["text"] and ja["text"].startswith("Return the number of")
    assert len(ja["token_ids"]) == len(jb["token_ids"])
    plain = cli("Return the number of", "--length", "6", "--seed", "1")
    assert plain.stdout.strip() == ja["text"]


@pytest.mark.parametrize("args, stdin, message", [
    ([""], None, "the prompt is empty"),
    ([], "   \n", "the prompt is empty"),
    (["word " * 200 + "<mask>"], None, "takes at most 128"),
    (["Some text", "--length", "200"], None, "takes at most 128"),
    (["no mask here"], None, "has no <mask>"),
    (["a <mask>", "--model", "no-such-model"], None, "unknown model 'no-such-model'"),
    (["a <mask>", "--model", "./no/such/folder"], None, "no such folder"),
])
def test_cli_errors_are_clear(args, stdin, message):
    r = cli(*args, stdin=stdin)
    assert r.returncode != 0
    assert message in r.stderr and r.stderr.startswith("error: ")
    assert "Traceback" not in r.stderr and r.stdout == ""


def test_cli_unreachable_hub_fails_fast_naming_the_url(tmp_path):
    t0 = time.time()
    r = cli("a <mask>", "--model", "amazon/bort",
            env={"HF_ENDPOINT": "http://127.0.0.1:9", "MINIBORT_CACHE": str(tmp_path)})
    wall = time.time() - t0
    assert r.returncode != 0 and "Traceback" not in r.stderr
    assert "http://127.0.0.1:9/amazon/bort/resolve/main/config.json" in r.stderr
    assert "offline" in r.stderr and "bort-tiny" in r.stderr
    assert wall < 10, wall


@pytest.fixture
def mirror(tmp_path):
    """A hub mirror served on 127.0.0.1 with bort-tiny's files under amazon/bort."""
    import functools
    import http.server
    import threading
    folder = tmp_path / "mirror" / "amazon" / "bort" / "resolve" / "main"
    folder.mkdir(parents=True)
    for name in ("config.json", "model.safetensors", "vocab.json", "merges.txt"):
        shutil.copy(os.path.join(FOLDER, name), folder / name)
    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    handler = functools.partial(Quiet, directory=str(tmp_path / "mirror"))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_cli_hub_id_downloads_once_and_notes_amazon_borts_untrained_head(tmp_path, mirror):
    env = {"HF_ENDPOINT": mirror, "MINIBORT_CACHE": str(tmp_path / "cache")}
    r = cli("The <mask> statement leaves a loop early.", "--model", "amazon/bort", env=env)
    assert r.returncode == 0, r.stderr
    assert r.stderr.count("never trained") == 1                       # printed once
    assert (tmp_path / "cache" / "amazon" / "bort" / "main" / "model.safetensors").exists()
    shutil.rmtree(tmp_path / "mirror")                                # now from the cache only
    again = cli("The <mask> statement leaves a loop early.", "--model", "amazon/bort", env=env)
    assert again.returncode == 0, again.stderr
    assert again.stdout == r.stdout


def test_cli_original_release_folder_restores_its_mlm_head(tmp_path):
    """A folder with bort.params (the MXNet format; here the small test fixture) loads with its own
    MLM head: no "newly initialised" warning, and the fill equals the model's own argmax."""
    fixture = os.path.join(os.path.dirname(__file__), "fixtures", "gluon")
    if not os.path.exists(os.path.join(fixture, "bort.params")):
        pytest.skip("no gluon fixture")
    from minibort import BortForMaskedLM, train_bpe
    from minibort.corpus import normalise
    folder = tmp_path / "original"
    folder.mkdir()
    shutil.copy(os.path.join(fixture, "bort.params"), folder / "bort.params")
    shutil.copy(os.path.join(fixture, "config.json"), folder / "config.json")
    vocab = json.loads((folder / "config.json").read_text())["vocab_size"]
    texts = normalise(G.__doc__) * 3
    tok = train_bpe(texts, vocab, out_dir=str(folder))                # a vocabulary of the fixture's size
    assert tok.vocab_size == vocab
    r = cli("a <mask> b", "--model", str(folder), "--json")
    assert r.returncode == 0, r.stderr
    assert "newly initialised" not in r.stderr
    model = BortForMaskedLM.from_pretrained(str(folder))
    ids = tok.encode("a <mask> b")
    logits = model(np.array([ids]))[0, ids.index(tok.mask_token_id)]
    out = json.loads(r.stdout)
    assert out["masks"][0]["candidates"][0]["probability"] == pytest.approx(
        float(G.softmax64(logits)[out["masks"][0]["candidates"][0]["token_id"]]), abs=1e-6)


def test_cli_non_utf8_stdin_is_a_clear_error():
    r = subprocess.run([sys.executable, "-m", "minibort.generate"], input=b"caf\xe9 <mask>\n",
                       capture_output=True, timeout=60, check=False)
    err = r.stderr.decode()
    assert r.returncode == 2 and err.startswith("error: ") and "not UTF-8" in err
    assert "Traceback" not in err


def test_top_k_beyond_the_vocabulary_lists_only_ordinary_tokens_in_order(loaded):
    model, tok = loaded
    ids = tok.encode("Return the <mask> of items in the list.")
    r = G.fill_masks(model, tok, ids, top_k=10 * tok.vocab_size)
    cands = r["masks"][0]["candidates"]
    assert len(cands) == tok.vocab_size - len(tok.all_special_ids)
    assert not {c["token_id"] for c in cands} & set(tok.all_special_ids)
    probs = [c["probability"] for c in cands]
    assert probs == sorted(probs, reverse=True)
