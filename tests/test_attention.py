"""The blocked attention (`layers.attention`) against the textbook form (`layers.attention_reference`).

Both compute softmax(q k^T / sqrt D + mask) v; the blocked one folds the scale into q and works one
cache-sized block of scores at a time, so the two differ only by rounding: within 1e-12 in float64
(measured up to 1.3e-15) and 1e-6 in float32 (up to 5e-7) on O(1) inputs. Block sizes are varied down
to a few rows, so that several bands of rows per head (the long-sequence case, where dk and dv are
summed over bands) are exercised on small arrays. Dropout masks must be the very same draws.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from helpers import close
from test_gradcheck import ATOL, RTOL, numeric_grad

from minibort import _threads as T
from minibort import layers as L

TOL = {np.float64: 1e-12, np.float32: 1e-6}


def qkv(B: int, N: int, T: int, D: int, dtype, seed: int = 0):
    """Random (B, N, T, D) q, k, v as the model makes them: transposed views of (B, T, H) arrays."""
    rng = np.random.default_rng(seed)
    return [rng.standard_normal((B, T, N * D)).astype(dtype).reshape(B, T, N, D).transpose(0, 2, 1, 3)
            for _ in range(3)]


def padded_bias(B: int, T: int, dtype) -> np.ndarray:
    """(B, 1, 1, T): the first sequence whole, the others with 1..B-1 padding tokens at the end."""
    mask = np.ones((B, T), dtype=np.int64)
    for b in range(1, B):
        mask[b, T - b:] = 0
    return L.attention_mask_bias(mask, dtype)


def heads_first(t: np.ndarray) -> np.ndarray:
    """(B, T, N, D) -> (B, N, T, D), the reference's layout."""
    return t.transpose(0, 2, 1, 3)


@pytest.mark.parametrize("B,N,T,itemsize,block_bytes", [
    (2, 3, 5, 8, 8 * 25),          # one whole head per block
    (2, 4, 5, 8, 8 * 25 * 3),      # three whole heads, then one
    (2, 3, 7, 4, 4 * 7 * 2),       # bands of 2 rows (the last one 1 row)
    (1, 2, 9, 4, 1),               # a block smaller than one row: one row per block
    (2, 8, 512, 4, L.ATTENTION_BLOCK_BYTES),   # Bort at 512 tokens: 128-row bands
])
def test_blocks_cover_the_scores_once_in_memory_order(B, N, T, itemsize, block_bytes):
    end = 0
    for b, hs, rows in L.attention_blocks(B, N, T, itemsize, block_bytes):
        assert rows == slice(0, T) or hs.stop - hs.start == 1, "a block must be contiguous"
        start = ((b * N + hs.start) * T + rows.start) * T
        assert start == end, f"block {(b, hs, rows)} starts at {start}, the previous ended at {end}"
        end = ((b * N + hs.stop - 1) * T + rows.stop) * T
        size = (hs.stop - hs.start) * (rows.stop - rows.start) * T * itemsize
        assert size <= max(block_bytes, T * itemsize), f"block of {size} bytes > {block_bytes}"
    assert end == B * N * T * T


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("block_bytes", [None, 4 * 6 * 2, 1])      # default (whole heads), 2-row bands, 1 row
@pytest.mark.parametrize("p_drop", [0.0, 0.3])
def test_blocked_attention_equals_reference(dtype, block_bytes, p_drop):
    B, N, T, D = 3, 2, 6, 4
    q, k, v = qkv(B, N, T, D, dtype)
    bias = padded_bias(B, T, dtype)
    dctx = np.random.default_rng(9).standard_normal((B, N, T, D)).astype(dtype)   # random upstream
    kw = {} if block_bytes is None else {"block_bytes": block_bytes}
    if block_bytes == 1:
        assert len(list(L.attention_blocks(B, N, T, np.dtype(dtype).itemsize, 1))) == B * N * T
    ctx_r, probs_r, cache_r = L.attention_reference(q, k, v, bias, p_drop, np.random.default_rng(5))
    ctx, probs, cache = L.attention(q, k, v, bias, p_drop, np.random.default_rng(5), **kw)
    assert ctx.dtype == probs.dtype == dtype
    tol = TOL[dtype]
    tag = f"{np.dtype(dtype).name} block {block_bytes} p {p_drop}"
    close(f"probs {tag}", probs, probs_r, tol)
    assert np.all(probs[..., T - 1][2] == 0.0), "padding keys must get exactly zero weight"
    if p_drop:
        keep = cache[4]
        assert np.array_equal(keep, cache_r[5] != 0), "the dropout masks must be the reference's draws"
        assert 0.5 < keep.mean() < 0.9
    close(f"context {tag}", heads_first(ctx), ctx_r, tol)
    got = L.attention_backward(np.ascontiguousarray(dctx.transpose(0, 2, 1, 3)), cache)
    want = L.attention_reference_backward(dctx, cache_r)
    for name, g, w in zip(("dq", "dk", "dv"), got, want):
        assert g.dtype == dtype
        close(f"{name} {tag}", heads_first(g), w, tol)


