"""Scores of predictions against gold labels, one formula per function, in NumPy.

    accuracy(y, p)             share of predictions equal to the label
    f1(y, p)                   binary F1 of class 1: 2 precision recall / (precision + recall)
    f1(y, p, average="macro")  the unweighted mean of each class's F1
    matthews(y, p)             Matthews correlation (CoLA's metric), from the confusion matrix
    pearson(y, p)              Pearson correlation (STS-B's metric)
    spearman(y, p)             Pearson correlation of the ranks, tied values sharing their mean rank
    glue_metrics(task, y, p)   every metric GLUE reports for a task; GLUE_MAIN_METRIC[task] is the one
                               model selection uses

Conventions where a formula divides by zero follow scikit-learn: F1 is 0 when a class is never
predicted nor present (precision + recall = 0), and Matthews is 0 when a row or column of the
confusion matrix is empty. A correlation with a constant input is undefined; it is reported as 0.0
here (so "no signal" never wins a model selection) where SciPy returns NaN.
"""

from __future__ import annotations

import numpy as np


def _pair(y_true, y_pred) -> tuple[np.ndarray, np.ndarray]:
    y, p = np.asarray(y_true).reshape(-1), np.asarray(y_pred).reshape(-1)
    if y.shape != p.shape:
        raise ValueError(f"{len(y)} labels but {len(p)} predictions; they must match one to one")
    if len(y) == 0:
        raise ValueError("no examples to score")
    return y, p


def accuracy(y_true, y_pred) -> float:
    """(1/N) sum_i [y_i == p_i]."""
    y, p = _pair(y_true, y_pred)
    return float(np.mean(y == p))


def _f1_of(y: np.ndarray, p: np.ndarray, c) -> float:
    """F1 of class c: 2 TP / (2 TP + FP + FN), which is 2 P R / (P + R); 0 when TP + FP + FN = 0."""
    tp = int(np.sum((p == c) & (y == c)))
    fp = int(np.sum((p == c) & (y != c)))
    fn = int(np.sum((p != c) & (y == c)))
    return 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 0.0


def f1(y_true, y_pred, average: str = "binary", pos_label=1) -> float:
    """Binary F1 of `pos_label`, or the macro average: the mean F1 over the classes that occur in the
    labels or the predictions (scikit-learn's default set of labels)."""
    y, p = _pair(y_true, y_pred)
    if average == "binary":
        return _f1_of(y, p, pos_label)
    if average == "macro":
        classes = np.union1d(y, p)
        return float(np.mean([_f1_of(y, p, c) for c in classes]))
    raise ValueError(f"average must be 'binary' or 'macro', not {average!r}")


def confusion_matrix(y_true, y_pred) -> tuple[np.ndarray, np.ndarray]:
    """(C, C) counts, rows = true class, columns = predicted class, over the sorted classes present.
    Returns (matrix, classes)."""
    y, p = _pair(y_true, y_pred)
    classes = np.union1d(y, p)
    yi, pi = np.searchsorted(classes, y), np.searchsorted(classes, p)
    m = np.zeros((len(classes), len(classes)), dtype=np.int64)
    np.add.at(m, (yi, pi), 1)
    return m, classes


def matthews(y_true, y_pred) -> float:
    """Matthews correlation for any number of classes (Gorodkin's R_K), from the confusion matrix C:

        (c s - t.p) / sqrt((s^2 - p.p) (s^2 - t.t))

    with c = trace(C) correct predictions, s = N, t = true counts per class, p = predicted counts.
    For two classes it is (TP TN - FP FN) / sqrt((TP+FP)(TP+FN)(TN+FP)(TN+FN)).
    """
    m, _ = confusion_matrix(y_true, y_pred)
    m = m.astype(np.float64)
    t, p = m.sum(axis=1), m.sum(axis=0)                  # true and predicted counts per class
    c, s = np.trace(m), m.sum()
    den = np.sqrt((s * s - p @ p) * (s * s - t @ t))
    return float((c * s - t @ p) / den) if den > 0 else 0.0


def pearson(x, y) -> float:
    """sum (x - mean x)(y - mean y) / sqrt(sum (x - mean x)^2 sum (y - mean y)^2), in float64."""
    a, b = _pair(x, y)
    a, b = a.astype(np.float64), b.astype(np.float64)
    a, b = a - a.mean(), b - b.mean()
    den = np.sqrt((a @ a) * (b @ b))
    return float((a @ b) / den) if den > 0 else 0.0


def rank_average(x) -> np.ndarray:
    """Ranks 1..N of x; tied values share the mean of the ranks they span (scipy's "average")."""
    x = np.asarray(x).reshape(-1)
    order = np.argsort(x, kind="stable")
    xs = x[order]
    # start of each run of equal values in sorted order
    starts = np.flatnonzero(np.concatenate([[True], xs[1:] != xs[:-1]]))
    ends = np.concatenate([starts[1:], [len(x)]])                 # one past each run's end
    mean_rank = (starts + 1 + ends) / 2.0                         # mean of ranks starts+1 .. ends
    ranks = np.empty(len(x), dtype=np.float64)
    ranks[order] = np.repeat(mean_rank, ends - starts)
    return ranks


def spearman(x, y) -> float:
    """Pearson correlation of the average ranks."""
    a, b = _pair(x, y)
    return pearson(rank_average(a), rank_average(b))


# ------------------------------------------------------------------------------------ GLUE

# The metric each GLUE task is ranked by (for MRPC and QQP GLUE shows F1 and accuracy, for STS-B
# Pearson and Spearman; the first is used for model selection here).
GLUE_MAIN_METRIC = {"cola": "mcc", "sst2": "accuracy", "mrpc": "f1", "qqp": "f1", "stsb": "pearson",
                    "mnli": "accuracy", "qnli": "accuracy", "rte": "accuracy", "wnli": "accuracy"}


def glue_metrics(task: str | None, y_true, y_pred) -> dict[str, float]:
    """Every metric GLUE reports for `task` (None: a classification task of your own, which gets
    accuracy, macro F1 and Matthews; "regression": Pearson and Spearman)."""
    if task == "cola":
        return {"mcc": matthews(y_true, y_pred), "accuracy": accuracy(y_true, y_pred)}
    if task in ("mrpc", "qqp"):
        return {"f1": f1(y_true, y_pred), "accuracy": accuracy(y_true, y_pred)}
    if task in ("stsb", "regression"):
        return {"pearson": pearson(y_true, y_pred), "spearman": spearman(y_true, y_pred)}
    if task in ("sst2", "mnli", "qnli", "rte", "wnli"):
        return {"accuracy": accuracy(y_true, y_pred)}
    if task is None:
        return {"accuracy": accuracy(y_true, y_pred), "f1_macro": f1(y_true, y_pred, "macro"),
                "mcc": matthews(y_true, y_pred)}
    raise ValueError(f"unknown task {task!r}; use a GLUE task name, 'regression' or None")


def main_metric(task: str | None) -> str:
    """The metric model selection uses: GLUE's for a GLUE task, else accuracy (Pearson for regression)."""
    if task in GLUE_MAIN_METRIC:
        return GLUE_MAIN_METRIC[task]
    return "pearson" if task == "regression" else "accuracy"
