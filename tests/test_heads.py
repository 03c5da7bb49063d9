"""The sequence-classification heads: transformers' pooler head and Bort's original head
(`classifier_head="bort"`), classification and regression (num_labels=1, MSE).

NumPy tier: finite-difference gradient checks in evaluation and training mode (dropout masks fixed by
reseeding), a negative control the check must reject, Bort's U(-0.5, 0.5) initialisation, and a
save/load round trip. Reference tier: a "bort" head saved by minibort loads into transformers'
BertForSequenceClassification and gives the same logits and loss.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from test_gradcheck import check_model, perturb, small_problem

from minibort import BortConfig, BortForSequenceClassification


def tiny_config(**kw) -> BortConfig:
    d = {"vocab_size": 40, "hidden_size": 16, "num_hidden_layers": 2, "num_attention_heads": 4,
         "intermediate_size": 12, "max_position_embeddings": 16, "pad_token_id": 1}
    d.update(kw)
    return BortConfig(**d)


@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(small_problem())
def test_bort_head_gradients_match_finite_differences(problem):
    """Evaluation mode, then training mode with both head dropouts and the encoder's."""
    cfg, ids, mask, _, y, seed = problem
    rng = np.random.default_rng(seed)
    m = BortForSequenceClassification(cfg, dtype=np.float64, classifier_head="bort")
    perturb(m.params, rng, cfg.pad_token_id)
    assert check_model(m, lambda: m.loss_and_grads(ids, y, mask), ids, rng)
    assert check_model(m, lambda: m.loss_and_grads(ids, y, mask), ids, rng, train_seed=seed)


def test_regression_heads_gradients_and_mse():
    cfg = tiny_config(num_labels=1, hidden_dropout_prob=0.2)
    rng = np.random.default_rng(0)
    ids = rng.integers(2, 40, (3, 6))
    mask = np.ones((3, 6), np.int64)
    mask[1, 4:] = 0
    y = np.array([0.5, -1.0, 2.0])
    for head in ("pooler", "bort"):
        m = BortForSequenceClassification(cfg, dtype=np.float64, classifier_head=head)
        perturb(m.params, rng, 1)
        loss, _ = m.loss_and_grads(ids, y, mask)
        assert loss == pytest.approx(np.mean((m(ids, mask)[:, 0] - y) ** 2), abs=1e-14)
        assert check_model(m, lambda m=m: m.loss_and_grads(ids, y, mask), ids, rng)
        assert check_model(m, lambda m=m: m.loss_and_grads(ids, y, mask), ids, rng, train_seed=3)


def test_negative_control_a_head_backward_that_skips_the_first_dropout(monkeypatch):
    """The gradient check must reject a backward that forgets the dropout before the dense layer."""
    cfg = tiny_config(hidden_dropout_prob=0.3, attention_probs_dropout_prob=0.0)
    rng = np.random.default_rng(1)
    ids = rng.integers(2, 40, (4, 5))
    m = BortForSequenceClassification(cfg, dtype=np.float64, classifier_head="bort")
    perturb(m.params, rng, 1)
    y = np.array([0, 1, 1, 0])
    assert check_model(m, lambda: m.loss_and_grads(ids, y), ids, rng, train_seed=5)
    right = BortForSequenceClassification._head_backward

    def wrong(self, dlogits, cache, grads):
        return right(self, dlogits, (None,) + tuple(cache[1:]), grads)
    monkeypatch.setattr(BortForSequenceClassification, "_head_backward", wrong)
    assert not check_model(m, lambda: m.loss_and_grads(ids, y), ids, rng, train_seed=5)