def test_blocked_attention_matches_finite_differences_across_bands():
    """dq, dk, dv of the banded path (3 bands of 2 rows per head, dropout on) against 4th-order
    central differences of sum(context * R), as tests/test_gradcheck.py checks every layer."""
    B, N, T, D = 1, 2, 6, 3
    q, k, v = (np.ascontiguousarray(t) for t in qkv(B, N, T, D, np.float64, seed=2))
    bias = padded_bias(2, T, np.float64)[1:]                        # one padded key
    R = np.random.default_rng(3).standard_normal((B, T, N, D))
    block = 8 * T * 2

    def s() -> float:
        ctx, _, _ = L.attention(q, k, v, bias, 0.25, np.random.default_rng(4), block_bytes=block)
        return float(np.sum(ctx * R))
    _, _, cache = L.attention(q, k, v, bias, 0.25, np.random.default_rng(4), block_bytes=block)
    grads = L.attention_backward(R, cache)
    idxs = np.arange(q.size)
    for name, x, g in zip(("q", "k", "v"), (q, k, v), grads):
        numeric = numeric_grad(s, x, idxs)
        analytic = heads_first(g).reshape(-1)
        err = np.abs(analytic - numeric)
        print(f"banded attention d{name}: max err {err.max():.2e}")
        assert np.all(err <= ATOL + RTOL * np.abs(numeric)), f"d{name} max err {err.max():.2e}"


def test_without_probs_gives_the_same_context_and_no_cache():
    q, k, v = qkv(2, 4, 16, 8, np.float32)
    bias = padded_bias(2, 16, np.float32)
    ctx, _, _ = L.attention(q, k, v, bias, block_bytes=4 * 16 * 4)
    ctx_n, probs_n, cache_n = L.attention(q, k, v, bias, keep_probs=False, block_bytes=4 * 16 * 4)
    assert probs_n is None and cache_n is None
    np.testing.assert_array_equal(ctx_n, ctx)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_self_attention_fast_and_reference_agree(dtype):
    rng = np.random.default_rng(0)
    B, T, H, N = 2, 7, 12, 3
    x = rng.standard_normal((B, T, H)).astype(dtype)
    W = [(rng.standard_normal(s) * 0.3).astype(dtype) for s in [(H, H), (H,)] * 3]
    bias = padded_bias(B, T, dtype)
    dctx = rng.standard_normal((B, T, H)).astype(dtype)
    ctx_r, probs_r, cache_r = L.self_attention(x, *W, bias, N, 0.2, np.random.default_rng(1), reference=True)
    ctx, probs, cache = L.self_attention(x, *W, bias, N, 0.2, np.random.default_rng(1))
    assert ctx.shape == (B, T, H) and ctx.flags.c_contiguous
    tol = 10 * TOL[dtype]                                            # through the three projections too
    close(f"self_attention {np.dtype(dtype).name} context", ctx, ctx_r, tol)
    close(f"self_attention {np.dtype(dtype).name} probs", probs, probs_r, tol)
    got = L.self_attention_backward(dctx, cache)
    want = L.self_attention_backward(dctx, cache_r)
    for name, g, w in zip(("dx", "dWq", "dbq", "dWk", "dbk", "dWv", "dbv"), got, want):
        assert g.dtype == dtype
        close(f"self_attention {np.dtype(dtype).name} {name}", g, w, tol, tol)
    _, probs_n, cache_n = L.self_attention(x, *W, bias, N, keep_probs=False)
    assert probs_n is None and cache_n is None


