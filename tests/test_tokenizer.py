"""The tokenizer, numpy-only: RoBERTa's examples, special tokens, batches, offsets, errors, and
properties checked by hypothesis (round trip, ids in range, batch == single, offsets slice back).

The real roberta-base vocab comes from ../shared (skipped, with a reason, where it is absent); the
property tests also run on a small vocab that minibort trains itself, so they never skip.
"""

from __future__ import annotations

import json
import os
import pathlib

import numpy as np
import pytest
import regex
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from minibort import train_bpe
from minibort.bpe import WHITESPACE, bytes_to_unicode
from minibort.tokenizer import Tokenizer, TokenizerError

SHARED = pathlib.Path(__file__).resolve().parents[1].parent / "shared"
ROBERTA_DIR = SHARED / "hub-mirror" / "amazon" / "bort" / "resolve" / "main"
SPECIALS = ("<s>", "<pad>", "</s>", "<unk>", "<mask>")
PROPERTY = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# Text that stresses a byte-level tokenizer: whitespace runs, digits, contractions, emoji (with skin tones,
# joiners, flags), CJK, combining marks, other scripts, and bits of special-token syntax.
FRAGMENTS = [" ", "  ", "   ", "\n", "\n\n", "\t", " \t\n ", "\r\n", "\u00a0", "\u3000", "\x1c", "\x85",
             "0", "42", " 1999", "3.14", "1,000", "٣٤", "'s", "'t", "'re", "'ve", "'m", "'ll", "'d", "n't",
             "'S", "'LL", "don't", "😀", "👍🏽", "👨‍👩‍👧", "🇫🇷", "中文", "日本語です", "한국어", "e\u0301",
             "a\u0308", "\u0301", "Ωμέγα", "résumé", "Hello", " world", "<", ">", "/", "mask", "<mas", "s>"]
SPECIAL_FRAGMENTS = ["<s>", "</s>", "<pad>", "<unk>", "<mask>", " <mask>", "  <mask>", "\n<mask>", "<mask><mask>"]
plain_text = st.lists(st.one_of(st.text(max_size=8), st.sampled_from(FRAGMENTS)), max_size=10).map("".join)
any_text = st.lists(st.one_of(st.text(max_size=8), st.sampled_from(FRAGMENTS + SPECIAL_FRAGMENTS)),
                    max_size=10).map("".join)

TRAINING_TEXT = """\
The tokenizer splits text into words, then each word into bytes, and merges the most frequent pairs.
It's a byte-level BPE: there's no unknown token, because every string is spelled in 256 bytes.
Numbers like 1234 and 3.14159, code like `def f(x): return x + 1`, and names like Ωμέγα or 東京 all work.
"""


@pytest.fixture(scope="module")
def roberta() -> Tokenizer:
    if not ROBERTA_DIR.is_dir():
        pytest.skip(f"roberta-base vocab.json/merges.txt not found at {ROBERTA_DIR} (../shared/hub-mirror)")
    return Tokenizer.from_pretrained(str(ROBERTA_DIR))


@pytest.fixture(scope="module")
def small() -> Tokenizer:
    return train_bpe([TRAINING_TEXT] * 3, vocab_size=400)


@pytest.fixture(scope="module", params=["small", "roberta"])
def tok(request) -> Tokenizer:
    return request.getfixturevalue(request.param)


def has_special_text(s: str) -> bool:
    return any(t in s for t in SPECIALS)


# ------------------------------------------------------------------------------ RoBERTa's examples
def test_issue_examples(roberta):
    assert roberta.encode("Hello world") == [0, 31414, 232, 2]
    assert roberta.encode(" Hello world") == [0, 20920, 232, 2]
    assert roberta.encode("The capital of France is <mask>.") == [0, 133, 812, 9, 1470, 16, 50264, 4, 2]


