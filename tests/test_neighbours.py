"""φ's guarantees: x' != x, never a forbidden text, no duplicates, edit fraction within bounds, seeded."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from minibort.neighbours import (
    MaskedLMSubstitution,
    Mixture,
    Phi,
    TokenEdits,
    edit_count_range,
    edit_fraction,
    levenshtein,
    make_phi,
    normalise,
)

TINY = Path(__file__).resolve().parents[1] / "weights" / "bort-tiny"
TEXTS = ["The break statement leaves the innermost loop early and skips its else clause.",
         "Return the number of items in a container, or raise TypeError if it has no length.",
         "A socket is one end of a two-way link between programs on a network.",
         "Threads share memory, so a lock protects data that several of them change."]


def check_guarantees(phi: Phi, texts, points, forbidden, units):
    """Every guarantee of minibort.neighbours, checked on `points` independently of the generator."""
    seen = set()
    for p in points:
        src = texts[p.source]
        assert p.text != src and normalise(p.text) != normalise(src)
        assert normalise(p.text) not in {normalise(t) for t in forbidden}
        assert normalise(p.text) not in {normalise(t) for t in texts}
        assert normalise(p.text) not in seen
        seen.add(normalise(p.text))
        measured = edit_fraction(units(src), units(p.text))
        assert measured == pytest.approx(p.edit_fraction)
        assert phi.low - 1e-9 <= measured <= phi.high + 1e-9, (src, p.text, measured)


def words(text):
    return text.split()


def test_levenshtein_by_hand():
    assert levenshtein("kitten", "sitting") == 3
    assert levenshtein([], [1, 2]) == 2
    assert levenshtein("abc", "abc") == 0
    assert list(edit_count_range(10, 0.1, 0.3)) == [1, 2, 3]
    assert list(edit_count_range(3, 0.1, 0.3)) == []          # 1 of 3 words is 0.33 > 0.3


@settings(max_examples=60, deadline=None)
@given(st.lists(st.lists(st.sampled_from(["a", "b", "c", "dd", "e.", "Ff"]), min_size=1, max_size=14)
                .map(" ".join), min_size=1, max_size=5, unique=True),
       st.floats(0.05, 0.5), st.floats(0.0, 0.5), st.integers(0, 3), st.integers(0, 2**20))
def test_token_edits_guarantees(texts, low, width, per_text, seed):
    phi = TokenEdits(low, min(1.0, low + width))
    forbidden = [texts[0] + " a", "a b c"]
    points = phi(texts, per_text, forbidden=forbidden, seed=seed)
    check_guarantees(phi, texts, points, forbidden, words)
    assert points == phi(texts, per_text, forbidden=forbidden, seed=seed)          # seeded
    assert all(sum(p.source == i for p in points) <= per_text for i in range(len(texts)))


def test_token_edits_makes_points_and_each_operation():
    for ops in (("delete",), ("swap",)):
        phi = TokenEdits(0.1, 0.3, ops)
        points = phi(TEXTS, 3, seed=0)
        assert len(points) == 3 * len(TEXTS)
        check_guarantees(phi, TEXTS, points, [], words)
        if ops == ("delete",):
            assert all(len(p.text.split()) < len(TEXTS[p.source].split()) for p in points)
        else:
            assert all(sorted(p.text.split()) == sorted(TEXTS[p.source].split()) for p in points)
    assert TokenEdits()(TEXTS, 2, seed=0) != TokenEdits()(TEXTS, 2, seed=1)


def test_forbidden_texts_are_never_returned():
    phi = TokenEdits(0.5, 1.0, ("delete",))
    text = "alpha beta"                                 # its only neighbours: "alpha", "beta"
    assert {p.text for p in phi([text], 5, seed=0)} == {"alpha", "beta"}
    assert [p.text for p in phi([text], 5, forbidden=["alpha", " beta "], seed=0)] == []


def test_bad_bounds_are_refused():
    with pytest.raises(ValueError, match="low <= high"):
        TokenEdits(0.4, 0.2)
    with pytest.raises(ValueError, match="unknown operation"):
        TokenEdits(ops=("shuffle",))
    with pytest.raises(ValueError, match="unknown generator"):
        make_phi("paraphrase")


@pytest.fixture(scope="module")
def mlm():
    from minibort import BortForMaskedLM, Tokenizer
    return BortForMaskedLM.from_pretrained(TINY), Tokenizer.from_pretrained(TINY)


def test_masked_lm_substitution_guarantees(mlm):
    model, tok = mlm
    phi = MaskedLMSubstitution(model, tok, 0.1, 0.3)
    forbidden = [TEXTS[0].replace("break", "continue")]
    points = phi(TEXTS, 3, forbidden=forbidden, seed=0)
    assert len(points) >= 2 * len(TEXTS), points          # most requests are met
    check_guarantees(phi, TEXTS, points, forbidden, lambda t: tok.encode(t)[1:-1])
    assert points == phi(TEXTS, 3, forbidden=forbidden, seed=0)
    assert points != phi(TEXTS, 3, forbidden=forbidden, seed=1)
    print("\n".join(f"{p.edit_fraction:.2f}  {p.text}" for p in points[:4]))


def test_mixture_uses_both_methods_within_their_bounds(mlm):
    model, tok = mlm
    phi = Mixture([MaskedLMSubstitution(model, tok, 0.1, 0.2), TokenEdits(0.2, 0.3)])
    points = phi(TEXTS, 4, seed=0)
    assert {p.method for p in points} == {"mlm", "delete+swap"}
    for p in points:
        units = words if p.method != "mlm" else (lambda t: tok.encode(t)[1:-1])
        bounds = (0.1, 0.2) if p.method == "mlm" else (0.2, 0.3)
        assert bounds[0] - 1e-9 <= edit_fraction(units(TEXTS[p.source]), units(p.text)) <= bounds[1] + 1e-9
    assert len({normalise(p.text) for p in points}) == len(points)