def test_a_bias_that_is_not_one_per_key_is_refused_with_the_fix():
    q, k, v = qkv(2, 2, 4, 3, np.float64)
    with pytest.raises(ValueError, match="attention_mask_bias"):
        L.attention(q, k, v, np.zeros((2, 1, 4, 4)))
    L.attention(q, k, v, np.zeros((1, 1, 1, 4)))                     # broadcastable: accepted


def test_softmax_backward_in_place_equals_out_of_place():
    rng = np.random.default_rng(0)
    y, _ = L.softmax(rng.standard_normal((3, 5, 7)))
    dy = rng.standard_normal((3, 5, 7))
    want = y * (dy - (dy * y).sum(axis=-1, keepdims=True))         # the formula, written out
    got = L.softmax_backward(dy.copy(), y)
    np.testing.assert_array_equal(got, want)
    d = dy.copy()
    out = L.softmax_backward(d, y, out=d)
    assert out is d
    np.testing.assert_array_equal(d, want)


# ------------------------------------------------------------------------------------------ threads


@pytest.mark.parametrize("threads", [1, 3])
def test_threads_give_the_same_numbers_bit_for_bit(threads):
    q, k, v = qkv(2, 3, 9, 4, np.float32)
    bias = padded_bias(2, 9, np.float32)
    R = np.random.default_rng(1).standard_normal((2, 9, 3, 4)).astype(np.float32)
    kw = {"block_bytes": 4 * 9 * 2}                                  # 2-row bands: 5 per head
    ctx1, probs1, c1 = L.attention(q, k, v, bias, 0.2, np.random.default_rng(0), threads=1, **kw)
    ctx, probs, c = L.attention(q, k, v, bias, 0.2, np.random.default_rng(0), threads=threads, **kw)
    np.testing.assert_array_equal(ctx, ctx1)
    np.testing.assert_array_equal(probs, probs1)
    for g, g1 in zip(L.attention_backward(R, c), L.attention_backward(R, c1)):
        np.testing.assert_array_equal(g, g1)


def test_run_blocks_runs_every_block_once_and_passes_errors_on():
    seen = []
    T.run_blocks(seen.append, list(range(50)), threads=3)
    assert sorted(seen) == list(range(50))

    def fail(i):
        if i == 7:
            raise RuntimeError("block 7")
    with pytest.raises(RuntimeError, match="block 7"):
        T.run_blocks(fail, list(range(20)), threads=2)


def test_blocks_inside_blocks_run_in_turn():
    seen = []
    T.run_blocks(lambda i: T.run_blocks(lambda j: seen.append((i, j)), [0, 1, 2], threads=2), [0, 1, 2, 3],
                 threads=2)
    assert sorted(seen) == [(i, j) for i in range(4) for j in range(3)]


def test_blas_threads_are_restored_after_the_blocks():
    before = T.blas_threads()
    if before is None:
        pytest.skip("no way to reach this NumPy's BLAS thread count (not OpenBLAS, no threadpoolctl)")
    inside = []
    T.run_blocks(lambda _: inside.append(T.blas_threads()), [0, 1, 2, 3], threads=2)
    assert set(inside) == {1}
    assert T.blas_threads() == before


def test_blas_threads_restored_when_callers_overlap():
    """Two caller threads in run_blocks at once (as in a threaded server): BLAS ends as it began."""
    import threading
    before = T.blas_threads()
    if before is None:
        pytest.skip("no way to reach this NumPy's BLAS thread count")
    T.set_blas_threads(2)
    try:
        gate = threading.Barrier(2)

        def caller():
            T.run_blocks(lambda i: gate.wait() if i == 0 else None, list(range(4)), threads=2)
        callers = [threading.Thread(target=caller) for _ in range(2)]
        for c in callers:
            c.start()
        for c in callers:
            c.join()
        assert T.blas_threads() == 2
    finally:
        T.set_blas_threads(before)


