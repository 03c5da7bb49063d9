"""minibort.bow: n-gram features by hand, a separable toy task, determinism, and scikit-learn's
LogisticRegression on the same features and objective as the oracle (reference tier)."""

from __future__ import annotations

import numpy as np
import pytest

from minibort.bow import BowClassifier, ngrams
from minibort.data import Dataset, Example


def toy() -> Dataset:
    pos = ["a good film", "good and fine", "fine acting, good plot", "truly good", "a fine day", "good good"]
    neg = ["a bad film", "bad and awful", "awful acting, bad plot", "truly bad", "an awful day", "bad bad"]
    return Dataset([Example(t, None, "pos") for t in pos] + [Example(t, None, "neg") for t in neg],
                   ["neg", "pos"], "toy")


def test_ngrams_and_sparse_features_by_hand():
    assert ngrams("A good, GOOD film") == ["a", "good", "good", "film", "a good", "good good", "good film"]
    assert ngrams("x y", prefix="b:") == ["b:x", "b:y", "b:x y"]
    clf = BowClassifier(min_count=1)
    clf.vocab = {"good": 0, "film": 1, "good film": 2}
    rows, cols, vals, n = clf.features(["good good film", "nothing known"])
    # row 0: counts (2, 1, 1) / sqrt(6); row 1: empty
    assert n == 2 and rows.tolist() == [0, 0, 0] and cols.tolist() == [0, 1, 2]
    np.testing.assert_allclose(vals, np.array([2, 1, 1]) / np.sqrt(6), rtol=1e-15)


def test_learns_a_separable_task_and_is_deterministic():
    ds = toy()
    clf = BowClassifier(min_count=1, steps=200).fit(ds)
    assert clf.labels == ["neg", "pos"]
    assert clf.predict(ds).tolist() == ds.label_ids().tolist()
    assert clf.predict(["what a good plot", "an awful film"]).tolist() == [1, 0]
    p = clf.predict_proba(ds)
    assert p.shape == (12, 2) and np.allclose(p.sum(axis=1), 1)
    again = BowClassifier(min_count=1, steps=200).fit(ds)
    assert np.array_equal(again.W, clf.W)
    pair = Dataset([Example("q", "good", "pos"), Example("q", "bad", "neg")] * 3, ["neg", "pos"])
    assert BowClassifier(min_count=1).fit(pair).predict([("q", "good"), ("q", "bad")]).tolist() == [1, 0]
    with pytest.raises(ValueError, match="fit"):
        BowClassifier().predict(["x"])


@pytest.mark.reference
def test_same_optimum_as_scikit_learn():
    """sklearn minimises C sum CE + |w|^2 / 2 with one weight vector w for two classes; ours mean CE +
    l2 (|w0|^2 + |w1|^2) / 2 with a softmax over two columns, whose optimum has w1 = -w0 = w / 2, so the
    penalty is l2 |w|^2 / 4: the same optimum for C = 2 / (l2 N). Neither penalises the intercept."""
    lm = pytest.importorskip("sklearn.linear_model")
    sparse = pytest.importorskip("scipy.sparse")
    ds = toy()
    clf = BowClassifier(min_count=1, l2=0.05, steps=3000).fit(ds)
    rows, cols, vals, n = clf.features(ds)
    X = sparse.csr_matrix((vals, (rows, cols)), shape=(n, len(clf.vocab)))
    sk = lm.LogisticRegression(C=2 / (0.05 * n), tol=1e-12, max_iter=10000).fit(X, ds.label_ids())
    ours = clf.predict_proba(ds)
    err = np.abs(ours - sk.predict_proba(X)).max()
    print(f"probabilities vs scikit-learn: max err {err:.2e} (tol 1e-6)")
    assert err < 1e-6
