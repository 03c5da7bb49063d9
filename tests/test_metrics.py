"""minibort.metrics: hand-computed tables (NumPy tier), then scikit-learn and SciPy as oracles on
random inputs (reference tier)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from minibort import metrics as M

# y and p with TP 3, FN 2, FP 1, TN 2 (positions 0,4,6 / 1,7 / 3 / 2,5)
Y = [1, 1, 0, 0, 1, 0, 1, 1]
P = [1, 0, 0, 1, 1, 0, 1, 0]


def test_binary_table():
    assert M.accuracy(Y, P) == 5 / 8
    assert M.f1(Y, P) == pytest.approx(2 * 3 / (2 * 3 + 1 + 2), abs=1e-15)           # 2/3
    assert M.f1(Y, P, pos_label=0) == pytest.approx(2 * 2 / (2 * 2 + 2 + 1), abs=1e-15)  # 4/7
    assert M.f1(Y, P, average="macro") == pytest.approx(13 / 21, abs=1e-15)
    assert M.matthews(Y, P) == pytest.approx((3 * 2 - 1 * 2) / math.sqrt(4 * 5 * 3 * 4), abs=1e-15)
    m, classes = M.confusion_matrix(Y, P)
    assert classes.tolist() == [0, 1] and m.tolist() == [[2, 1], [2, 3]]


def test_multiclass_matthews_table():
    y, p = [0, 0, 1, 1, 2, 2], [0, 1, 1, 1, 2, 0]
    # C = [[1,1,0],[0,2,0],[1,0,1]]: c = 4, s = 6, t = (2,2,2), p = (2,3,1)
    expected = (4 * 6 - (2 * 2 + 2 * 3 + 2 * 1)) / math.sqrt((36 - 14) * (36 - 12))
    assert M.matthews(y, p) == pytest.approx(expected, abs=1e-15)
    assert M.matthews(["b", "a", "c"], ["b", "a", "c"]) == 1.0          # string labels


def test_degenerate_cases_follow_scikit_learn_conventions():
    assert M.f1([0, 0, 0], [0, 0, 0]) == 0.0             # class 1 neither present nor predicted
    assert M.matthews([1, 1, 0], [1, 1, 1]) == 0.0       # an empty predicted column
    assert M.pearson([1, 2, 3], [5, 5, 5]) == 0.0        # constant input: undefined, reported 0
    assert M.matthews([0, 1], [1, 0]) == -1.0


def test_correlation_tables():
    # dx = (-1.5, -.5, .5, 1.5), dy = (-3, -1, 0, 4): 11 / sqrt(5 * 26)
    assert M.pearson([1, 2, 3, 4], [2, 4, 5, 9]) == pytest.approx(11 / math.sqrt(130), abs=1e-15)
    assert M.rank_average([1, 2, 2, 3]).tolist() == [1, 2.5, 2.5, 4]
    assert M.rank_average([3.0, 1.0, 3.0, 3.0, 0.5]).tolist() == [4, 2, 4, 4, 1]
    # ranks (1, 2.5, 2.5, 4) and (1, 3, 2, 4): 4.5 / sqrt(4.5 * 5)
    assert M.spearman([1, 2, 2, 3], [1, 3, 2, 4]) == pytest.approx(4.5 / math.sqrt(22.5), abs=1e-15)
    assert M.spearman([1, 2, 3, 4], [1, 8, 27, 64]) == pytest.approx(1.0, abs=1e-15)   # monotone


def test_glue_metrics_per_task():
    assert set(M.glue_metrics("cola", Y, P)) == {"mcc", "accuracy"}
    assert M.glue_metrics("mrpc", Y, P)["f1"] == M.f1(Y, P)
    assert set(M.glue_metrics("stsb", [1.0, 2.0, 3.0], [1.0, 2.5, 2.9])) == {"pearson", "spearman"}
    assert M.glue_metrics("rte", Y, P) == {"accuracy": 5 / 8}
    for task, name in M.GLUE_MAIN_METRIC.items():
        y = [1.0, 2.0, 3.0] if task == "stsb" else Y
        p = [1.0, 2.5, 2.9] if task == "stsb" else P
        assert name in M.glue_metrics(task, y, p)
    assert M.main_metric(None) == "accuracy" and M.main_metric("regression") == "pearson"
    with pytest.raises(ValueError, match="unknown task"):
        M.glue_metrics("imdb", Y, P)


def test_errors():
    with pytest.raises(ValueError, match="3 labels but 2 predictions"):
        M.accuracy([1, 0, 1], [1, 0])
    with pytest.raises(ValueError, match="no examples"):
        M.f1([], [])
    with pytest.raises(ValueError, match="average"):
        M.f1(Y, P, average="micro")


# ------------------------------------------------------------------------------------ reference tier

labels_st = st.integers(1, 60).flatmap(lambda n: st.tuples(
    st.lists(st.integers(0, 3), min_size=n, max_size=n), st.lists(st.integers(0, 3), min_size=n, max_size=n)))


@pytest.mark.reference
@pytest.mark.filterwarnings("ignore:A single label was found:UserWarning")
@settings(max_examples=200, deadline=None)
@given(labels_st)
def test_classification_metrics_match_scikit_learn(yp):
    sk = pytest.importorskip("sklearn.metrics")
    y, p = np.array(yp[0]), np.array(yp[1])
    assert M.accuracy(y, p) == pytest.approx(sk.accuracy_score(y, p), abs=1e-12)
    assert M.matthews(y, p) == pytest.approx(sk.matthews_corrcoef(y, p), abs=1e-12)
    assert M.f1(y, p, average="macro") == pytest.approx(sk.f1_score(y, p, average="macro", zero_division=0),
                                                        abs=1e-12)
    yb, pb = y % 2, p % 2
    assert M.f1(yb, pb) == pytest.approx(sk.f1_score(yb, pb, zero_division=0), abs=1e-12)
    assert M.matthews(yb, pb) == pytest.approx(sk.matthews_corrcoef(yb, pb), abs=1e-12)


@pytest.mark.reference
@settings(max_examples=200, deadline=None)
@given(st.integers(3, 50).flatmap(lambda n: st.tuples(
    st.lists(st.integers(0, 5), min_size=n, max_size=n),
    st.lists(st.floats(-10, 10, allow_nan=False, width=32), min_size=n, max_size=n))))
def test_correlations_match_scipy_including_ties(xy):
    stats = pytest.importorskip("scipy.stats")
    x, y = np.array(xy[0], dtype=np.float64), np.array(xy[1], dtype=np.float64)  # integers: many ties
    if np.ptp(x) == 0 or np.ptp(y) == 0:
        assert M.pearson(x, y) == 0.0
        return
    assert M.pearson(x, y) == pytest.approx(stats.pearsonr(x, y)[0], abs=1e-9)
    assert M.spearman(x, y) == pytest.approx(stats.spearmanr(x, y)[0], abs=1e-9)
    assert np.array_equal(M.rank_average(x), stats.rankdata(x, method="average"))