def test_bort_head_initialisation_and_eval_equivalence_with_the_pooler_head():
    cfg = tiny_config(num_labels=3)
    b = BortForSequenceClassification(cfg, classifier_head="bort", seed=4, dtype=np.float64)
    for name in ("bert.pooler.dense.weight", "classifier.weight"):
        w = b.params[name]
        assert -0.5 <= w.min() and w.max() <= 0.5 and w.std() > 0.25     # U(-0.5, 0.5): std 0.289
    assert not b.params["classifier.bias"].any() and not b.params["bert.pooler.dense.bias"].any()
    assert b.config.extra["classifier_head"] == "bort"
    # The same weights in a pooler head give the same logits without dropout.
    p = BortForSequenceClassification(tiny_config(num_labels=3), {k: v.copy() for k, v in b.params.items()},
                                      dtype=np.float64)
    assert p.classifier_head == "pooler"
    ids = np.random.default_rng(0).integers(2, 40, (2, 7))
    np.testing.assert_array_equal(b(ids), p(ids))
    # In training they differ: the bort head drops out <s> before the dense layer.
    b.train(seed=0)
    p.train(seed=0)
    assert not np.allclose(b(ids), p(ids))


def test_given_head_weights_are_kept_and_unknown_heads_refused():
    cfg = tiny_config()
    src = BortForSequenceClassification(cfg, seed=1)
    sd = {k: v.copy() for k, v in src.params.items()}
    b = BortForSequenceClassification(cfg, sd, classifier_head="bort")
    np.testing.assert_array_equal(b.params["classifier.weight"], src.params["classifier.weight"])
    with pytest.raises(ValueError, match="classifier_head must be one of"):
        BortForSequenceClassification(cfg, classifier_head="mlp")


def test_save_and_load_keep_head_kind_and_labels(tmp_path):
    cfg = BortConfig.from_dict({**tiny_config(num_labels=2).to_dict(),
                                "id2label": {"0": "neg", "1": "pos"}, "label2id": {"neg": 0, "pos": 1}})
    m = BortForSequenceClassification(cfg, classifier_head="bort", seed=2)
    m.save_pretrained(tmp_path)
    back = BortForSequenceClassification.from_pretrained(tmp_path)
    assert back.classifier_head == "bort" and back.config.extra["id2label"] == {"0": "neg", "1": "pos"}
    ids = np.arange(2, 9)[None]
    np.testing.assert_array_equal(back(ids), m(ids))


def test_head_dropout_draws_from_the_model_generator_only():
    cfg = tiny_config(hidden_dropout_prob=0.5)
    ids = np.random.default_rng(0).integers(2, 40, (2, 5))
    a = BortForSequenceClassification(cfg, classifier_head="bort").train(seed=9)
    b = BortForSequenceClassification(cfg, classifier_head="bort").train(seed=9)
    np.testing.assert_array_equal(a(ids), b(ids))
    b.seed(10)
    assert not np.array_equal(a(ids), b(ids))


# ------------------------------------------------------------------------------------ reference tier


@pytest.mark.reference
@pytest.mark.parametrize("num_labels", [3, 1])
def test_bort_head_loads_in_transformers(tmp_path, num_labels):
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    m = BortForSequenceClassification(tiny_config(num_labels=num_labels), classifier_head="bort", seed=5)
    perturb(m.params, np.random.default_rng(5), 1)
    m.save_pretrained(tmp_path)
    t = transformers.BertForSequenceClassification.from_pretrained(tmp_path, attn_implementation="eager").eval()
    rng = np.random.default_rng(6)
    ids = rng.integers(2, 40, (3, 8))
    mask = np.ones_like(ids)
    mask[2, 5:] = 0
    y = rng.integers(0, num_labels, 3) if num_labels > 1 else rng.standard_normal(3).astype(np.float32)
    with torch.no_grad():
        out = t(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask), labels=torch.tensor(y))
    logits = m(ids, mask)
    err = np.abs(logits - out.logits.numpy()).max()
    print(f"logits max err {err:.2e} (tol 1e-5); loss {m.loss_and_grads(ids, y, mask)[0]:.6f} vs "
          f"{out.loss.item():.6f}")
    assert err < 1e-5
    assert m.loss_and_grads(ids, y, mask)[0] == pytest.approx(out.loss.item(), abs=1e-5)