def test_roberta_ids_and_sizes(roberta):
    assert (roberta.bos_token_id, roberta.pad_token_id, roberta.eos_token_id, roberta.unk_token_id,
            roberta.mask_token_id) == (0, 1, 2, 3, 50264)
    assert len(roberta) == roberta.vocab_size == 50265
    assert len(roberta.merges) == 50000
    assert roberta.tokenize("Hello world") == ["Hello", "Ġworld"]
    assert roberta.convert_tokens_to_ids(["Hello", "Ġworld", "no-such-token"]) == [31414, 232, 3]
    assert roberta.convert_ids_to_tokens([0, 31414, 50264]) == ["<s>", "Hello", "<mask>"]
    assert roberta.convert_tokens_to_ids("<mask>") == 50264


def test_pairs_and_bort_format(roberta):
    a, b = roberta.encode("Hello", add_special_tokens=False), roberta.encode("world", add_special_tokens=False)
    assert roberta.encode("Hello", "world") == [0, *a, 2, 2, *b, 2]
    assert roberta.encode("Hello", "world", add_special_tokens=False) == a + b
    bort = Tokenizer.from_pretrained(str(ROBERTA_DIR), pair_format="bort")
    assert bort.encode("Hello", "world") == [0, *a, 2, *b, 2]
    assert bort.num_special_tokens_to_add(pair=True) == 3
    with pytest.raises(TokenizerError, match="pair_format"):
        Tokenizer.from_pretrained(str(ROBERTA_DIR), pair_format="bert")


def test_special_tokens_in_text(roberta):
    # each special written in the text is one id; <mask> swallows all whitespace before it, others none
    assert roberta.encode("a<s>b</s>c<pad><unk>", add_special_tokens=False) == [102, 0, 428, 2, 438, 1, 3]
    assert roberta.encode("x  \t <mask>y", add_special_tokens=False) == [1178, 50264, 219]
    assert roberta.encode("x </s>", add_special_tokens=False) == [1178, 1437, 2]   # " " stays before </s>
    assert roberta.decode(roberta.encode("a <mask> b")) == "<s>a<mask> b</s>"
    assert roberta.decode(roberta.encode("a <mask> b"), skip_special_tokens=True) == "a b"


def test_add_prefix_space(roberta):
    spaced = Tokenizer.from_pretrained(str(ROBERTA_DIR), add_prefix_space=True)
    assert spaced.encode("Hello world") == roberta.encode(" Hello world") == [0, 20920, 232, 2]
    assert spaced.encode(" Hello") == roberta.encode(" Hello")          # already has one: none added


def test_explain_shows_every_step(roberta):
    shown = roberta.explain("Hello world <mask>").render()
    for step in ("'Hello', ' world'", "48 65 6c 6c 6f", "merge 'l' + 'l' (rank 41)", "Ġworld", "<mask> (50264)",
                 "[0, 31414, 232, 50264, 2]"):
        assert step in shown, step
    assert roberta.encode("Hello world <mask>") == [0, 31414, 232, 50264, 2]


def test_explain_returns_data(roberta, small):
    from minibort.tokenizer import ExplainedSegment, ExplainedSpecial, MergeStep
    shown = roberta.explain("Hello world <mask>")
    assert str(shown) == shown.render() and shown.ids == roberta.encode("Hello world <mask>") and shown.wrapped
    segment, special = shown.pieces
    assert isinstance(segment, ExplainedSegment) and isinstance(special, ExplainedSpecial)
    assert (special.start, special.end, special.token, special.id) == (11, 18, "<mask>", 50264)  # " <mask>"
    hello, world = segment.words
    assert (hello.text, hello.utf8, hello.symbols) == ("Hello", b"Hello", ["H", "e", "l", "l", "o"])
    assert hello.merges[0] == MergeStep(("l", "l"), 41, ["H", "e", "ll", "o"])
    assert [m.rank for m in hello.merges] == [41, 439, 10853, 15240] and hello.merges[-1].symbols == ["Hello"]
    assert (world.symbols[0], world.tokens, world.ids) == ("Ġ", ["Ġworld"], [232])
    # on any vocab: the merges shown lead to the ids encode gives, and each step's rank is its pair's
    for text in (TRAINING_TEXT, "a <mask> b", "no merges: \x00\x01"):
        e = small.explain(text)
        assert e.ids == small.encode(text)
        for word in (w for p in e.pieces if isinstance(p, ExplainedSegment) for w in p.words):
            assert (word.merges[-1].symbols if word.merges else word.symbols) == word.tokens
            assert [small.merges[m.rank] for m in word.merges] == [m.pair for m in word.merges]
    with pytest.raises(TokenizerError, match="str"):
        small.explain(None)