def test_num_threads_knob(monkeypatch):
    saved, blas = T._state["threads"], T.blas_threads()
    try:
        monkeypatch.setenv(T.ENV, "none")
        T._state["threads"] = None
        with pytest.warns(UserWarning, match="MINIBORT_NUM_THREADS='none'.*ignored.*whole number"):
            assert T.num_threads() >= 1                              # ignored: BLAS's count or the CPUs'
        monkeypatch.setenv(T.ENV, "1")
        T._state["threads"] = None
        assert T.num_threads() == 1
        assert T.blas_threads() in (None, 1)
        monkeypatch.delenv(T.ENV)
        if blas:                                                     # without the knob: BLAS's count
            T.set_blas_threads(3)
            T._state["threads"] = None
            assert T.num_threads() == 3
        with pytest.raises(ValueError, match=">= 1"):
            T.set_num_threads(0)
    finally:
        T._state["threads"] = saved
        if blas:
            T.set_blas_threads(blas)


# ------------------------------------------------------------------------------------------ row bands


@pytest.fixture
def two_threads():
    """minibort's blocks on two threads for one test (BLAS left as it is), whatever the environment."""
    saved = T._state["threads"]
    T._state["threads"] = 2
    yield
    T._state["threads"] = saved


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_layer_norm_and_gelu_in_row_bands_equal_one_pass_bit_for_bit(dtype, two_threads):
    """The banded, threaded LayerNorm and GELU against their formulas applied to the whole array at once
    (the code they replaced), on 3 x 700 rows of 64: several bands of rows, shared out over threads."""
    rng = np.random.default_rng(0)
    x = (rng.standard_normal((3, 700, 64)) * 2 + 0.5).astype(dtype)
    w, b = (1 + 0.3 * rng.standard_normal(64)).astype(dtype), rng.standard_normal(64).astype(dtype)
    dy = rng.standard_normal(x.shape).astype(dtype)
    assert x.nbytes >= 4 * T.ROW_CHUNK_BYTES                        # enough rows to share out

    mean = x.mean(axis=-1, keepdims=True)                           # layer_norm, one pass
    xhat = x - mean
    rstd = 1.0 / np.sqrt(np.square(xhat).mean(axis=-1, keepdims=True) + 1e-5)
    xhat *= rstd
    y = xhat * w + b
    got, cache = L.layer_norm(x, w, b, 1e-5)
    np.testing.assert_array_equal(got, y)
    g = dy * w                                                      # layer_norm_backward, one pass
    dx = rstd * (g - g.mean(axis=-1, keepdims=True) - xhat * (g * xhat).mean(axis=-1, keepdims=True))
    got_dx, dw, db = L.layer_norm_backward(dy, cache)
    np.testing.assert_array_equal(got_dx, dx)
    np.testing.assert_array_equal(dw, (dy * xhat).reshape(-1, 64).sum(axis=0))
    np.testing.assert_array_equal(db, dy.reshape(-1, 64).sum(axis=0))

    phi = L.normal_cdf(x)                                           # gelu and its backward, one pass
    got, cache = L.gelu(x)
    np.testing.assert_array_equal(got, x * phi)
    np.testing.assert_array_equal(cache[1], phi)
    want = dy * (phi + x * (1.0 / math.sqrt(2 * math.pi) * np.exp(-0.5 * x * x)))   # Python floats
    np.testing.assert_array_equal(L.gelu_backward(dy, cache), want)


def test_run_rows_covers_every_row_once():
    seen = []
    T.run_rows(lambda r: seen.extend(range(r.start, r.stop)), 1000, 1024, threads=2)
    assert sorted(seen) == list(range(1000))
    bands = []
    T.run_rows(bands.append, 10, 10 ** 9)                          # a row bigger than a band: one row each
    assert len(bands) == 10
