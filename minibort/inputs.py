"""What a model accepts: token ids and an attention mask checked before any work, and a memory
estimate that refuses, up front and with the fix, a call that would need more memory than the
machine has (instead of a bare MemoryError or the OOM killer minutes later); and the positions a head
reads, for the encoder's `last_rows`.

Shapes: B batch, T tokens, H hidden, I FFN width, V vocabulary, N heads, Q positions a head reads.
"""

from __future__ import annotations

import os

import numpy as np

from .config import BortConfig


class InputError(ValueError):
    """The model was called with ids or a mask it cannot use."""


# ------------------------------------------------------------------------------------ input checks


def check_inputs(input_ids, attention_mask, config: BortConfig):
    """Validate and normalise ids and mask to (B, T) int64 arrays. Returns (ids, mask, was_1d)."""
    ids = np.asarray(input_ids)
    if ids.dtype == object or not np.issubdtype(ids.dtype, np.integer):
        raise InputError(f"input_ids must be an integer array, got dtype {ids.dtype}; "
                         "pass token ids (e.g. from Tokenizer), not text or floats")
    was_1d = ids.ndim == 1
    if was_1d:
        ids = ids[None, :]
    if ids.ndim != 2:
        raise InputError(f"input_ids must have shape (B, T) or (T,), got {ids.shape}")
    B, T = ids.shape
    if B == 0 or T == 0:
        raise InputError(f"input_ids is empty (shape {ids.shape}); give at least one token")
    if T > config.max_position_embeddings:
        raise InputError(f"sequence length {T} exceeds max_position_embeddings "
                         f"({config.max_position_embeddings}); truncate the input")
    lo, hi = int(ids.min()), int(ids.max())
    if lo < 0 or hi >= config.vocab_size:
        bad = lo if lo < 0 else hi
        raise InputError(f"input_ids holds {bad}, outside the vocabulary [0, {config.vocab_size})")
    if attention_mask is None:
        mask = np.ones((B, T), dtype=np.int64)
    else:
        mask = np.asarray(attention_mask)
        if was_1d and mask.ndim == 1:
            mask = mask[None, :]
        if mask.shape != ids.shape:
            raise InputError(f"attention_mask has shape {np.shape(attention_mask)} but input_ids has "
                             f"{np.shape(input_ids)}; they must match")
        if not (np.issubdtype(mask.dtype, np.integer) or mask.dtype == bool
                or np.issubdtype(mask.dtype, np.floating)):
            raise InputError(f"attention_mask must hold 0/1 values, got dtype {mask.dtype}")
        bad = (mask != 0) & (mask != 1)                       # (B, T); NaN is neither, so it is caught
        if bad.any():
            where = tuple(int(i) for i in np.argwhere(bad)[0])
            raise InputError(f"attention_mask must hold 0/1 values (1 = a real token, 0 = padding), got "
                             f"{mask[where]} at {where}; build it as (input_ids != pad_token_id)")
    return ids.astype(np.int64, copy=False), mask, was_1d


# ------------------------------------------------------------------------------------ memory check

MEMORY_FRACTION = 0.8              # of physical memory, unless MINIBORT_MEMORY_LIMIT says otherwise


def memory_limit() -> int:
    """Bytes one call may plan to use: MINIBORT_MEMORY_LIMIT (bytes, or with a K/M/G suffix; 0 = no
    limit) if set, else MEMORY_FRACTION of the machine's physical memory (0 where it is unknown)."""
    env = os.environ.get("MINIBORT_MEMORY_LIMIT", "").strip().upper()
    if env:
        scale = {"K": 2**10, "M": 2**20, "G": 2**30}.get(env[-1], 1)
        try:
            return int(float(env.rstrip("KMG")) * scale)
        except ValueError:
            raise InputError(f"MINIBORT_MEMORY_LIMIT={env!r} is not a size; give bytes or e.g. 8G") from None
    try:
        return int(MEMORY_FRACTION * os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (AttributeError, ValueError, OSError):          # not a POSIX system: no estimate to compare
        return 0


def estimate_memory(config: BortConfig, B: int, T: int, dtype, logit_rows: int = 0,
                    training: bool = False) -> int:
    """Bytes held by the two arrays that grow fastest: attention scores (B, N, T, T) and logits (R, V).

    Inference holds one encoder layer's attention probabilities at a time (counted twice, for the
    temporaries around them); a training step keeps every layer's, and with dropout their mask, for
    the backward. Logits count twice: the array and its softmax (or gradient). Weights and (B, T, H)
    activations come on top, so this is a floor for the largest calls, not a total.
    """
    s = np.dtype(dtype).itemsize
    attention = B * config.num_attention_heads * T * T * s                      # one (B, N, T, T) array
    copies = 2
    if training:
        copies += config.num_hidden_layers * (2 if config.attention_probs_dropout_prob > 0 else 1)
    return attention * copies + 2 * logit_rows * config.vocab_size * s


def check_memory(config: BortConfig, shape: tuple[int, int], dtype, logit_rows: int = 0,
                 training: bool = False) -> None:
    """Refuse, before allocating, a call whose estimate exceeds `memory_limit()`, naming the fix."""
    limit = memory_limit()
    B, T = shape
    need = estimate_memory(config, B, T, dtype, logit_rows, training)
    if limit and need > limit:
        raise InputError(
            f"this call needs about {need / 2**30:.1f} GiB ({np.dtype(dtype).name}: attention {B} x "
            f"{config.num_attention_heads} x {T}^2 per layer, logits {logit_rows} x {config.vocab_size}), "
            f"more than the limit of {limit / 2**30:.1f} GiB; use a smaller batch or shorter sequences, "
            "or positions= to compute logits only where you need them (the limit is "
            f"{MEMORY_FRACTION:.0%} of physical memory; MINIBORT_MEMORY_LIMIT overrides it)")


# ------------------------------------------------------------------------------------ positions a head reads


def first_token(ids: np.ndarray) -> np.ndarray:
    """(B, T) ids -> (B, 1) positions: each sequence's <s>, all the classifier reads (`last_rows`)."""
    return np.zeros((ids.shape[0], 1), dtype=np.intp)


def labelled_rows(sel: np.ndarray):
    """(B, T) bool -> (B, Q) positions of each sequence's True entries (for `last_rows`) and the (B, Q)
    bool of the real ones. Shorter lists are padded with position 0, whose gradient is then zero."""
    counts = sel.sum(axis=1)                                        # (B,)
    picked = np.arange(counts.max())[None, :] < counts[:, None]     # (B, Q)
    rows = np.zeros(picked.shape, dtype=np.intp)
    rows[picked] = np.nonzero(sel)[1]                               # row-major: h[picked] is h[sel]
    return rows, picked