# ----------------------------------------------------------------------------------- batch call
def test_batch_padding_and_arrays(roberta):
    out = roberta(["Hello world", "a"])
    assert set(out) == {"input_ids", "attention_mask"}
    assert out["input_ids"].dtype == np.int64 and out["attention_mask"].dtype == np.int64
    np.testing.assert_array_equal(out["input_ids"], [[0, 31414, 232, 2], [0, 102, 2, 1]])
    np.testing.assert_array_equal(out["attention_mask"], [[1, 1, 1, 1], [1, 1, 1, 0]])
    assert roberta("a", padding="max_length", max_length=6)["input_ids"].tolist() == [[0, 102, 2, 1, 1, 1]]
    with pytest.raises(TokenizerError, match="padding=True"):
        roberta(["Hello world", "a"], padding=False)


def test_truncation_longest_first(roberta):
    # budget 10 - 4 specials = 6: the shorter pair member keeps all it can, both cut -> 3 + 3, odd one
    # to the longer member (to B on a tie), as the Rust tokenizer does.
    assert Tokenizer._truncate_pair(10, 2, 6) == (4, 2)
    assert Tokenizer._truncate_pair(2, 10, 6) == (2, 4)
    assert Tokenizer._truncate_pair(10, 10, 6) == (3, 3)
    assert Tokenizer._truncate_pair(10, 9, 7) == (4, 3)
    assert Tokenizer._truncate_pair(9, 9, 7) == (3, 4)
    assert Tokenizer._truncate_pair(3, 2, 7) == (3, 2)
    long_text = "one two three four five six seven eight nine ten"
    row = roberta([long_text], max_length=5)["input_ids"][0].tolist()
    assert row == roberta.encode(long_text)[:4] + [2]
    pair = roberta([long_text], ["x y"], max_length=10)["input_ids"][0].tolist()
    a, b = roberta.encode(long_text, add_special_tokens=False), roberta.encode("x y", add_special_tokens=False)
    assert pair == [0, *a[:4], 2, 2, *b, 2]
    assert roberta([long_text], truncation=False)["input_ids"].shape == (1, len(a) + 2)
    with pytest.raises(TokenizerError, match="max_length"):
        roberta(["a"], ["b"], max_length=3)


def test_offsets_example(roberta):
    out = roberta(["Hello world", "é😀 <mask>"], return_offsets=True)
    offsets = out["offset_mapping"]
    assert offsets.shape == (*out["input_ids"].shape, 2) and offsets.dtype == np.int64
    assert offsets[0].tolist() == [[0, 0], [0, 5], [5, 11], [0, 0], [0, 0], [0, 0]]
    # the emoji is split over two byte tokens: both get its whole span; <mask> spans its swallowed space
    assert offsets[1].tolist() == [[0, 0], [0, 1], [1, 2], [1, 2], [2, 9], [0, 0]]


# ------------------------------------------------------------------------------------ properties
@PROPERTY
@given(text=plain_text)
def test_roundtrip_and_range(tok, text):
    if has_special_text(text):
        return
    ids = tok.encode(text, add_special_tokens=False)
    assert all(type(i) is int and 0 <= i < tok.vocab_size for i in ids)
    assert tok.decode(ids) == text
    assert tok.decode(tok.encode(text), skip_special_tokens=True) == text


