"""RoBERTa's byte-level BPE tokenizer (which Bort uses), in plain Python, giving the same ids as the Rust one.

Text becomes ids in five steps, each a few lines below, in this order:

1. special tokens written in the text ("<s>", "</s>", "<mask>", ...) are cut out and become their ids;
   `<mask>` also swallows the whitespace in front of it ("is <mask>" -> "is", "<mask>").
2. each remaining stretch of text is split into words by GPT-2's regex (`PRETOKENIZE_PATTERN`, in
   `bpe.py`): "Hello world!" -> "Hello", " world", "!". A word keeps the space in front of it.
3. each word is turned into its UTF-8 bytes, and each byte into one printable character
   (`bytes_to_unicode`, bpe.py: " " -> "Ġ", "\\n" -> "Ċ"), so every string, emoji and all, is spelled with
   256 symbols and nothing is ever unknown.
4. byte-pair merges are applied, lowest rank (= learned earliest) first, until no pair of neighbouring
   symbols has a merge: "Ġ w o r l d" -> "Ġw o r l d" -> ... -> "Ġworld"; each symbol is a vocab id
   (`apply_merges` in bpe.py, with the readable form beside the fast one).
5. `<s> A </s>` (or `<s> A </s></s> B </s>` for a pair) is put around the ids.

Decoding runs step 3 backwards: ids -> symbols -> bytes -> UTF-8 text. `explain` shows every step
as data; loading and saving (vocab.json, merges.txt, read and checked in `bpe.py`) come last.

    >>> tok = Tokenizer.from_pretrained("amazon/bort")
    >>> tok.encode("The capital of France is <mask>.")
    [0, 133, 812, 9, 1470, 16, 50264, 4, 2]
    >>> print(tok.explain("Hello world"))          # every step above, every merge as it happens

Ids follow fairseq's frequency order, not GPT-2's ("Hello" is 31414 here, 15496 in GPT-2): same merges,
different numbering. A vocabulary is trained by `train_bpe` (in `bpe_train.py`).
"""

from __future__ import annotations

import gc
import json
import operator
import os
import sys
from collections.abc import Callable, Iterable, Sequence

import numpy as np
import regex

from . import bpe
from ._files import write_text_atomic
from .bpe import (
    PRETOKENIZE_PATTERN,
    ExplainedSegment,
    ExplainedSpecial,
    ExplainedWord,
    Explanation,
    MergeStep,
    TokenizerError,
    bytes_to_unicode,
)

SPECIAL_TOKENS = ("<s>", "<pad>", "</s>", "<unk>", "<mask>")   # RoBERTa's, in fairseq's id order
LSTRIP_TOKENS = ("<mask>",)                                   # these swallow the whitespace before them
BORT_MAX_LENGTH = 512   # Bort's positions: the length limit when the tokenizer's folder does not give one


