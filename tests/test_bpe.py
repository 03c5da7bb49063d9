"""bpe.py: the one merge function, and the fast (heap) form of BPE giving the same ids as the readable one.

The fast form is checked against the reference on hypothesis words and on real text, with the real
roberta-base vocab (../shared; skipped where absent), the embedded bort-tiny vocab and a vocab trained
here; a 100k-letter word is encoded in a child process whose time is printed (a 60 s deadline only
guards against a hang: speed is not asserted).
"""

from __future__ import annotations

import pathlib
import subprocess
import sys
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from minibort import train_bpe
from minibort.bpe import PRETOKENIZE_RE, apply_merges, apply_merges_reference, merge_pair
from minibort.tokenizer import Tokenizer

SHARED = pathlib.Path(__file__).resolve().parents[1].parent / "shared"
ROBERTA_DIR = SHARED / "hub-mirror" / "amazon" / "bort" / "resolve" / "main"
PROPERTY = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def topics() -> list[str]:
    from pydoc_data.topics import topics
    return list(topics.values())


@pytest.fixture(scope="module", params=["trained", "bort-tiny", "roberta"])
def tok(request) -> Tokenizer:
    if request.param == "trained":
        return train_bpe(topics()[:40], vocab_size=1200)
    if request.param == "roberta":
        if not ROBERTA_DIR.is_dir():
            pytest.skip(f"roberta-base vocab.json/merges.txt not found at {ROBERTA_DIR} (../shared/hub-mirror)")
        return Tokenizer.from_pretrained(str(ROBERTA_DIR))
    return Tokenizer.from_pretrained("bort-tiny")


def test_merge_pair():
    assert merge_pair([1, 2, 3, 1, 2], 1, 2, 9) == [9, 3, 9]
    assert merge_pair([1, 1, 1], 1, 1, 9) == [9, 1]            # overlaps go to the left
    assert merge_pair([1, 1, 1, 1], 1, 1, 9) == [9, 9]
    assert merge_pair([2, 1], 1, 2, 9) == [2, 1]               # order matters
    assert merge_pair([], 1, 2, 9) == [] and merge_pair([1], 1, 2, 9) == [1]


def test_both_forms_on_a_hand_made_table():
    # a=1, b=2; ab=3 (rank 0), aa=4 (rank 1), abab=5 (rank 2), aaaa=6 (rank 3)
    merges = {(1, 2): (0, 3), (1, 1): (1, 4), (3, 3): (2, 5), (4, 4): (3, 6)}
    for word, want in [([1, 2, 1, 2], [5]), ([1, 1, 1, 1, 1], [6, 1]), ([1, 1, 2, 1, 2, 2], [1, 5, 2]),
                       ([2, 1], [2, 1]), ([1], [1]), ([], [])]:
        steps: list = []
        assert apply_merges_reference(word, merges, steps) == want, word
        assert apply_merges(word, merges) == want, word
        assert (steps[-1][3] if steps else word) == want
    steps = []
    apply_merges_reference([1, 2, 1, 2], merges, steps)
    assert steps == [(1, 2, 0, [3, 3]), (3, 3, 2, [5])]        # (left, right, rank, symbols after)


words = st.one_of(
    st.text(max_size=30),
    st.text(alphabet="abelorstn Ġ", max_size=60),                               # many merges per word
    st.tuples(st.sampled_from(["a", "e", "ab", "th", "--", "  ", "ee", "é"]), st.integers(1, 80)).map(
        lambda t: t[0] * t[1]),                                                    # long runs: overlaps
)


@PROPERTY
@given(word=words)
def test_fast_equals_reference_on_hypothesis_words(tok, word):
    assert tok._bpe(word) == tok._bpe_reference(word)


def test_fast_equals_reference_on_real_text(tok):
    distinct = sorted(set(PRETOKENIZE_RE.findall("".join(topics()[40:]))))     # words the trained vocab never saw
    assert len(distinct) > 3000
    assert [tok._bpe(w) for w in distinct] == [tok._bpe_reference(w) for w in distinct]


def test_encode_is_unchanged_on_real_text(tok):
    # encode (fast form, cache on) against the reference form word by word, whole documents
    for text in topics()[60:]:
        want = [i for w in PRETOKENIZE_RE.findall(text) for i in tok._bpe_reference(w)]
        assert tok.encode(text, add_special_tokens=False) == want


CHILD = r"""
import random, sys, time
from minibort.tokenizer import Tokenizer
tok = Tokenizer.from_pretrained("bort-tiny")
rng = random.Random(0)
word = "".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(100_000))
t = time.perf_counter()
ids = tok.encode(word, add_special_tokens=False)
took = time.perf_counter() - t
assert tok.decode(ids) == word
print(f"{took:.3f} {len(ids)}")
"""


def test_a_100k_letter_word_encodes_without_hanging():
    # The reference form needs minutes here (quadratic); the heap form well under a second on a quiet
    # machine. Run in a child so that a regression to quadratic time fails at the deadline instead of
    # hanging the suite; the time is printed, not asserted.
    t = time.perf_counter()
    run = subprocess.run([sys.executable, "-c", CHILD], check=False, capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr[-2000:]
    took, n = run.stdout.split()
    print(f"100k-letter word: encoded in {float(took):.3f} s ({n} tokens); child ran {time.perf_counter() - t:.1f} s")