@PROPERTY
@given(text=any_text)
def test_ids_in_range_with_specials(tok, text):
    ids = tok.encode(text)
    assert ids[0] == tok.bos_token_id and ids[-1] == tok.eos_token_id
    assert all(0 <= i < tok.vocab_size for i in ids)
    # decoding gives the text back, less the whitespace that <mask> swallowed
    assert tok.decode(ids[1:-1]) == regex.sub(r"\s*<mask>", "<mask>", text)


@PROPERTY
@given(texts=st.lists(any_text, min_size=1, max_size=4), pairs=st.one_of(st.none(), st.lists(any_text, min_size=4,
                                                                                         max_size=4)))
def test_batch_agrees_with_single(tok, texts, pairs):
    pairs = None if pairs is None else pairs[:len(texts)]
    out = tok(texts, pairs, truncation=False, return_offsets=True)
    for k, text in enumerate(texts):
        single = tok.encode(text, None if pairs is None else pairs[k])
        n = len(single)
        assert out["input_ids"][k, :n].tolist() == single
        assert out["attention_mask"][k].tolist() == [1] * n + [0] * (out["input_ids"].shape[1] - n)
        assert (out["input_ids"][k, n:] == tok.pad_token_id).all()


@PROPERTY
@given(text=any_text)
def test_offsets_slice_back(tok, text):
    out = tok([text], return_offsets=True, truncation=False)
    ids, spans = out["input_ids"][0].tolist(), out["offset_mapping"][0].tolist()
    assert ids == tok.encode(text)
    assert spans[0] == spans[-1] == [0, 0]
    token_bytes = tok._token_bytes()
    starts = [s for s, _ in spans[1:-1]]
    assert starts == sorted(starts)
    for i, (s, e) in zip(ids[1:-1], spans[1:-1]):
        piece = text[s:e]
        if i in tok.all_special_ids:
            assert piece.lstrip(" \t\n\r\x0b\x0c\x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007"
                                "\u2008\u2009\u200a\u2028\u2029\u202f\u205f\u3000") == tok.decoder[i]
            continue
        try:
            whole = token_bytes[i].decode("utf-8")   # the token holds whole characters: exact slice
        except UnicodeDecodeError:
            assert token_bytes[i] in piece.encode("utf-8") and len(piece) >= 1   # part of a character
        else:
            assert piece == whole


@PROPERTY
@given(text=plain_text)
def test_add_prefix_space_property(small, text):
    spaced = Tokenizer(small.get_vocab(), small.merges, add_prefix_space=True)
    if has_special_text(text) or not text:
        return
    expected = text if text.startswith(" ") else " " + text
    assert spaced.encode(text, add_special_tokens=False) == small.encode(expected, add_special_tokens=False)


def test_cache_gives_same_ids(roberta):
    text = "caching is invisible: the same words, the same ids"
    first = roberta.encode(text)
    assert roberta.encode(text) == first and "Ġcaching" not in roberta._cache   # keys are words, not tokens
    assert "caching" in roberta._cache and " invisible" in roberta._cache


# ------------------------------------------------------------------------------------ bad input
def test_non_str_input(small):
    for bad in (None, 42, b"bytes", ["a list"]):
        with pytest.raises(TokenizerError, match="expected text as str"):
            small.encode(bad)
    with pytest.raises(TokenizerError, match="batch item 1"):
        small(["ok", 3])
    with pytest.raises(TokenizerError, match="texts: expected a str or a sequence of str, got int"):
        small(3)
    assert small(np.array(["ok", "fine"]))["input_ids"].tolist() == small(["ok", "fine"])["input_ids"].tolist()
    with pytest.raises(TokenizerError, match="str"):
        small.explain(3.0)