class Tokenizer:
    """Byte-level BPE with RoBERTa's special tokens: `encode`, `decode`, a batch `__call__`, `explain`.

    vocab: token string -> id, ids exactly 0..V-1. merges: (left, right) symbol pairs, in rank order
    (the order they were learned); each part and their concatenation must be in the vocab.
    special_tokens: recognised when written in the text, never split; those present among
    "<s>", "<pad>", "</s>", "<unk>", "<mask>" give `bos/pad/eos/unk/mask_token_id`.
    add_prefix_space: put a space in front of text that does not start with one, so the first word is
    tokenized like all the others ("Hello" -> "ĠHello"); like Rust, per stretch between special tokens.
    pair_format: "roberta" gives `<s> A </s></s> B </s>`; "bort" gives `<s> A </s> B </s>`, the format
    of the original Bort fine-tuning (GluonNLP).
    model_max_length: the most tokens the model takes (its positions); `__call__` truncates to it when
    given no max_length. None: not known (then 512, Bort's); `from_pretrained` reads it from the folder.
    """

    # Memory the word cache may take (keys, id tuples and dict slots, as counted by `_remember`); once
    # full, new words are simply not stored. Bounded by bytes, not entries: one 1 MB "word" costs 1 MB.
    cache_bytes = 16 << 20

    def __init__(self, vocab: dict[str, int], merges: Sequence[tuple[str, str]],
                 special_tokens: Sequence[str] = SPECIAL_TOKENS, add_prefix_space: bool = False,
                 pair_format: str = "roberta", lstrip_tokens: Sequence[str] = LSTRIP_TOKENS,
                 model_max_length: int | None = None, _where: Callable[[int], str] | None = None) -> None:
        bpe.check_vocab(vocab)                                    # ids exactly 0..V-1, each once
        self.encoder: dict[str, int] = dict(vocab)                # token -> id
        self.decoder: list[str] = sorted(vocab, key=vocab.__getitem__)   # id -> token

        # The 256 byte symbols must all be there, or some text could not be encoded.
        b2u = bytes_to_unicode()
        missing = [ch for ch in b2u.values() if ch not in vocab]
        if missing:
            raise TokenizerError(f"vocab lacks {len(missing)} of the 256 byte symbols, e.g. {missing[:5]}")
        self._byte_ids = [vocab[b2u[b]] for b in range(256)]   # byte value -> id of its symbol

        # merges: (id_left, id_right) -> (rank, id_merged); a lower rank is applied first.
        self.merges: list[tuple[str, str]] = [tuple(m) for m in merges]
        self._merges: bpe.Merges = bpe.compile_merges(vocab, self.merges, _where)

        # special tokens: recognised in text by one regex, longest first so that no token is cut short
        # by a shorter one that is its prefix. (A plain list of literals: searching it is ~10x faster
        # than with `\s*` in front of <mask>, so the whitespace <mask> swallows is found by hand.)
        for t in special_tokens:
            if t not in vocab:
                raise TokenizerError(f"special token {t!r} is not in the vocab")
            if not t or t[0].isspace():
                raise TokenizerError(f"special token {t!r} must be non-empty and not start with whitespace")
        self.special_tokens = tuple(special_tokens)
        self.all_special_ids: frozenset[int] = frozenset(vocab[t] for t in special_tokens)
        self.lstrip_tokens = tuple(t for t in lstrip_tokens if t in self.special_tokens)
        alternatives = [regex.escape(t) for t in sorted(self.special_tokens, key=len, reverse=True)]
        self._special_re = regex.compile("|".join(alternatives)) if alternatives else None

        ids = {t: vocab.get(t) if t in self.special_tokens else None for t in SPECIAL_TOKENS}
        self.bos_token_id, self.pad_token_id, self.eos_token_id, self.unk_token_id, self.mask_token_id = (
            ids.values())
        if pair_format not in ("roberta", "bort"):
            raise TokenizerError(f"pair_format must be 'roberta' or 'bort', not {pair_format!r}")
        if model_max_length is not None and (type(model_max_length) is not int or model_max_length < 1):
            raise TokenizerError(f"model_max_length must be a positive int or None, not {model_max_length!r}")
        self.pair_format = pair_format
        self.add_prefix_space = add_prefix_space
        self.model_max_length = model_max_length
        self._cache: dict[str, tuple[int, ...]] = {}   # word -> its ids (step 4 done once per word)
        self._cache_bytes = 0                           # what `_remember` counted for the cache so far
        self._token_bytes_list: list[bytes] | None = None   # id -> bytes, built on first decode

    # ------------------------------------------------------------------- step 1: special tokens
    def _segments(self, text: str) -> Iterable[tuple[int, int, int | None]]:
        """Step 1: (start, end, special id or None) for the stretches of text; specials are their own.

        An lstrip token (<mask>) starts at the first of the whitespace characters right before it,
        as in Rust: "is <mask>." -> "is", " <mask>", "."."""
        pos = 0
        if self._special_re is not None:
            for m in self._special_re.finditer(text):
                start, token = m.start(), m.group()
                if token in self.lstrip_tokens:
                    while start > pos and text[start - 1] in bpe.WHITESPACE:
                        start -= 1
                if start > pos:
                    yield pos, start, None
                yield start, m.end(), self.encoder[token]
                pos = m.end()
        if pos < len(text):
            yield pos, len(text), None

    # ------------------------------------------------------------------ step 2: words (pre-tokens)
    def _encode_ordinary(self, segment: str) -> list[int]:
        """Steps 2-4 on text without special tokens: the hot loop, so kept bare."""
        if self.add_prefix_space and segment and not segment.startswith(" "):
            segment = " " + segment
        cache, ids = self._cache, []
        for word in bpe.PRETOKENIZE_RE.findall(segment):    # one regex pass over the whole segment
            ids += cache.get(word) or self._bpe(word)    # cached ids are non-empty tuples, so `or` is safe
        return ids

    # ----------------------------------------------------------- steps 3-4: bytes, then merges
    def _bpe(self, word: str) -> tuple[int, ...]:
        """Steps 3-4 for one word: UTF-8 bytes -> byte symbols (as ids) -> merges -> ids; cached.

        `apply_merges` (bpe.py) is the fast form, O(L log L) for L bytes: a heap of candidate merges
        over a linked list of symbols. `_bpe_reference` below is the readable O(L^2) form; both
        give the same ids (tests/test_bpe.py checks it)."""
        symbols = [self._byte_ids[b] for b in word.encode("utf-8")]   # step 3: (L,) one symbol id per byte
        ids = tuple(bpe.apply_merges(symbols, self._merges))          # step 4
        self._remember(word, ids)
        return ids

    def _bpe_reference(self, word: str, steps: list | None = None) -> tuple[int, ...]:
        """Steps 3-4 the readable way: merge the lowest-ranked pair everywhere, rescan, repeat.

        With `steps`, each merge appends (left id, right id, rank, ids after). Never cached."""
        symbols = [self._byte_ids[b] for b in word.encode("utf-8")]
        return tuple(bpe.apply_merges_reference(symbols, self._merges, steps))

    def _remember(self, word: str, ids: tuple[int, ...]) -> None:
        """Keep `word -> ids` in the cache if it fits in `cache_bytes`.

        A word costs its str object, its tuple of ids (the ints themselves are shared with the vocab)
        and a dict slot (~100 bytes with the table's spare room), so the counted total follows the
        memory the cache really holds."""
        cost = sys.getsizeof(word) + sys.getsizeof(ids) + 100
        if self._cache_bytes + cost <= self.cache_bytes:
            self._cache[word] = ids
            self._cache_bytes += cost

    # ------------------------------------------------------------------ step 5: <s> A </s>
    def _with_specials(self, a: list, b: list | None, bos, eos) -> list:
        """Step 5: <s> A </s>, or <s> A </s></s> B </s> ("roberta"), or <s> A </s> B </s> ("bort")."""
        if b is None:
            return [bos, *a, eos]
        middle = [eos, eos] if self.pair_format == "roberta" else [eos]
        return [bos, *a, *middle, *b, eos]

    def num_special_tokens_to_add(self, pair: bool = False) -> int:
        """How many tokens `add_special_tokens` puts around one text (2) or a pair (4, or 3 for "bort")."""
        return 2 if not pair else (4 if self.pair_format == "roberta" else 3)

    def _check_role_ids(self) -> None:
        if self.bos_token_id is None or self.eos_token_id is None:
            raise TokenizerError("this vocab has no <s> and </s> special tokens; use add_special_tokens=False")

    # --------------------------------------------------------------- all steps: text -> ids
    def encode(self, text: str, pair: str | None = None, add_special_tokens: bool = True) -> list[int]:
        """Token ids of `text` (and `pair`), wrapped in <s> ... </s> unless add_special_tokens=False."""
        ids, _ = self._encode_text(text)
        pair_ids = None if pair is None else self._encode_text(pair)[0]
        if not add_special_tokens:
            return ids if pair_ids is None else ids + pair_ids
        self._check_role_ids()
        return self._with_specials(ids, pair_ids, self.bos_token_id, self.eos_token_id)

    def tokenize(self, text: str) -> list[str]:
        """The token strings of `text`, without <s>/</s>: "Hello world" -> ["Hello", "Ġworld"]."""
        return [self.decoder[i] for i in self._encode_text(text)[0]]

    def _encode_text(self, text: str, offsets: bool = False) -> tuple[list[int], list[tuple[int, int]] | None]:
        """ids (and, if asked, (start, end) character spans) of `text`, special tokens in it included."""
        if not isinstance(text, str):
            raise TokenizerError(f"expected text as str, got {type(text).__name__}: {text!r:.80}")
        try:
            if not offsets and (self._special_re is None or self._special_re.search(text) is None):
                return self._encode_ordinary(text), None          # the common case: no special tokens
            if not offsets:
                ids: list[int] = []
                for start, end, special in self._segments(text):
                    if special is None:
                        ids += self._encode_ordinary(text[start:end])
                    else:
                        ids.append(special)
                return ids, None
            return self._encode_with_offsets(text)
        except UnicodeEncodeError:
            raise _surrogate_error(text) from None

    def _encode_with_offsets(self, text: str) -> tuple[list[int], list[tuple[int, int]]]:
        """Like the fast path in `_encode_text`, also keeping each token's character span in `text`.

        A token holding only some bytes of a character (an emoji split in two) gets the whole
        character's span, as in Rust. A special token's span includes the whitespace it swallowed.
        """
        ids: list[int] = []
        spans: list[tuple[int, int]] = []
        token_bytes = self._token_bytes()
        for start, end, special in self._segments(text):
            if special is not None:
                ids.append(special)
                spans.append((start, end))
                continue
            segment, shift = text[start:end], start
            if self.add_prefix_space and not segment.startswith(" "):
                segment, shift = " " + segment, start - 1   # the added space has no place in `text`
            for m in bpe.PRETOKENIZE_RE.finditer(segment):
                word = m.group()
                word_ids = self._cache.get(word) or self._bpe(word)
                char_of_byte = [c for c, ch in enumerate(word) for _ in range(len(ch.encode("utf-8")))]
                b = 0
                for i in word_ids:
                    nb = len(token_bytes[i])
                    s, e = char_of_byte[b], char_of_byte[b + nb - 1] + 1   # chars holding the first/last byte
                    b += nb
                    base = shift + m.start()
                    ids.append(i)
                    spans.append((max(base + s, start), max(base + e, start)))
        return ids, spans

    # ------------------------------------------------------------------------------ batch encoding
    @staticmethod
    def _truncate_pair(n_a: int, n_b: int, budget: int) -> tuple[int, int]:
        """Longest-first truncation, exactly as the Rust tokenizer does it: how many tokens of A and B
        to keep so that n_a + n_b <= budget. The shorter keeps all it can; if both must be cut, each
        keeps budget // 2, and the odd token goes to the longer one (to B when they are equal)."""
        if n_a + n_b <= budget:
            return n_a, n_b
        short = min(n_a, n_b)
        keep_short, keep_long = short, max(short, budget - short)
        if keep_short + keep_long > budget:
            keep_short, keep_long = budget // 2, budget // 2 + budget % 2
        return (keep_long, keep_short) if n_a > n_b else (keep_short, keep_long)

    def __call__(self, texts: str | Sequence[str], pairs: str | Sequence[str] | None = None,
                 padding: bool | str = True, truncation: bool = True, max_length: int | None = None,
                 return_offsets: bool = False, add_special_tokens: bool = True) -> dict[str, np.ndarray]:
        """Encode a batch into padded int64 arrays: {"input_ids": (B, T), "attention_mask": (B, T)},
        plus "offset_mapping": (B, T, 2) character spans if return_offsets (padding and added
        special tokens get (0, 0)). A single str is a batch of one.

        padding: True/"longest" pads to the longest row, "max_length" to max_length, False needs
        rows of equal length. truncation: cut each row to max_length, a pair longest-first.
        max_length: None takes `model_max_length` (the model's positions, read from its folder; 512,
        Bort's, when unknown), so `model(tok(texts)["input_ids"])` never runs past the positions.
        """
        if max_length is None:
            max_length = self.model_max_length if self.model_max_length is not None else BORT_MAX_LENGTH
        texts = _as_list(texts, "texts")
        pairs = None if pairs is None else _as_list(pairs, "pairs")
        if pairs is not None and len(pairs) != len(texts):
            raise TokenizerError(f"got {len(texts)} texts but {len(pairs)} pairs")
        if add_special_tokens:
            self._check_role_ids()
        n_special = self.num_special_tokens_to_add(pair=pairs is not None) if add_special_tokens else 0
        if truncation and max_length < n_special:
            raise TokenizerError(f"max_length={max_length} leaves no room: {n_special} special tokens are added")
        rows, row_spans = [], []
        for k, text in enumerate(texts):
            try:
                a, a_spans = self._encode_text(text, offsets=return_offsets)
                b, b_spans = (None, None) if pairs is None else self._encode_text(pairs[k], offsets=return_offsets)
            except TokenizerError as e:
                raise TokenizerError(f"batch item {k}: {e}") from None
            if truncation:
                budget = max_length - n_special
                if b is None:
                    keep_a, keep_b = min(len(a), budget), None
                else:
                    keep_a, keep_b = self._truncate_pair(len(a), len(b), budget)
                a, b = a[:keep_a], (None if b is None else b[:keep_b])
                if return_offsets:
                    a_spans, b_spans = a_spans[:keep_a], (None if b_spans is None else b_spans[:keep_b])
            if add_special_tokens:
                rows.append(self._with_specials(a, b, self.bos_token_id, self.eos_token_id))
                if return_offsets:
                    row_spans.append(self._with_specials(a_spans, b_spans, (0, 0), (0, 0)))
            else:
                rows.append(a if b is None else a + b)
                if return_offsets:
                    row_spans.append(a_spans if b_spans is None else a_spans + b_spans)

        longest = max((len(r) for r in rows), default=0)
        if padding in (True, "longest"):
            T = longest
        elif padding == "max_length":
            if longest > max_length:
                raise TokenizerError(f"padding='max_length' needs max_length >= the longest row ({longest})")
            T = max_length
        elif padding is False:
            if any(len(r) != longest for r in rows):
                raise TokenizerError("rows differ in length; use padding=True (or truncation to equal lengths)")
            T = longest
        else:
            raise TokenizerError(f"padding must be True, False, 'longest' or 'max_length', not {padding!r}")
        if self.pad_token_id is None and any(len(r) < T for r in rows):
            raise TokenizerError("padding needs a <pad> token, which this vocab lacks")

        B = len(rows)
        input_ids = np.full((B, T), self.pad_token_id if self.pad_token_id is not None else 0, np.int64)  # (B, T)
        attention_mask = np.zeros((B, T), np.int64)                                                       # (B, T)
        for k, row in enumerate(rows):
            input_ids[k, :len(row)] = row
            attention_mask[k, :len(row)] = 1
        out = {"input_ids": input_ids, "attention_mask": attention_mask}
        if return_offsets:
            offsets = np.zeros((B, T, 2), np.int64)                                                       # (B, T, 2)
            for k, spans in enumerate(row_spans):
                if spans:
                    offsets[k, :len(spans)] = spans
            out["offset_mapping"] = offsets
        return out

    # ----------------------------------------------------------------------------------- decoding
    def _token_bytes(self) -> list[bytes]:
        """id -> the bytes it stands for. Tokens that are not spelled in byte symbols (none in RoBERTa
        but the specials, which are plain ASCII anyway) stand for their own UTF-8, as in Rust."""
        if self._token_bytes_list is None:
            u2b = {ch: b for b, ch in bytes_to_unicode().items()}
            table = []
            for token in self.decoder:
                try:
                    table.append(bytes(u2b[ch] for ch in token))
                except KeyError:
                    table.append(token.encode("utf-8"))
            self._token_bytes_list = table
        return self._token_bytes_list

    def _check_id(self, value: object, position: int) -> int:
        try:
            i = operator.index(value)    # ints and NumPy ints; not floats, not strings
        except TypeError:
            raise TokenizerError(f"id {value!r} at position {position} is not an integer") from None
        if not 0 <= i < len(self.decoder):
            raise TokenizerError(f"id {i} at position {position} is not in the vocabulary "
                                 f"(ids are 0..{len(self.decoder) - 1})")
        return i

    def decode(self, ids: Iterable[int], skip_special_tokens: bool = False) -> str:
        """Text of `ids`: token bytes joined, then read as UTF-8 (invalid sequences become U+FFFD)."""
        if isinstance(ids, np.ndarray):
            ids = ids.tolist()
        table, specials = self._token_bytes(), self.all_special_ids
        parts = []
        for position, i in enumerate(ids):
            i = i if type(i) is int and 0 <= i < len(table) else self._check_id(i, position)
            if not (skip_special_tokens and i in specials):
                parts.append(table[i])
        return b"".join(parts).decode("utf-8", errors="replace")

    def convert_tokens_to_ids(self, tokens: str | Sequence[str]) -> int | list[int]:
        """Vocab lookup; an unknown token gives `unk_token_id` (as in transformers)."""
        if isinstance(tokens, str):
            return self.encoder.get(tokens, self.unk_token_id)
        return [self.encoder.get(t, self.unk_token_id) for t in tokens]

    def convert_ids_to_tokens(self, ids: int | Sequence[int]) -> str | list[str]:
        """Vocab lookup backwards; an id outside the vocab is an error."""
        if isinstance(ids, (int, np.integer)):
            return self.decoder[self._check_id(ids, 0)]
        return [self.decoder[self._check_id(i, p)] for p, i in enumerate(ids)]

    # ------------------------------------------------------------------ showing the work: explain
    def explain(self, text: str) -> Explanation:
        """Encode `text` showing the work, as data: the special tokens found (step 1), each stretch's
        pre-tokens (2), each word's bytes and symbols (3) and every merge with its rank (4), the ids (5).

        `print(tok.explain(text))` (or `.render()`) shows it as text; a notebook can draw the fields.
        (Like minGPT's `encode_and_show_work`.) Merges come from the readable `_bpe_reference`, and the
        word cache is neither read nor written, so every merge is shown even for words seen before.
        """
        if not isinstance(text, str):
            raise TokenizerError(f"expected text as str, got {type(text).__name__}")
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            raise _surrogate_error(text) from None
        b2u, name = bytes_to_unicode(), self.decoder
        pieces: list[ExplainedSpecial | ExplainedSegment] = []
        ids: list[int] = []
        for start, end, special in self._segments(text):
            if special is not None:
                pieces.append(ExplainedSpecial(start, end, name[special], special))
                ids.append(special)
                continue
            segment = text[start:end]
            prefixed = self.add_prefix_space and not segment.startswith(" ")
            segment = " " + segment if prefixed else segment
            words = []
            for word in bpe.PRETOKENIZE_RE.findall(segment):
                steps: list[tuple[int, int, int, list[int]]] = []
                word_ids = list(self._bpe_reference(word, steps))
                merges = [MergeStep((name[a], name[b]), rank, [name[i] for i in after]) for a, b, rank, after in steps]
                data = word.encode("utf-8")
                words.append(ExplainedWord(word, data, [b2u[b] for b in data], merges,
                                           [name[i] for i in word_ids], word_ids))
                ids += word_ids
            pieces.append(ExplainedSegment(segment, prefixed, words))
        wrapped = self.bos_token_id is not None and self.eos_token_id is not None
        if wrapped:
            ids = self._with_specials(ids, None, self.bos_token_id, self.eos_token_id)
        return Explanation(text, pieces, ids, wrapped)

    # ------------------------------------------------------------------------------- the vocab
    @property
    def vocab_size(self) -> int:
        """Number of tokens, V (ids are 0..V-1)."""
        return len(self.decoder)

    def __len__(self) -> int:
        return len(self.decoder)

    def get_vocab(self) -> dict[str, int]:
        """A copy of the token -> id dict."""
        return dict(self.encoder)

    def __repr__(self) -> str:
        return (f"Tokenizer(vocab_size={self.vocab_size}, merges={len(self.merges)}, "
                f"add_prefix_space={self.add_prefix_space}, pair_format={self.pair_format!r}, "
                f"model_max_length={self.model_max_length})")

    # ------------------------------------------------------------------------- loading and saving
    @classmethod
    def from_files(cls, vocab_file: str | os.PathLike, merges_file: str | os.PathLike,
                   **kwargs) -> Tokenizer:
        """Load `vocab.json` (token -> id) and `merges.txt` ("#version" line, then "left right" per line)."""
        vocab_file, merges_file = os.fspath(vocab_file), os.fspath(merges_file)
        # Loading builds ~150k small objects, which would trigger many full passes of Python's cyclic
        # garbage collector over them (there are no cycles to find); pausing it halves the load time.
        gc_was_enabled = gc.isenabled()
        gc.disable()
        try:
            vocab = bpe.read_vocab(vocab_file)
            merges, where = bpe.read_merges(merges_file)
            try:
                return cls(vocab, merges, _where=where, **kwargs)
            except TokenizerError:
                if not bpe.ids_are_a_range(vocab):     # a token written twice leaves a hole in the ids:
                    bpe.read_json(vocab_file, no_duplicates=True)   # name it, if that is what happened
                raise
        finally:
            if gc_was_enabled:
                gc.enable()

    @classmethod
    def from_pretrained(cls, path_or_repo_id: str | os.PathLike, revision: str = "main",
                        **kwargs) -> Tokenizer:
        """Load "bort-tiny" (embedded), a folder holding vocab.json + merges.txt, or a hub id
        (`minibort.checkpoint.resolve`); the model's length limit comes from the same folder
        (`read_model_max_length`)."""
        from .checkpoint import resolve  # the one owner of "a name -> a folder"
        folder = resolve(path_or_repo_id, revision, need="tokenizer")
        kwargs.setdefault("model_max_length", read_model_max_length(folder))
        return cls.from_files(os.path.join(folder, "vocab.json"), os.path.join(folder, "merges.txt"), **kwargs)

    def save_pretrained(self, directory: str | os.PathLike) -> None:
        """Write vocab.json and merges.txt into `directory`, each atomically (temp file, then rename),
        and `model_max_length` into its tokenizer_config.json when known (other keys there are kept)."""
        directory = os.fspath(directory)
        os.makedirs(directory, exist_ok=True)
        vocab = {t: i for i, t in enumerate(self.decoder)}
        write_text_atomic(os.path.join(directory, "vocab.json"), json.dumps(vocab, ensure_ascii=False))
        merges = "".join(f"{a} {b}\n" for a, b in self.merges)
        write_text_atomic(os.path.join(directory, "merges.txt"), "#version: 0.2\n" + merges)
        if self.model_max_length is not None:
            path = os.path.join(directory, "tokenizer_config.json")
            config = bpe.read_json(path) if os.path.isfile(path) else {}
            if not isinstance(config, dict):
                raise TokenizerError(f"{path}: expected a JSON object; move the file away, then save again")
            config["model_max_length"] = self.model_max_length
            write_text_atomic(path, json.dumps(config, indent=2, ensure_ascii=False) + "\n")


