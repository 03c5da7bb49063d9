"""Training a byte-level BPE vocabulary: learn which neighbouring symbols to merge, most frequent first.

The algorithm (Sennrich et al. 2016, on bytes as in GPT-2):

1. pre-tokenize the texts exactly as `Tokenizer` does (special tokens cut out, GPT-2's regex) and count
   each distinct word once with its frequency: "the" seen 10,000 times is one entry, weight 10,000.
2. spell every word in its UTF-8 bytes; the vocab starts as the special tokens + the 256 bytes.
3. repeat until the vocab is big enough: find the most frequent pair of neighbouring symbols (summed
   over words, weighted by frequency), add their concatenation to the vocab and merge that pair
   everywhere.

Step 3 is fast because nothing is recounted from scratch: `pair_count` holds every pair's count and
`where` the words each pair occurs in, so a merge touches only the words that contain its pair, and
a heap gives the most frequent pair without scanning all of them.

Layout of the result (so files load in Rust `tokenizers` and here with the same ids):
ids 0..S-1 are the special tokens in the order given (by default <s>=0 <pad>=1 </s>=2 <unk>=3
<mask>=4; RoBERTa puts <mask> last, here it is with the other specials), then the 256 byte symbols in
byte order (byte b has id S + b), then one token per merge in the order learned.
"""

from __future__ import annotations

import heapq
import os
from collections import Counter
from collections.abc import Iterable, Sequence
from itertools import pairwise

import regex

from .bpe import PRETOKENIZE_RE, bytes_to_unicode, merge_pair
from .tokenizer import SPECIAL_TOKENS, Tokenizer, TokenizerError


def train_bpe(texts: Iterable[str], vocab_size: int, special_tokens: Sequence[str] = SPECIAL_TOKENS,
              out_dir: str | os.PathLike | None = None, min_frequency: int = 2) -> Tokenizer:
    """Learn a byte-level BPE vocabulary of `vocab_size` tokens from `texts`; return it as a Tokenizer.

    With `out_dir`, also write vocab.json + merges.txt there. Training stops early when no pair of
    neighbouring symbols occurs `min_frequency` times, so the vocab can come out smaller than asked.
    """
    specials = list(special_tokens)
    if len(set(specials)) != len(specials) or not all(isinstance(t, str) and t for t in specials):
        raise TokenizerError(f"special_tokens must be distinct non-empty strings, got {specials}")
    b2u = bytes_to_unicode()
    S = len(specials)
    clash = [t for t in specials if t in b2u.values()]
    if clash:
        raise TokenizerError(f"special tokens {clash} are spelled like byte symbols; pick other names")
    if vocab_size < S + 256:
        raise TokenizerError(f"vocab_size={vocab_size} is too small: {S} special tokens + 256 bytes come first")
    if isinstance(texts, str):
        texts = [texts]

    # 1. distinct words and their frequencies. Special tokens in the text are cut out first, as when
    # encoding, so no merge can ever spell one of them.
    split = regex.compile("|".join(regex.escape(t) for t in sorted(specials, key=len, reverse=True)))
    word_freq: Counter[str] = Counter()
    for k, text in enumerate(texts):
        if not isinstance(text, str):
            raise TokenizerError(f"text {k}: expected str, got {type(text).__name__}")
        for segment in split.split(text):
            word_freq.update(PRETOKENIZE_RE.findall(segment))

    # 2. every word as a list of symbol ids (byte b -> id S + b), with its frequency.
    words: list[list[int]] = []
    freqs: list[int] = []
    for word, f in word_freq.items():
        try:
            words.append([S + b for b in word.encode("utf-8")])
        except UnicodeEncodeError:
            raise TokenizerError(f"training text holds a lone surrogate in the word {word!r}; it has "
                                 "no UTF-8 form") from None
        freqs.append(f)
    vocab: dict[str, int] = {t: i for i, t in enumerate(specials)}
    vocab.update({b2u[b]: S + b for b in range(256)})
    symbols = list(vocab)                               # id -> symbol string

    pair_count: Counter[tuple[int, int]] = Counter()    # (a, b) -> how often b follows a, all words
    where: dict[tuple[int, int], set[int]] = {}         # (a, b) -> indices of words that hold it
    for w, (word, f) in enumerate(zip(words, freqs)):
        for pair in pairwise(word):
            pair_count[pair] += f
            where.setdefault(pair, set()).add(w)
    # Max-heap by count (heapq is a min-heap, so counts are negated); ties go to the smaller pair of
    # ids, so training is deterministic. Entries go stale when counts change; a popped entry is used
    # only if its count is still current ("lazy deletion"), and a fresh entry is pushed on each change.
    heap = [(-c, pair) for pair, c in pair_count.items()]
    heapq.heapify(heap)

    # 3. merge the most frequent pair until the vocab is full.
    merges: list[tuple[str, str]] = []
    banned: set[tuple[int, int]] = set()
    while len(vocab) < vocab_size and heap:
        neg, pair = heapq.heappop(heap)
        if -neg != pair_count.get(pair, 0) or pair in banned:
            continue                                    # stale entry
        if -neg < min_frequency:
            break
        a, b = pair
        token = symbols[a] + symbols[b]
        if vocab.get(token, S) < S:                     # would spell a special token (one with a byte
            banned.add(pair)                            # symbol like "Ġ" in it): never merge it
            continue
        if token not in vocab:                          # (two merges can make the same string: "a bc",
            vocab[token] = len(symbols)                 #  "ab c"; then both merges share one id)
            symbols.append(token)
        new = vocab[token]
        merges.append((symbols[a], symbols[b]))

        changed = set()
        for w in where.pop(pair):
            word, f = words[w], freqs[w]
            if len(word) < 2:
                continue
            # Take the word's pairs out of the counts, merge, put the new word's pairs back in. Only
            # pairs next to a merge change, but recounting a short word is simpler and as fast.
            for p in pairwise(word):
                pair_count[p] -= f
                changed.add(p)
            merged = merge_pair(word, a, b, new)        # the same merge the tokenizer applies (bpe.py)
            words[w] = merged
            for p in pairwise(merged):
                pair_count[p] += f
                where.setdefault(p, set()).add(w)
                changed.add(p)
        for p in changed:
            c = pair_count[p]
            if c > 0:
                heapq.heappush(heap, (-c, p))
            else:
                del pair_count[p]                       # gone everywhere; its `where` set may be stale
        pair_count.pop(pair, None)

    tok = Tokenizer(vocab, merges, special_tokens=specials)
    if out_dir is not None:
        tok.save_pretrained(out_dir)
    return tok