def test_lone_surrogate(small):
    with pytest.raises(TokenizerError, match=r"lone surrogate '\\ud800' at index 3"):
        small.encode("abc\ud800def")
    with pytest.raises(TokenizerError, match="surrogate"):
        small(["fine", "x\udfff"], return_offsets=True)
    with pytest.raises(TokenizerError, match="surrogate"):
        small.explain("\udc80")


def test_decode_bad_ids(small):
    V = small.vocab_size
    with pytest.raises(TokenizerError, match=f"id {V} at position 2 is not in the vocabulary"):
        small.decode([5, 6, V])
    with pytest.raises(TokenizerError, match="id -1 at position 0"):
        small.decode([-1])
    with pytest.raises(TokenizerError, match="id '7' at position 1 is not an integer"):
        small.decode([5, "7"])
    with pytest.raises(TokenizerError, match="not in the vocabulary"):
        small.convert_ids_to_tokens(V + 10)
    assert small.decode(np.array([5 + ord("h"), 5 + ord("i")])) == "hi"   # numpy ids are fine


def write_files(tmp_path, vocab: dict | str, merges: str) -> tuple[str, str]:
    v, m = tmp_path / "vocab.json", tmp_path / "merges.txt"
    v.write_text(vocab if isinstance(vocab, str) else json.dumps(vocab), encoding="utf-8")
    m.write_text(merges, encoding="utf-8")
    return str(v), str(m)


def base_vocab() -> dict[str, int]:
    vocab = {t: i for i, t in enumerate(SPECIALS)}
    vocab.update({ch: 5 + b for b, ch in bytes_to_unicode().items()})
    vocab["ab"] = len(vocab)
    return vocab


def test_loads_minimal_files(tmp_path):
    tok = Tokenizer.from_files(*write_files(tmp_path, base_vocab(), "#version: 0.2\na b\n"))
    assert tok.tokenize("abc") == ["ab", "c"]


@pytest.mark.parametrize("vocab, merges, message", [
    ("{not json", "a b\n", r"vocab.json: not valid JSON"),
    ('["a list"]', "a b\n", r"expected a JSON object"),
    ('{"<s>": 0, "<s>": 1}', "a b\n", r"token '<s>' appears twice"),
    ({**base_vocab(), "zz": 5}, "a b\n", r"id 5 is used twice, by '.*' and 'zz'"),
    ({**base_vocab(), "zz": 9999}, "a b\n", r"'zz' has id 9999, outside 0\.\.\d+"),
    ({**base_vocab(), "zz": "7"}, "a b\n", r"'zz': '7' must map a string to an int"),
    ({t: i for i, t in enumerate(SPECIALS)}, "", r"lacks 256 of the 256 byte symbols"),
    (base_vocab(), "#version: 0.2\na b\nq\n", r"merges.txt line 3: expected two symbols .* got 'q'"),
    (base_vocab(), "#version: 0.2\na b\nx  y\n", r"merges.txt line 3: expected two symbols"),
    (base_vocab(), "#version: 0.2\n\na b\nab zzz\n", r"line 4: 'ab zzz' has a part that is not in the vocab: \['zzz'\]"),
    (base_vocab(), "#version: 0.2\na b\nb c\n", r"merges.txt line 3: 'b c' makes 'bc', which is not in the vocab"),
    (base_vocab(), "#version: 0.2\na b\na b\n", r"merges.txt line 3: 'a b' repeats .*merges.txt line 2"),
])
def test_malformed_files(tmp_path, vocab, merges, message):
    with pytest.raises(TokenizerError, match=message):
        Tokenizer.from_files(*write_files(tmp_path, vocab, merges))