# -------------------------------------------------------------------------------------------------
# Checking input, and the model's length limit in a folder.
def _surrogate_error(text: str) -> TokenizerError:
    """The error for text holding a lone surrogate (a str that has no UTF-8 form)."""
    pos = next(i for i, ch in enumerate(text) if "\ud800" <= ch <= "\udfff")
    return TokenizerError(f"text has a lone surrogate {text[pos]!r} at index {pos}; it has no UTF-8 "
                          "form, so it cannot be encoded (fix the text's decoding upstream)")


def _as_list(texts: object, name: str) -> list:
    """A batch argument as a list: one str is a batch of one; any other iterable (list, tuple, array)."""
    if isinstance(texts, str):
        return [texts]
    try:
        return list(texts)
    except TypeError:
        raise TokenizerError(f"{name}: expected a str or a sequence of str, got {type(texts).__name__}") from None


_NO_LIMIT = 1 << 60   # transformers writes int(1e30) as model_max_length when it knows no limit


def read_model_max_length(folder: str | os.PathLike) -> int | None:
    """The model's length limit as a folder states it: tokenizer_config.json's `model_max_length`, else
    config.json's `max_position_embeddings` (Bort's positions start at 0, so all of them are usable);
    None when neither says."""
    for name, key in (("tokenizer_config.json", "model_max_length"), ("config.json", "max_position_embeddings")):
        path = os.path.join(folder, name)
        if not os.path.isfile(path):
            continue
        config = bpe.read_json(path)
        value = config.get(key) if isinstance(config, dict) else None
        if value is None or (type(value) is int and value >= _NO_LIMIT):
            continue
        if type(value) is not int or value < 1:
            raise TokenizerError(f"{path}: {key} must be a positive integer, got {value!r}; fix the file "
                                 "or pass model_max_length= explicitly")
        return value
    return None


