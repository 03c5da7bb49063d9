"""A bag-of-words baseline: logistic regression on word and word-pair counts, in NumPy.

The model every fine-tuned Bort should beat before it is called useful, and Agora's default
reference model. For a text (or a pair of texts):

    features  lower-cased words `\\w+` and adjacent word pairs (pairs of texts: the second text's
              n-grams get a "b:" prefix); the `max_features` most frequent n-grams seen at least
              `min_count` times in training; counts, each row scaled to unit length (L2)
    model     softmax(x W + b), x (N, F) kept sparse (its non-zero entries), W (F, C)
    training  mean cross-entropy + l2/2 |W|^2, full-batch gradient descent with Nesterov momentum,
              step 1/L where L = 1/2 + l2 bounds the loss's curvature for unit-length rows;
              deterministic (no random numbers at all)

    clf = BowClassifier().fit(train)               # a minibort.data.Dataset
    clf.predict(["some text", ("a", "pair")])      # (N,) label ids; clf.labels names them
"""

from __future__ import annotations

import re
from collections import Counter

import numpy as np

_WORD = re.compile(r"\w+")


def ngrams(text: str, n: int = 2, prefix: str = "") -> list[str]:
    """The lower-cased words of `text` and its runs of up to n adjacent words, joined by spaces."""
    words = _WORD.findall(text.lower())
    out = [prefix + w for w in words]
    for k in range(2, n + 1):
        out += [prefix + " ".join(words[i:i + k]) for i in range(len(words) - k + 1)]
    return out


def _texts(data) -> list:
    """A Dataset's examples, or a list of texts / (text, pair) tuples, as a list of str or tuples."""
    if hasattr(data, "examples"):
        return [e.text if e.text_pair is None else (e.text, e.text_pair) for e in data.examples]
    return list(data)


class BowClassifier:
    """Multinomial logistic regression on L2-normalised n-gram counts (see the module docstring)."""

    def __init__(self, ngram: int = 2, min_count: int = 2, max_features: int = 20000, l2: float = 1e-4,
                 steps: int = 300):
        self.ngram, self.min_count, self.max_features = ngram, min_count, max_features
        self.l2, self.steps = l2, steps
        self.vocab: dict[str, int] = {}
        self.labels: list[str] = []
        self.W: np.ndarray | None = None          # (F, C)
        self.b: np.ndarray | None = None          # (C,)

    def _grams(self, item) -> list[str]:
        if isinstance(item, tuple):
            a, b = item
            return ngrams(a, self.ngram) + ngrams(b or "", self.ngram, "b:")
        return ngrams(item, self.ngram)

    def features(self, data) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
        """The (N, F) n-gram count matrix in sparse form: (rows, cols, values, N), each row scaled to
        unit length. Most entries are zero, so only the non-zero ones are kept (a dense matrix at
        N 2400, F 6000 would be 115 MB, and every step would read all of it)."""
        rows, cols, vals = [], [], []
        texts = _texts(data)
        for i, item in enumerate(texts):
            counts = Counter(j for j in map(self.vocab.get, self._grams(item)) if j is not None)
            norm = np.sqrt(sum(c * c for c in counts.values())) or 1.0
            for j, c in sorted(counts.items()):
                rows.append(i)
                cols.append(j)
                vals.append(c / norm)
        return (np.array(rows, dtype=np.int64), np.array(cols, dtype=np.int64), np.array(vals), len(texts))

    @staticmethod
    def _xw(X, W: np.ndarray) -> np.ndarray:
        """x W for sparse X: (N, F) @ (F, C) -> (N, C)."""
        rows, cols, vals, N = X
        return np.stack([np.bincount(rows, vals * W[cols, c], minlength=N) for c in range(W.shape[1])], axis=1)

    @staticmethod
    def _xtg(X, G: np.ndarray, F: int) -> np.ndarray:
        """x^T G for sparse X: (F, N) @ (N, C) -> (F, C)."""
        rows, cols, vals, _ = X
        return np.stack([np.bincount(cols, vals * G[rows, c], minlength=F) for c in range(G.shape[1])], axis=1)

    def fit(self, data, labels=None) -> BowClassifier:
        """Train on a Dataset (labels from it), or on texts with `labels` (ids). Returns self."""
        if labels is None:
            y = np.asarray(data.label_ids(), dtype=np.int64)
            self.labels = list(data.labels)
        else:
            y = np.asarray(labels, dtype=np.int64)
            self.labels = [str(i) for i in range(int(y.max()) + 1)]
        if y.size == 0:
            raise ValueError("no training examples")
        counts = Counter(g for item in _texts(data) for g in set(self._grams(item)))
        kept = sorted((g for g, c in counts.items() if c >= self.min_count), key=lambda g: (-counts[g], g))
        self.vocab = {g: j for j, g in enumerate(kept[:self.max_features])}
        X = self.features(data)                                                       # (N, F) sparse
        N, F = X[3], len(self.vocab)
        C = max(len(self.labels), int(y.max()) + 1)
        Y = np.zeros((N, C))
        Y[np.arange(N), y] = 1.0                                                      # (N, C) one-hot
        W, b = np.zeros((F, C)), np.zeros(C)
        W_prev, b_prev = W.copy(), b.copy()
        step = 1.0 / (0.5 + self.l2)
        for t in range(1, self.steps + 1):
            mom = (t - 1) / (t + 2)                                                   # Nesterov
            Wm, bm = W + mom * (W - W_prev), b + mom * (b - b_prev)
            Z = self._xw(X, Wm) + bm                                                  # (N, C)
            P = np.exp(Z - Z.max(axis=1, keepdims=True))
            P /= P.sum(axis=1, keepdims=True)
            G = (P - Y) / N                                                           # d(mean CE)/dZ
            W_prev, b_prev = W, b
            W = Wm - step * (self._xtg(X, G, F) + self.l2 * Wm)
            b = bm - step * G.sum(axis=0)
        self.W, self.b = W, b
        return self

    def predict_proba(self, data) -> np.ndarray:
        """(N, C) class probabilities."""
        if self.W is None:
            raise ValueError("call fit before predict")
        Z = self._xw(self.features(data), self.W) + self.b                            # (N, C)
        P = np.exp(Z - Z.max(axis=1, keepdims=True))
        return P / P.sum(axis=1, keepdims=True)

    def predict(self, data) -> np.ndarray:
        """(N,) predicted label ids."""
        return self.predict_proba(data).argmax(axis=1).astype(np.int64)
