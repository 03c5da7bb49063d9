"""Byte-level BPE's shared pieces: the byte-to-symbol table, GPT-2's pre-tokenizer regex, and merging.

Both the tokenizer (`tokenizer.py`, which applies merges) and the trainer (`bpe_train.py`, which
learns them) read from here, so the two can never disagree on how text is cut or how a pair merges.

A word is handled as a list of symbol ids (one per UTF-8 byte at first); `merges` maps a pair of
neighbouring ids to (rank, id of the merged symbol), a lower rank being learned earlier and applied
first. Two ways to apply all merges to one word give the same ids:

- `apply_merges_reference`: the readable form (GPT-2's `encoder.py`): find the lowest-ranked pair,
  merge it everywhere with `merge_pair`, repeat. Each round rescans the word: O(L^2) for L bytes.
- `apply_merges`: the fast form (the Rust `tokenizers` way): a heap of candidate merges and a linked
  list of symbols, O(L log L). This is the one the tokenizer runs.
"""

from __future__ import annotations

import heapq
from functools import lru_cache
from itertools import pairwise

import regex

Merges = dict[tuple[int, int], tuple[int, int]]   # (left id, right id) -> (rank, merged id)


# ---------------------------------------------------------------------------------------------------
# Bytes <-> printable characters.
@lru_cache
def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's table: byte value (0..255) -> one printable character.

    The 188 bytes that are already visible characters ("!".."~", "¡".."¬", "®".."ÿ") map to themselves;
    the other 68 (control characters, space, NBSP, soft hyphen) map, in byte order, to chr(256 + n),
    so space (the 33rd such byte) becomes chr(288) = "Ġ" and newline chr(266) = "Ċ". BPE can then
    work on ordinary strings, and a vocab file never holds a raw space or control character.
    """
    visible = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    table = {b: chr(b) for b in visible}
    n = 0
    for b in range(256):
        if b not in table:
            table[b] = chr(256 + n)
            n += 1
    return table


# ---------------------------------------------------------------------------------------------------
# GPT-2's pre-tokenizer: text -> words, merges never cross a word's edge. Alternatives are tried left
# to right at each position:
PRETOKENIZE_PATTERN = (
    r"'s|'t|'re|'ve|'m|'ll|'d"    # English contractions, split off their word: "it's" -> "it", "'s"
    r"| ?\p{L}+"                  # a run of letters (any script), with at most one space in front
    r"| ?\p{N}+"                  # a run of digits/numerals, with at most one space in front
    r"| ?[^\s\p{L}\p{N}]+"        # a run of everything else (punctuation, emoji, symbols), same
    r"|\s+(?!\S)"                 # whitespace, but leave its last space to the word that follows:
                                  #   "a   b" -> "a", "  ", " b" (so " b" is tokenized like in "a b")
    r"|\s+"                       # whitespace at the very end of the text
)
# Notes. The contractions are case-sensitive ("IT'S" -> "IT", "'", "S"), as in GPT-2. `\s` here is the
# Unicode White_Space property, the same set the Rust reference (Oniguruma) uses; \x1c-\x1f are *not*
# whitespace for either (Python's str.isspace() says they are, so never use it here). Both read letter
# and digit classes from their own Unicode tables: they agree on every character assigned by Unicode
# 14, and differ only on a few newer ones the two libraries' tables do not share.
PRETOKENIZE_RE = regex.compile(PRETOKENIZE_PATTERN)
# That whitespace (Unicode's White_Space property), as a set: what `<mask>` swallows in front of it.
WHITESPACE = frozenset("\t\n\x0b\x0c\r \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008"
                       "\u2009\u200a\u2028\u2029\u202f\u205f\u3000")


# ---------------------------------------------------------------------------------------------------
# Merging.
def merge_pair(symbols: list[int], a: int, b: int, new: int) -> list[int]:
    """`symbols` with every neighbouring (a, b) replaced by `new`, scanning left to right.

    [a, b, x, a, b] -> [new, x, new]; overlaps go to the left: [a, a, a] with (a, a) -> [new, a].
    """
    merged, i, n = [], 0, len(symbols)
    while i < n:
        if i < n - 1 and symbols[i] == a and symbols[i + 1] == b:
            merged.append(new)
            i += 2
        else:
            merged.append(symbols[i])
            i += 1
    return merged


def apply_merges_reference(symbols: list[int], merges: Merges,
                           steps: list[tuple[int, int, int, list[int]]] | None = None) -> list[int]:
    """All merges applied to one word, the readable way: O(L^2) for L symbols.

    Each round finds the lowest-ranked pair of neighbours and merges *every* occurrence of it. With
    `steps`, each round appends (a, b, rank, symbols after the merge) to it.
    """
    while len(symbols) > 1:
        best_rank, best = None, None
        for pair in pairwise(symbols):
            m = merges.get(pair)
            if m is not None and (best_rank is None or m[0] < best_rank):
                best_rank, best = m[0], pair
        if best is None:
            break                                       # no neighbouring pair has a merge: done
        symbols = merge_pair(symbols, *best, merges[best][1])
        if steps is not None:
            steps.append((*best, best_rank, symbols))
    return symbols


# The fast form. The reference rescans the whole word after every round, so a word of L letters with
# ~L merges costs ~L^2 lookups (a 100k-letter word: minutes). Two changes make it O(L log L):
#
#   1. a heap holds every neighbouring pair that has a merge, as (rank, position of its left symbol),
#      so the next merge to apply is popped in O(log L) instead of found by a scan;
#   2. the symbols form a doubly linked list (`nxt`/`prv` positions), so a merge rewrites one symbol
#      and unlinks its right neighbour in O(1) instead of rebuilding the list.
#
# A merge changes only the pairs touching the new symbol: (previous, new) and (new, next) are pushed;
# the old entries for (previous, a) and (b, next) stay in the heap but go stale, and are recognised
# when popped because the pair now at that position no longer has that rank (each rank belongs to
# exactly one pair). Ties in rank pop the leftmost position first, so occurrences of one pair merge
# left to right, as `merge_pair` does.
#
# Same result as the reference: the reference merges all occurrences of the best pair in one round,
# the heap one at a time; in between, merging one occurrence creates only pairs that contain the new
# symbol, and those rank later than the merge that made it (a trained merges file learns a symbol
# before any merge that uses it), so the remaining occurrences are still the best. The Rust
# `tokenizers` package applies merges exactly this way, and the parity tests compare against it.
_DEAD = -1   # marks a position whose symbol was merged into its left neighbour


def apply_merges(symbols: list[int], merges: Merges) -> list[int]:
    """All merges applied to one word, lowest rank first: the same ids as `apply_merges_reference`,
    in O(L log L) with a heap of candidate merges and a linked list of symbols."""
    n = len(symbols)
    if n < 2:
        return symbols
    ids = list(symbols)                  # ids[i]: symbol at position i, or _DEAD
    nxt = list(range(1, n + 1))          # position of the next live symbol (n: none)
    prv = list(range(-1, n - 1))         # position of the previous live symbol (-1: none)
    heap = [(m[0], i) for i, m in enumerate(map(merges.get, pairwise(ids))) if m is not None]
    heapq.heapify(heap)                  # (rank, left position); smallest rank, then leftmost, first
    while heap:
        rank, i = heapq.heappop(heap)
        j = nxt[i]
        m = merges.get((ids[i], ids[j])) if j < n else None
        if m is None or m[0] != rank:
            continue                     # stale: the pair at i changed since this entry was pushed
        ids[i], ids[j] = m[1], _DEAD     # i becomes the merged symbol; j is unlinked
        k = nxt[i] = nxt[j]
        if k < n:
            prv[k] = i
            m = merges.get((ids[i], ids[k]))
            if m is not None:
                heapq.heappush(heap, (m[0], i))
        h = prv[i]
        if h >= 0:
            m = merges.get((ids[h], ids[i]))
            if m is not None:
                heapq.heappush(heap, (m[0], h))
    return [t for t in ids if t != _DEAD]
