"""The masked LM's data: packed sequences and BERT masking, the part of pretraining that decides
what the model is asked to predict.

    pack(documents, seq_len, sp)          paragraphs -> (S, T) sequences <s> p1 </s> p2 </s> ...
    mask_tokens(ids, mask, sp, rng)       BERT's 80/10/10 masking of a batch -> (inputs, labels)
    salient_token_ids(tok)                the ids of Python's own names, which salient-token masking
                                          (`selection_table`) selects more often
    heldout_eval_set(seqs, sp, seed)      the fixed held-out masks every evaluation reuses

`minibort.pretrain` trains on them; tutorials/05_pretraining.ipynb shows each on real text.
"""

from __future__ import annotations

import builtins
import keyword
from dataclasses import dataclass

import numpy as np


@dataclass
class Specials:
    """The ids masking must know: never masked, never drawn as random replacements."""
    bos: int
    eos: int
    pad: int
    mask: int
    vocab_size: int
    others: tuple[int, ...] = ()

    @property
    def all(self) -> np.ndarray:
        return np.array(sorted({self.bos, self.eos, self.pad, self.mask, *self.others}), dtype=np.int64)


def specials_of(tok) -> Specials:
    """The Specials of a Tokenizer (every id in its `all_special_ids` is special)."""
    return Specials(bos=tok.bos_token_id, eos=tok.eos_token_id, pad=tok.pad_token_id, mask=tok.mask_token_id,
                    vocab_size=tok.vocab_size, others=tuple(sorted(tok.all_special_ids)))


def pack(documents: list[list[np.ndarray]], seq_len: int, sp: Specials) -> np.ndarray:
    """Pack paragraphs into (S, seq_len) sequences `<s> p1 </s> p2 </s> ... <pad>...`.

    Whole paragraphs are packed greedily while they fit; a paragraph longer than a sequence is cut
    into pieces; a sequence never spans two documents. Padding is `sp.pad`.
    """
    room = seq_len - 1                                     # <s> opens every sequence
    rows: list[list[int]] = []
    for doc in documents:
        cur: list[int] = []
        for para in doc:
            piece = list(map(int, para)) + [sp.eos]
            while piece:
                if len(cur) + len(piece) > room and cur:
                    rows.append(cur)
                    cur = []
                take = piece[:room]
                cur.extend(take)
                piece = piece[room:]
        if cur:
            rows.append(cur)
    out = np.full((len(rows), seq_len), sp.pad, dtype=np.int32)   # (S, T)
    for i, r in enumerate(rows):
        out[i, 0] = sp.bos
        out[i, 1:1 + len(r)] = r
    return out


def mask_tokens(ids: np.ndarray, attention_mask: np.ndarray, sp: Specials, rng: np.random.Generator,
                mask_prob: float | np.ndarray = 0.15) -> tuple[np.ndarray, np.ndarray]:
    """BERT masking of a (B, T) batch -> (masked ids, labels with -100 where nothing is predicted).

    Each real, non-special token is selected with probability `mask_prob` (at least one per batch),
    or, when `mask_prob` is a (V,) table, with the probability its id has there (`selection_table`);
    a selected token becomes <mask> with probability 0.8, a random non-special token with 0.1, and
    stays itself with 0.1. Every random number is drawn from `rng`, whatever the outcome, so the
    generator advances by the same amount for the same batch shape.
    """
    ids = np.asarray(ids, dtype=np.int64)
    candidates = (attention_mask.astype(bool)) & ~np.isin(ids, sp.all)               # (B, T)
    u_select, u_kind = rng.random(ids.shape), rng.random(ids.shape)                   # (B, T) each
    normal = np.setdiff1d(np.arange(sp.vocab_size), sp.all)                          # replacements
    random_tokens = normal[rng.integers(0, len(normal), ids.shape)]                  # (B, T)
    p = mask_prob[ids] if np.ndim(mask_prob) else mask_prob                          # scalar or (B, T)
    selected = candidates & (u_select < p)
    if not selected.any() and candidates.any():
        # A batch with nothing to predict has no loss: take the candidate with the smallest draw.
        first = np.argmin(np.where(candidates, u_select, np.inf))
        selected.flat[first] = True
    labels = np.where(selected, ids, -100)                                            # (B, T)
    out = ids.copy()
    out[selected & (u_kind < 0.8)] = sp.mask
    swap = selected & (u_kind >= 0.8) & (u_kind < 0.9)
    out[swap] = random_tokens[swap]
    return out, labels


def salient_token_ids(tok) -> tuple[np.ndarray, list[str]]:
    """The ids of Python's own names: its keywords, soft keywords and built-in names (`keyword`,
    `builtins`), each with and without a leading space, where the vocabulary holds it as one token.

    -> (sorted ids, the words). Salient-token masking (`selection_table`) selects these more often
    than other tokens, the way REALM masks salient spans and ERNIE whole entities, so that more of
    the training signal asks the model for the words a reader of Python's documentation looks for.
    The list is the running Python's (3.12 adds the soft keyword `type`).
    """
    public = [n for n in dir(builtins) if not n.startswith("_")]
    words = sorted(set(keyword.kwlist + keyword.softkwlist + public))
    ids = set()
    for w in words:
        for form in (" " + w, w):
            one = list(tok.encode(form, add_special_tokens=False))
            if len(one) == 1:
                ids.add(one[0])
    return np.array(sorted(ids), dtype=np.int64), words


def selection_table(vocab_size: int, mask_prob: float, salient: np.ndarray, salient_prob: float) -> np.ndarray:
    """(V,) selection probability of each id for `mask_tokens`: `salient_prob` for the salient ids,
    `mask_prob` for every other one."""
    table = np.full(vocab_size, mask_prob)
    table[salient] = salient_prob
    return table


def trim(ids: np.ndarray, pad: int) -> tuple[np.ndarray, np.ndarray]:
    """Cut a (B, T) batch to its longest sequence; -> (ids (B, T'), attention mask (B, T'))."""
    mask = (ids != pad).astype(np.int64)                                              # (B, T)
    T = int(mask.sum(axis=1).max())
    return ids[:, :T], mask[:, :T]


def heldout_eval_set(seqs: np.ndarray, sp: Specials, seed: int, mask_prob: float = 0.15) -> dict:
    """The fixed held-out masks: every held-out sequence, masked once with `default_rng(seed)`."""
    ids, att = trim(seqs, sp.pad)
    masked, labels = mask_tokens(ids, att, sp, np.random.default_rng(seed), mask_prob)
    return {"input_ids": masked.astype(np.int32), "attention_mask": att.astype(np.int8),
            "labels": labels.astype(np.int32)}