def test_missing_files_and_special(tmp_path):
    v, m = write_files(tmp_path, base_vocab(), "a b\n")
    with pytest.raises(TokenizerError, match="vocab file not found: .*nope.json"):
        Tokenizer.from_files(tmp_path / "nope.json", m)
    with pytest.raises(TokenizerError, match="merges file not found: .*nope.txt"):
        Tokenizer.from_files(v, tmp_path / "nope.txt")
    with pytest.raises(TokenizerError, match="special token '<cls>' is not in the vocab"):
        Tokenizer.from_files(v, m, special_tokens=("<s>", "<cls>"))


def test_save_pretrained_roundtrip(tmp_path, small):
    small.save_pretrained(tmp_path / "saved")
    assert sorted(os.listdir(tmp_path / "saved")) == ["merges.txt", "vocab.json"]   # no temp files left
    again = Tokenizer.from_pretrained(tmp_path / "saved")
    assert again.get_vocab() == small.get_vocab() and again.merges == small.merges
    assert again.encode(TRAINING_TEXT) == small.encode(TRAINING_TEXT)
    assert (tmp_path / "saved" / "merges.txt").read_text(encoding="utf-8").startswith("#version: 0.2\n")


def test_whitespace_set_is_the_regex_one():
    # what <mask> swallows must be exactly what the pre-tokenizer's \s matches (Unicode White_Space),
    # which is not str.isspace(): that also counts \x1c-\x1f
    every_character = "".join(map(chr, range(0x110000)))
    assert WHITESPACE == set(regex.findall(r"\s", every_character))
    assert "\x1c" not in WHITESPACE and "\x1c".isspace()


def test_from_pretrained_repo_id_goes_through_the_hub(monkeypatch, tmp_path, small):
    import minibort.hub
    small.save_pretrained(tmp_path)
    asked = []

    def fake_download(repo_id: str, filename: str, revision: str = "main", **kwargs) -> str:
        asked.append((repo_id, filename, revision))
        if not (tmp_path / filename).is_file():
            raise minibort.hub.HubError(f"{filename} is not in the fake repository")
        return str(tmp_path / filename)

    monkeypatch.setattr(minibort.hub, "hf_hub_download", fake_download)
    tok = Tokenizer.from_pretrained("someone/some-model", revision="v1")
    assert asked[:2] == [("someone/some-model", "vocab.json", "v1"), ("someone/some-model", "merges.txt", "v1")]
    assert tok.encode(TRAINING_TEXT) == small.encode(TRAINING_TEXT)