__all__ = ["PRETOKENIZE_PATTERN", "SPECIAL_TOKENS", "Explanation", "Tokenizer", "TokenizerError",
           "bytes_to_unicode", "read_model_max_length"]


if __name__ == "__main__":
    import argparse
    ap = argparse.ArgumentParser(prog="python -m minibort.tokenizer", description="Show how a text becomes ids.")
    ap.add_argument("text", nargs="?", default="Hello world", help="the text (default: %(default)s)")
    ap.add_argument("--model", default="bort-tiny", help="embedded model name, folder with vocab.json + "
                    "merges.txt, or hub id (default: %(default)s)")
    args = ap.parse_args()
    try:
        print(Tokenizer.from_pretrained(args.model).explain(args.text))
    except (ValueError, OSError) as e:          # TokenizerError, CheckpointError, HubError
        sys.exit(f"error: {e}")
# python -m minibort.tokenizer prints (bort-tiny's 4096-token vocabulary, learned from Python's own docs,
# so "Hello" is not one token here as it is in RoBERTa's):
# text: 'Hello world'
# 1. special tokens found in the text:
#    none
# 2. pre-tokens (GPT-2 regex) of 'Hello world': ['Hello', ' world']
# 3-4. 'Hello': UTF-8 bytes 48 65 6c 6c 6f -> symbols H e l l o
#       merge 'l' + 'l' (rank 68) -> H e ll o
#       merge 'H' + 'e' (rank 1392) -> He ll o
#       merge 'll' + 'o' (rank 2397) -> He llo
#       -> tokens ['He', 'llo'] ids [1653, 2658]
# 3-4. ' world': UTF-8 bytes 20 77 6f 72 6c 64 -> symbols Ġ w o r l d
#       merge 'o' + 'r' (rank 8) -> Ġ w or l d
#       merge 'Ġ' + 'w' (rank 26) -> Ġw or l d
#       merge 'l' + 'd' (rank 145) -> Ġw or ld
#       merge 'Ġw' + 'or' (rank 3459) -> Ġwor ld
#       -> tokens ['Ġwor', 'ld'] ids [3720, 406]
# 5. with <s> ... </s>: [0, 1653, 2658, 3720, 406, 2]
