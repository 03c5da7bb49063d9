"""From labelled text to training batches: encode every example once, then each epoch cut a fresh
shuffle into batches of similar lengths and pad each batch only to its longest row.

Shapes: B batch, T tokens (the longest row of the batch).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .data import Dataset


@dataclass
class Encoded:
    """Token ids of each example (no padding), and the labels the model learns (None: unlabelled)."""

    ids: list[np.ndarray]
    labels: np.ndarray | None

    @property
    def lengths(self) -> np.ndarray:
        return np.array([len(r) for r in self.ids], dtype=np.int64)


def encode(tokenizer, dataset: Dataset, max_length: int, chunk: int = 256) -> Encoded:
    """Every example as `<s> text </s>` (pairs: `<s> a </s></s> b </s>`), truncated to max_length
    tokens (pairs longest first), without padding."""
    rows: list[np.ndarray] = []
    ex = dataset.examples
    pairs = dataset.has_pairs
    for i in range(0, len(ex), chunk):
        part = ex[i:i + chunk]
        enc = tokenizer([e.text for e in part], [e.text_pair or "" for e in part] if pairs else None,
                        padding=True, truncation=True, max_length=max_length)
        n = enc["attention_mask"].sum(axis=1)                                         # (b,)
        rows += [enc["input_ids"][k, :n[k]].astype(np.int32) for k in range(len(part))]
    labels = dataset.label_ids() if dataset.is_labelled else None
    return Encoded(rows, labels)


def pad(rows: list[np.ndarray], pad_id: int) -> tuple[np.ndarray, np.ndarray]:
    """Rows -> (ids (B, T), attention mask (B, T)), padded to the longest row."""
    T = max(len(r) for r in rows)
    ids = np.full((len(rows), T), pad_id, dtype=np.int64)                             # (B, T)
    mask = np.zeros((len(rows), T), dtype=np.int64)                                   # (B, T)
    for k, r in enumerate(rows):
        ids[k, :len(r)] = r
        mask[k, :len(r)] = 1
    return ids, mask


def bucketed_batches(lengths: np.ndarray, batch_size: int, seed: int, bucket: int = 50):
    """Epoch -> batches of example indices: a fresh permutation (`default_rng([seed, 3, epoch])`),
    cut into windows of `bucket` batches, each window sorted by length and cut into batches, and the
    batches shuffled. Rows of one batch have similar lengths, so padding wastes little. bucket <= 1:
    plain shuffled batches. The last batch may be smaller; every example is seen once per epoch."""
    n = len(lengths)
    if n == 0:
        raise ValueError("no training examples")

    def batches(epoch: int) -> list[np.ndarray]:
        rng = np.random.default_rng([seed, 3, epoch])
        order = rng.permutation(n)                                                    # (n,)
        if bucket <= 1:
            return [order[i:i + batch_size] for i in range(0, n, batch_size)]
        out = []
        window = batch_size * bucket
        for start in range(0, n, window):
            part = order[start:start + window]
            part = part[np.argsort(lengths[part], kind="stable")]                     # by length
            out += [part[i:i + batch_size] for i in range(0, len(part), batch_size)]
        return [out[i] for i in rng.permutation(len(out))]
    return batches
