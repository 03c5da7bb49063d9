"""Computing only some positions in the last block (`last_rows`) gives the full computation's numbers.

The classifier reads <s> alone and the masked LM the masked positions alone, so their last block
makes queries only there (minibort/model.py, `encoder_forward`). These tests compare, in float64,
the shortcut with the full block followed by picking the rows: forward outputs and every gradient.
"""

from __future__ import annotations

import numpy as np
import pytest
from helpers import perturb_layernorm_and_biases

from minibort import BortConfig, BortForMaskedLM, BortForSequenceClassification
from minibort import layers as L
from minibort.inputs import labelled_rows
from minibort.model import encoder_backward, encoder_forward

CFG = BortConfig(vocab_size=40, hidden_size=16, num_hidden_layers=2, num_attention_heads=4,
                 intermediate_size=12, max_position_embeddings=12, num_labels=3)


def _weights(rng, H):
    return [rng.standard_normal(s) * 0.3 for s in [(H, H), (H,)] * 3]


@pytest.mark.parametrize("reference", [False, True])
def test_self_attention_rows_match_the_full_layer(reference):
    rng = np.random.default_rng(0)
    B, T, H, N = 3, 7, 16, 4
    x = rng.standard_normal((B, T, H))
    W = _weights(rng, H)
    mask = np.ones((B, T))
    mask[1, 5:] = 0                                                   # padding in one sequence
    bias = L.attention_mask_bias(mask, np.float64)
    rows = np.array([[0, 3], [4, 4], [6, 1]])                        # unsorted, and a repeat
    full, _, c_full = L.self_attention(x, *W, bias, N, reference=reference)
    part, _, c_part = L.self_attention(x, *W, bias, N, reference=reference, rows=rows)
    picked = full[np.arange(B)[:, None], rows]
    np.testing.assert_allclose(part, picked, rtol=0, atol=1e-13)

    dpart = rng.standard_normal(part.shape)
    got = L.self_attention_backward(dpart, c_part)
    dfull = L.gather_rows_backward(dpart, (rows, full.shape))        # the same gradient, scattered
    want = L.self_attention_backward(dfull, c_full)
    for g, w in zip(got, want):
        assert g.shape == w.shape
        np.testing.assert_allclose(g, w, rtol=0, atol=1e-12)


def test_gather_rows_backward_sums_repeats():
    dy = np.arange(12.0).reshape(1, 3, 4)
    dx = L.gather_rows_backward(dy, (np.array([[2, 0, 2]]), (1, 3, 4)))
    np.testing.assert_array_equal(dx[0, 2], dy[0, 0] + dy[0, 2])
    np.testing.assert_array_equal(dx[0, 0], dy[0, 1])
    np.testing.assert_array_equal(dx[0, 1], 0.0)


def test_labelled_rows_keep_row_major_order():
    sel = np.array([[0, 1, 0, 1, 1], [0, 0, 0, 0, 1], [0, 0, 0, 0, 0]], dtype=bool)
    rows, picked = labelled_rows(sel)
    assert rows.shape == picked.shape == (3, 3)
    np.testing.assert_array_equal(rows, [[1, 3, 4], [4, 0, 0], [0, 0, 0]])
    h = np.arange(3 * 5).reshape(3, 5)
    np.testing.assert_array_equal(h[np.arange(3)[:, None], rows][picked], h[sel])


@pytest.mark.parametrize("kind", ["cls", "mlm"])
def test_encoder_last_rows_match_the_full_encoder(kind):
    """Forward and every parameter's gradient, with the last block cut to the rows a head reads."""
    rng = np.random.default_rng(1)
    model = BortForMaskedLM(CFG, dtype=np.float64, seed=3)
    P = perturb_layernorm_and_biases(model.params, rng)
    B, T = 3, 9
    ids = rng.integers(3, CFG.vocab_size, size=(B, T))
    mask = np.ones((B, T), dtype=np.int64)
    mask[2, 6:] = 0
    if kind == "cls":
        rows, picked = np.zeros((B, 1), np.intp), np.ones((B, 1), bool)
    else:
        sel = rng.random((B, T)) < 0.3
        sel[0, 2] = True
        sel[1] = False                                                 # a sequence with nothing masked
        rows, picked = labelled_rows(sel)
    h_full, c_full, _ = encoder_forward(P, "bert.", CFG, ids, mask)
    h_part, c_part, _ = encoder_forward(P, "bert.", CFG, ids, mask, last_rows=rows)
    assert h_part.shape == (B, rows.shape[1], CFG.hidden_size)
    want_h = h_full[np.arange(B)[:, None], rows][picked]
    np.testing.assert_allclose(h_part[picked], want_h, rtol=0, atol=1e-12)

    dsel = rng.standard_normal(want_h.shape)                          # a head's gradient at the rows it read
    dh_part = np.zeros_like(h_part)
    dh_part[picked] = dsel
    dh_full = L.gather_rows_backward(dh_part, (rows, h_full.shape))
    got = encoder_backward(dh_part, c_part, "bert.", CFG)
    want = encoder_backward(dh_full, c_full, "bert.", CFG)
    assert got.keys() == want.keys()
    for name in want:
        np.testing.assert_allclose(got[name], want[name], rtol=0, atol=1e-11, err_msg=name)


def test_models_use_the_shortcut_and_agree_with_their_full_forward():
    """The classifier's logits equal its head applied to the full encoder's <s>; the MLM's loss
    equals the cross-entropy of the full logits at the labelled positions."""
    rng = np.random.default_rng(2)
    ids = rng.integers(3, CFG.vocab_size, size=(2, 8))
    mask = np.ones_like(ids)
    mask[1, 6:] = 0
    cls = BortForSequenceClassification(CFG, dtype=np.float64, seed=4)
    h_full, _, _ = encoder_forward(cls.params, "bert.", CFG, ids, mask, keep_cache=False)
    want, _ = cls._head(h_full)
    np.testing.assert_allclose(cls(ids, mask), want, rtol=0, atol=1e-12)

    mlm = BortForMaskedLM(CFG, dtype=np.float64, seed=4)
    labels = np.full(ids.shape, -100)
    labels[0, [1, 4, 5]] = [7, 8, 9]
    labels[1, 2] = 10
    logits = mlm(ids, mask)                                           # (B, T, V), every position in full
    sel = labels != -100
    want_loss, _ = L.cross_entropy(logits[sel], labels[sel])
    loss, _ = mlm.loss_and_grads(ids, labels, mask)
    assert abs(loss - want_loss) < 1e-12