# ------------------------------------------------------------------------------ the word cache
def test_word_cache_is_bounded_by_bytes(small):
    import gc
    import tracemalloc
    tok = Tokenizer(small.get_vocab(), small.merges)
    tok.cache_bytes = 200_000
    letters = "abcdefghijklmnopqrstuvwxyz"
    words = [" w" + "".join(letters[(i // 26 ** k) % 26] for k in range(4)) for i in range(20_000)]   # distinct
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for k in range(0, len(words), 1000):
            tok.encode("".join(words[k:k + 1000]))
        gc.collect()
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    # every word fits alone but all of them would take ~20x the budget: the cache stops at its bytes,
    # and the memory really held follows the count (an entry-bounded cache would hold ~4 MB here)
    assert 0 < len(tok._cache) < len(words) // 5
    assert tok.cache_bytes - 1000 < tok._cache_bytes <= tok.cache_bytes
    assert held < 1.5 * tok.cache_bytes, held
    print(f"cache: {len(tok._cache)} of {len(words)} words, counted {tok._cache_bytes} B, traced {held} B")
    # a word bigger than the whole budget is never kept, however empty the cache
    fresh = Tokenizer(small.get_vocab(), small.merges)
    fresh.cache_bytes = 200_000
    word = "ab" * 100_000
    assert fresh.decode(fresh.encode(word, add_special_tokens=False)) == word
    assert fresh._cache == {} and fresh._cache_bytes == 0


# ----------------------------------------------------------------------- the model's length limit
def test_model_max_length_from_the_folder_truncates_for_the_model():
    from minibort import BortForMaskedLM
    from minibort.model import InputError
    tok = Tokenizer.from_pretrained("bort-tiny")
    assert tok.model_max_length == 128                                # config.json's max_position_embeddings
    assert sorted(tok.all_special_ids) == [tok.bos_token_id, tok.pad_token_id, tok.eos_token_id,
                                           tok.unk_token_id, tok.mask_token_id] == [0, 1, 2, 3, 4]
    long_text = TRAINING_TEXT * 20
    assert len(tok.encode(long_text)) > 500
    batch = tok([long_text, "short"], truncation=True)                # no max_length: the model's own
    assert batch["input_ids"].shape == (2, 128)
    assert batch["input_ids"][0, -1] == tok.eos_token_id
    assert tok("x", padding="max_length")["input_ids"].shape == (1, 128)
    model = BortForMaskedLM.from_pretrained("bort-tiny")
    logits = model(batch["input_ids"], batch["attention_mask"])       # (2, 128, V): fits the positions
    assert logits.shape == (2, 128, tok.vocab_size) and np.isfinite(logits).all()
    with pytest.raises(InputError, match="max_position_embeddings"):
        model(tok([long_text], truncation=False)["input_ids"])         # what truncation prevents
    assert tok([long_text], max_length=40)["input_ids"].shape == (1, 40)   # an explicit max_length wins


def test_model_max_length_files(tmp_path, small, roberta):
    assert roberta.model_max_length == 512                            # amazon/bort's config.json
    assert small.model_max_length is None and small([TRAINING_TEXT * 20])["input_ids"].shape == (1, 512)
    folder = tmp_path / "tok"
    Tokenizer(small.get_vocab(), small.merges, model_max_length=64).save_pretrained(folder)
    assert json.loads((folder / "tokenizer_config.json").read_text()) == {"model_max_length": 64}
    (folder / "config.json").write_text(json.dumps({"max_position_embeddings": 128}))
    assert Tokenizer.from_pretrained(folder).model_max_length == 64  # tokenizer_config.json first
    assert Tokenizer.from_pretrained(folder, model_max_length=32).model_max_length == 32
    # saving again keeps the other keys of an existing tokenizer_config.json
    (folder / "tokenizer_config.json").write_text(json.dumps({"model_max_length": 64, "do_lower_case": False}))
    Tokenizer(small.get_vocab(), small.merges, model_max_length=100).save_pretrained(folder)
    assert json.loads((folder / "tokenizer_config.json").read_text()) == {"model_max_length": 100,
                                                                         "do_lower_case": False}
    # transformers' "no limit known" (int(1e30)) falls through to config.json
    (folder / "tokenizer_config.json").write_text('{"model_max_length": 1000000000000000019884624838656}')
    assert Tokenizer.from_pretrained(folder).model_max_length == 128
    (folder / "tokenizer_config.json").write_text('{"model_max_length": "long"}')
    with pytest.raises(TokenizerError, match=r"tokenizer_config.json: model_max_length must be a positive "
                                             r"integer, got 'long'"):
        Tokenizer.from_pretrained(folder)
    with pytest.raises(TokenizerError, match="model_max_length must be a positive int or None"):
        Tokenizer(small.get_vocab(), small.merges, model_max_length=0)


def test_running_the_module_shows_its_walkthrough_without_warnings():
    """`python -m minibort.tokenizer` explains a text, and Python warns of nothing (the package
    imports its names lazily, so the module is not already imported when run as a script)."""
    import subprocess
    import sys
    out = subprocess.run([sys.executable, "-W", "default", "-m", "minibort.tokenizer", "Hello world"],
                         capture_output=True, text=True, timeout=120, check=False)
    assert out.returncode == 0, out.stderr
    assert "Warning" not in out.stderr, out.stderr
    assert "5. with <s> ... </s>: [0, 1653, 2658, 3720, 406, 2]" in out.stdout
