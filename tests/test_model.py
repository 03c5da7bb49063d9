"""Model-level behaviour that needs only NumPy: shapes, dtypes, bad input, positions, padding."""

from __future__ import annotations

import numpy as np
import pytest

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
