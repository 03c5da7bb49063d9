"""Model-level behaviour that needs only NumPy: shapes, dtypes, bad input, positions, padding."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from helpers import close, perturb_layernorm_and_biases

from minibort import BortConfig, BortForMaskedLM, BortForSequenceClassification, BortModel
from minibort.model import InputError

CFG = BortConfig(vocab_size=50, hidden_size=16, num_hidden_layers=2, num_attention_heads=4,
                 intermediate_size=12, max_position_embeddings=20, num_labels=3)


@pytest.fixture(scope="module")
def models():
    return BortModel(CFG, seed=1), BortForMaskedLM(CFG, seed=1), BortForSequenceClassification(CFG, seed=1)


def test_shapes_and_1d_input(models):
    enc, mlm, cls = models
    ids = np.array([[0, 5, 6, 2], [0, 7, 2, 1]])
    assert enc(ids).shape == (2, 4, 16) and enc(ids[0]).shape == (4, 16)
    assert mlm(ids).shape == (2, 4, 50) and mlm(ids[0]).shape == (4, 50)
    assert cls(ids).shape == (2, 3) and cls(ids[0]).shape == (3,)
    np.testing.assert_allclose(enc(ids[0]), enc(ids)[0], atol=1e-6)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_no_silent_upcast(dtype):
    m = BortForMaskedLM(CFG, dtype=dtype)
    ids = np.array([[0, 5, 6, 2]])
    assert m(ids).dtype == dtype
    assert all(v.dtype == dtype for v in m.params.values())
    _loss, grads = m.loss_and_grads(ids, np.array([[-100, 5, -100, -100]]))
    assert all(g.dtype == dtype for g in grads.values()), {k: g.dtype for k, g in grads.items() if g.dtype != dtype}


def test_params_are_transformers_names(models):
    enc, mlm, cls = models
    assert "embeddings.word_embeddings.weight" in enc.params
    assert "encoder.layer.1.output.LayerNorm.bias" in enc.params
    assert "bert.embeddings.word_embeddings.weight" in mlm.params and "cls.predictions.bias" in mlm.params
    assert "cls.predictions.decoder.weight" not in mlm.params          # tied: the word embeddings
    assert {"bert.pooler.dense.weight", "classifier.weight"} <= set(cls.params)


def test_positions_select_logits(models):
    _, mlm, _ = models
    ids = np.array([[0, 5, 6, 2], [0, 7, 8, 2]])
    full = mlm(ids)
    sel = np.zeros(ids.shape, bool)
    sel[0, 1] = sel[1, 2] = True
    np.testing.assert_allclose(mlm(ids, positions=sel), full[sel], atol=1e-6)
    idx = np.array([[1, 3], [2, 0]])
    np.testing.assert_allclose(mlm(ids, positions=idx), full[np.arange(2)[:, None], idx], atol=1e-6)


def test_padding_does_not_change_real_positions(models):
    enc, _, _ = models
    short = enc(np.array([[0, 5, 6, 2]]))
    padded = enc(np.array([[0, 5, 6, 2, 1, 1, 1]]), np.array([[1, 1, 1, 1, 0, 0, 0]]))
    np.testing.assert_allclose(padded[:, :4], short, atol=1e-6)


@pytest.mark.parametrize("ids,mask,words", [
    (np.array([[0, 50]]), None, "outside the vocabulary"),
    (np.array([[-1, 3]]), None, "outside the vocabulary"),
    (np.zeros((1, 21), int), None, "max_position_embeddings"),
    (np.array([[0, 3]]), np.array([[1, 1, 1]]), "attention_mask has shape"),
    (np.array([[0.0, 3.0]]), None, "integer"),
    (np.array(["a", "b"]), None, "integer"),
    (np.zeros((0, 4), int), None, "empty"),
    (np.zeros((2, 0), int), None, "empty"),
    (np.zeros((2, 2, 2), int), None, "shape"),
])
def test_bad_input_is_refused(models, ids, mask, words):
    for m in models:
        with pytest.raises(InputError, match=words):
            m(ids, mask)


def test_eval_is_deterministic_and_train_uses_dropout():
    m = BortModel(CFG, seed=3)
    ids = np.array([[0, 5, 6, 2]])
    np.testing.assert_array_equal(m(ids), m(ids))
    m.train(seed=0)
    a = m(ids)
    m.train(seed=0)
    np.testing.assert_array_equal(a, m(ids))                            # seeded: reproducible
    assert not np.allclose(a, m.eval()(ids))                            # dropout changed something


# ------------------------------------------------------------------------------------ train / eval modes


def test_eval_then_train_continues_the_dropout_stream():
    """train()/eval() flip a flag; only seed()/train(seed=) restart the generator."""
    ids = np.array([[0, 5, 6, 2, 7, 8]])
    cfg = dataclasses.replace(CFG, hidden_dropout_prob=0.3)
    m, straight = BortModel(cfg, seed=3), BortModel(cfg, seed=3)
    m.train(seed=0)
    first = m(ids)
    m.eval()
    m(ids)                                                              # evaluation draws nothing
    second = m.train()(ids)
    straight.train(seed=0)
    np.testing.assert_array_equal(first, straight(ids))
    np.testing.assert_array_equal(second, straight(ids))                # the same stream, continued
    assert not np.allclose(first, second)
    m.seed(0)
    np.testing.assert_array_equal(m(ids), first)                        # seed() restarts it


def test_repr_names_class_shape_and_size(models):
    text = repr(models[1])
    print(text)
    assert text.startswith("BortForMaskedLM(") and "2 layers, hidden 16, 4 heads" in text
    assert f"{models[1].num_parameters:,} parameters in float32" in text


# ------------------------------------------------------------------------------------ attention mask values


@pytest.mark.parametrize("bad", [3, np.nan, np.inf, 255, 2, -1, 0.5])
def test_attention_mask_values_other_than_0_1_are_refused(models, bad):
    ids = np.array([[0, 5, 6, 2]])
    mask = np.array([[1.0, 1.0, bad, 0.0]])
    for m in models:
        with pytest.raises(InputError, match=r"0/1 values .* at \(0, 2\)"):
            m(ids, mask if not float(bad).is_integer() else mask.astype(np.int64))


def test_attention_mask_of_bools_ints_or_floats_is_accepted(models):
    enc = models[0]
    ids = np.array([[0, 5, 6, 2]])
    ref = enc(ids, np.array([[1, 1, 1, 0]]))
    for mask in (np.array([[True, True, True, False]]), np.array([[1.0, 1.0, 1.0, 0.0]], np.float32)):
        np.testing.assert_array_equal(enc(ids, mask), ref)


# ------------------------------------------------------------------------------------ memory estimate


def test_a_call_over_the_memory_limit_is_refused_up_front(models, monkeypatch):
    from minibort.model import estimate_memory
    _, mlm, _ = models
    ids = np.ones((4, 20), np.int64)
    full = estimate_memory(CFG, 4, 20, np.float32, logit_rows=4 * 20)
    few = estimate_memory(CFG, 4, 20, np.float32, logit_rows=4)
    assert few < full
    monkeypatch.setenv("MINIBORT_MEMORY_LIMIT", str(full - 1))
    with pytest.raises(InputError, match=r"GiB .* smaller batch .* positions="):
        mlm(ids)
    sel = np.zeros(ids.shape, bool)
    sel[:, 3] = True
    assert mlm(ids, positions=sel).shape == (4, 50)                     # the fix the message names
    monkeypatch.setenv("MINIBORT_MEMORY_LIMIT", str(full))
    assert mlm(ids).shape == (4, 20, 50)                                # exactly at the limit: allowed


def test_memory_limit_reads_sizes_and_refuses_nonsense(monkeypatch):
    from minibort.model import memory_limit
    monkeypatch.setenv("MINIBORT_MEMORY_LIMIT", "8G")
    assert memory_limit() == 8 * 2**30
    monkeypatch.setenv("MINIBORT_MEMORY_LIMIT", "lots")
    with pytest.raises(InputError, match="MINIBORT_MEMORY_LIMIT"):
        memory_limit()
    monkeypatch.delenv("MINIBORT_MEMORY_LIMIT")
    assert memory_limit() > 0                                           # a share of this machine's memory


def test_training_estimate_counts_every_block_kept_for_the_backward():
    from minibort.model import estimate_memory
    inference = estimate_memory(CFG, 8, 16, np.float64)
    training = estimate_memory(CFG, 8, 16, np.float64, training=True)
    one = 8 * CFG.num_attention_heads * 16 * 16 * 8                     # one (B, N, T, T) float64 array
    assert inference == 2 * one
    assert training == (2 + 2 * CFG.num_hidden_layers) * one            # probabilities and their dropout


# ------------------------------------------------------------------------------------ saving


def test_save_pretrained_with_a_tokenizer_writes_a_complete_folder(models, tmp_path):
    from minibort.bpe_train import train_bpe
    from minibort.tokenizer import Tokenizer
    tok = train_bpe(["a small text to learn a few merges from", "another small text"] * 3, 270)
    _, mlm, _ = models
    mlm.save_pretrained(tmp_path, tokenizer=tok)
    assert {"config.json", "model.safetensors", "vocab.json", "merges.txt"} <= {p.name for p in tmp_path.iterdir()}
    again = Tokenizer.from_pretrained(tmp_path)
    assert again.encode("a small text") == tok.encode("a small text")


def test_save_and_load_keep_every_weight(tmp_path):
    """LayerNorm and biases moved off 1/0 first: a weight lost on the way would change the logits."""
    m = BortForMaskedLM(CFG, seed=2)
    perturb_layernorm_and_biases(m.params, np.random.default_rng(0))
    m.save_pretrained(tmp_path)
    again = BortForMaskedLM.from_pretrained(tmp_path)
    ids = np.array([[0, 5, 6, 2, 9], [0, 7, 2, 1, 1]])
    mask = (ids != 1).astype(np.int64)
    close("logits after save_pretrained / from_pretrained", again(ids, mask), m(ids, mask), atol=0.0)
