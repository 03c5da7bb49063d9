"""Byte-level BPE's shared pieces: the byte-to-symbol table, GPT-2's pre-tokenizer regex, merging,
and the two files that hold a vocabulary (vocab.json, merges.txt), read and checked.

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
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from itertools import pairwise, repeat

import regex

Merges = dict[tuple[int, int], tuple[int, int]]   # (left id, right id) -> (rank, merged id)


class TokenizerError(ValueError):
    """Bad input or bad vocab/merges files; the message says what and where."""


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


# ---------------------------------------------------------------------------------------------------
# The files: vocab.json (token -> id) and merges.txt ("#version" line, then "left right" per line).
# Loading runs on every start-up, so each check is first done in bulk (C speed); only when it fails is
# the slow loop run that finds and names the culprit.
def read_json(path: str, no_duplicates: bool = False) -> object:
    """Parse a JSON file; with no_duplicates, a key that appears twice in an object is an error."""
    def check_pairs(pairs: list[tuple[str, object]]) -> dict:
        seen: dict = {}
        for key, value in pairs:
            if key in seen:
                raise TokenizerError(f"{path}: token {key!r} appears twice (ids {seen[key]} and {value})")
            seen[key] = value
        return seen

    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f, object_pairs_hook=check_pairs if no_duplicates else None)
    except FileNotFoundError:
        raise TokenizerError(f"vocab file not found: {path}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise TokenizerError(f"{path}: not valid JSON ({e})") from None


def read_vocab(path: str) -> dict:
    """vocab.json as a dict token -> id (checked by `check_vocab` when the tokenizer is built)."""
    vocab = read_json(path)
    if not isinstance(vocab, dict):
        raise TokenizerError(f"{path}: expected a JSON object token -> id, got {type(vocab).__name__}")
    return vocab


def read_merges(path: str) -> tuple[list[tuple[str, str]], Callable[[int], str]]:
    """merges.txt as (left, right) pairs in rank order, and `where(k)`: "file line n" of merge k."""
    try:
        with open(path, encoding="utf-8") as f:
            lines = f.read().split("\n")
    except FileNotFoundError:
        raise TokenizerError(f"merges file not found: {path}") from None
    except UnicodeDecodeError as e:
        raise TokenizerError(f"{path}: not UTF-8 ({e})") from None
    # "#version: 0.2" first, then one "left right" per line; blank lines (the last one) are skipped
    first = 1 if lines[0].startswith("#version") else 0
    body = [line for line in lines[first:] if line]

    def where(k: int) -> str:          # only needed for an error message
        numbers = [n for n, line in enumerate(lines[first:], first + 1) if line]
        return f"{path} line {numbers[k]}"

    # Split all lines at once (in C): valid when every line has exactly one space, and no symbol is empty.
    parts = " ".join(body).split(" ") if body else []
    if set(map(str.count, body, repeat(" "))) - {1} or "" in parts:
        k = next(k for k, line in enumerate(body) if line.count(" ") != 1 or "" in line.split(" "))
        raise TokenizerError(f"{where(k)}: expected two symbols separated by one space, got {body[k]!r}")
    return list(zip(parts[0::2], parts[1::2])), where


def ids_are_a_range(vocab: dict) -> bool:
    """True when the vocab's ids are exactly 0..V-1, each once (the bulk check; C speed)."""
    ids = list(vocab.values())
    return all(type(i) is int for i in ids) and sorted(ids) == list(range(len(ids)))


def check_vocab(vocab: dict) -> None:
    """Raise a TokenizerError naming the first bad entry unless the ids are exactly 0..V-1, each once."""
    if ids_are_a_range(vocab):
        return
    owner: dict[int, str] = {}
    for token, i in vocab.items():
        if not isinstance(token, str) or type(i) is not int:
            raise TokenizerError(f"vocab entry {token!r}: {i!r} must map a string to an int")
        if not 0 <= i < len(vocab):
            raise TokenizerError(f"vocab entry {token!r} has id {i}, outside 0..{len(vocab) - 1} "
                                 f"(ids must be exactly 0..V-1 for a vocab of {len(vocab)})")
        if i in owner:
            raise TokenizerError(f"vocab: id {i} is used twice, by {owner[i]!r} and {token!r}")
        owner[i] = token
    raise AssertionError("unreachable: the vocab passed every check")


