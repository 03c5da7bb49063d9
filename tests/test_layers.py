"""Layer-level checks that need only NumPy: erf's accuracy, dtype preservation, softmax sanity."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from minibort import layers as L


def test_erf_float64_matches_math_erf_on_a_dense_grid():
    x = np.linspace(-10, 10, 400_001)
    want = np.array([math.erf(v) for v in x])
    err = np.abs(L.erf(x) - want).max()
    print(f"erf float64 max error {err:.2e}")
    assert err < 1e-15


def test_erf_float32_error_is_well_under_a_micro():
    x = np.linspace(-8, 8, 200_001).astype(np.float32)
    want = np.array([math.erf(float(v)) for v in x])
    got = L.erf(x)
    assert got.dtype == np.float32
    err = np.abs(got.astype(np.float64) - want).max()
    print(f"erf float32 max error {err:.2e}")
    assert err < 5e-7


@settings(max_examples=200, deadline=None)
@given(st.floats(-50, 50, allow_nan=False))
def test_erf_any_float(v):
    assert abs(L.erf(np.array([v]))[0] - math.erf(v)) < 1e-15


def test_normal_cdf_float32_is_within_float32_rounding():
    x = np.linspace(-8, 8, 200_001).astype(np.float32)
    want = np.array([0.5 * (1 + math.erf(float(v) / math.sqrt(2))) for v in x])
    got = L.normal_cdf(x)
    assert got.dtype == np.float32
    err = np.abs(got.astype(np.float64) - want).max()
    print(f"Phi float32 max error {err:.2e}")
    assert err < 3e-7


def test_fast_float32_gelu_equals_the_reference_form():
    """The fast float32 GELU (Phi from erfc by sign arithmetic) against the reference form
    0.5 x (1 + erf(x / sqrt 2)) with math.erf in float64: within the bound documented beside it,
    2e-7 |x| (Phi's error, times x) plus float32's rounding of the product (2^-24 relative)."""
    x = np.linspace(-8, 8, 200_001).astype(np.float32)
    x64 = x.astype(np.float64)
    want = np.array([0.5 * v * (1 + math.erf(v / math.sqrt(2))) for v in x64])
    got, _ = L.gelu(x)
    assert got.dtype == np.float32
    err = np.abs(got.astype(np.float64) - want)
    bound = 2e-7 * np.abs(x64) + 2.0**-24 * np.abs(want)
    used = np.max(err[bound > 0] / bound[bound > 0])
    print(f"GELU float32: max error {err.max():.2e}, at most {used:.2f} of the bound 2e-7|x| + 2^-24|gelu|")
    assert np.all(err <= bound)


def test_gelu_is_exact_erf_form():
    x = np.linspace(-6, 6, 10_001)
    want = np.array([0.5 * v * (1 + math.erf(v / math.sqrt(2))) for v in x])
    y, _ = L.gelu(x)
    assert np.abs(y - want).max() < 1e-15


@pytest.mark.parametrize("fn", ["gelu", "layer_norm", "softmax", "linear", "tanh"])
def test_float32_stays_float32(fn):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 3, 8)).astype(np.float32)
    w = np.ones(8, np.float32)
    if fn == "gelu":
        y, _ = L.gelu(x)
    elif fn == "layer_norm":
        y, _ = L.layer_norm(x, w, w, 1e-5)
    elif fn == "softmax":
        y, _ = L.softmax(x)
    elif fn == "linear":
        y, _ = L.linear(x, rng.standard_normal((5, 8)).astype(np.float32), np.zeros(5, np.float32))
    else:
        y, _ = L.tanh(x)
    assert y.dtype == np.float32


def test_mask_bias_zeroes_padding_in_softmax():
    scores = np.zeros((1, 1, 1, 4), np.float32)
    bias = L.attention_mask_bias(np.array([[1, 1, 0, 0]]), np.float32)
    p, _ = L.softmax(scores + bias)
    np.testing.assert_array_equal(p[0, 0, 0], [0.5, 0.5, 0.0, 0.0])


def test_softmax_survives_huge_scores():
    p, _ = L.softmax(np.array([[1e30, 0.0, -1e30]]))
    assert np.all(np.isfinite(p)) and p[0, 0] == 1.0