def compile_merges(vocab: dict[str, int], merges: Sequence[tuple[str, str]],
                   where: Callable[[int], str] | None = None) -> Merges:
    """The merges as ids, {(id_left, id_right): (rank, id_merged)}, after checking that each part and
    their concatenation are in the vocab and that no pair repeats (`where(k)` names merge k)."""
    try:
        lefts, rights = zip(*merges) if merges else ((), ())
        ids_a, ids_b = list(map(vocab.get, lefts)), list(map(vocab.get, rights))
        ids_ab = list(map(vocab.get, map(str.__add__, lefts, rights)))
    except (TypeError, ValueError):
        ids_a = ids_b = ids_ab = [None]
    compiled = {} if None in ids_a or None in ids_b or None in ids_ab else dict(
        zip(zip(ids_a, ids_b), zip(range(len(ids_ab)), ids_ab)))   # (all in C: this runs at every load)
    if len(compiled) == len(merges):
        return compiled
    # Something is wrong: find the first bad merge and say where it is.
    where = where or (lambda k: f"merge {k + 1}")
    seen: dict[tuple[str, str], int] = {}
    for rank, pair in enumerate(merges):
        if len(pair) != 2 or not all(isinstance(p, str) for p in pair):
            raise TokenizerError(f"{where(rank)}: {pair!r} is not a pair of symbols")
        a, b = pair
        unknown = [p for p in pair if p not in vocab]
        if unknown:
            raise TokenizerError(f"{where(rank)}: '{a} {b}' has a part that is not in the vocab: {unknown}")
        if a + b not in vocab:
            raise TokenizerError(f"{where(rank)}: '{a} {b}' makes {a + b!r}, which is not in the vocab")
        if pair in seen:
            raise TokenizerError(f"{where(rank)}: '{a} {b}' repeats {where(seen[pair])}")
        seen[pair] = rank
    raise AssertionError("unreachable: the merges passed every check")


# -------------------------------------------------------------------------------------------------
# What `explain` returns: plain data a notebook can draw, and `render()` for the text form.
@dataclass
class MergeStep:
    """One round of step 4: the pair merged (everywhere in the word), its rank, the symbols after."""
    pair: tuple[str, str]
    rank: int
    symbols: list[str]


@dataclass
class ExplainedWord:
    """Steps 3-4 for one pre-token: its UTF-8 bytes, their symbols, each merge, the tokens and ids."""
    text: str                    # the pre-token as cut from the text: " world"
    utf8: bytes                  # b" world"
    symbols: list[str]           # one printable symbol per byte: ["Ġ", "w", "o", "r", "l", "d"]
    merges: list[MergeStep]      # in the order applied
    tokens: list[str]            # the symbols left at the end, each a vocab token: ["Ġworld"]
    ids: list[int]               # their ids


@dataclass
class ExplainedSegment:
    """A stretch of text between special tokens (step 1) and its pre-tokens (step 2)."""
    text: str                    # the stretch, with the space add_prefix_space put in front
    prefix_space_added: bool
    words: list[ExplainedWord]


@dataclass
class ExplainedSpecial:
    """A special token written in the text (step 1); its span includes the whitespace it swallowed."""
    start: int
    end: int
    token: str
    id: int


@dataclass
class Explanation:
    """`Tokenizer.explain(text)`: the pieces of the text in order, and the final ids (step 5 applied
    when `wrapped`). `str()` or `render()` gives the text form."""
    text: str
    pieces: list[ExplainedSpecial | ExplainedSegment]
    ids: list[int]
    wrapped: bool

    def render(self) -> str:
        """Every step as readable lines (what `print(tok.explain(text))` shows)."""
        lines = [f"text: {self.text!r}", "1. special tokens found in the text:"]
        specials = [p for p in self.pieces if isinstance(p, ExplainedSpecial)]
        lines += [f"   {self.text[p.start:p.end]!r} at {p.start}..{p.end} -> {p.token} ({p.id})"
                  for p in specials] or ["   none"]
        for piece in self.pieces:
            if isinstance(piece, ExplainedSpecial):
                lines.append(f"special token {piece.token} -> [{piece.id}]")
                continue
            if piece.prefix_space_added:
                lines.append("add_prefix_space: a space is put in front")
            lines.append(f"2. pre-tokens (GPT-2 regex) of {piece.text!r}: {[w.text for w in piece.words]}")
            for w in piece.words:
                lines.append(f"3-4. {w.text!r}: UTF-8 bytes {' '.join(f'{b:02x}' for b in w.utf8)}"
                             f" -> symbols {' '.join(w.symbols)}")
                lines += [f"      merge {m.pair[0]!r} + {m.pair[1]!r} (rank {m.rank}) -> {' '.join(m.symbols)}"
                          for m in w.merges] or ["      no merge applies"]
                lines.append(f"      -> tokens {w.tokens} ids {w.ids}")
        lines.append(f"5. with <s> ... </s>: {self.ids}" if self.wrapped else f"ids: {self.ids}")
        return "\n".join(lines)

    __str__ = render
