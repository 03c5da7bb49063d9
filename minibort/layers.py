"""Bort's layers as plain NumPy functions, each forward beside its backward.

Every forward returns `(out, cache)` (self_attention returns `(ctx, probs, cache)`, the probabilities
being worth seeing); the cache holds only what the backward reads, and the matching
`*_backward(dout, cache)` returns the gradients of the forward's inputs in the order they were given.
Where the cache is the output itself (softmax, tanh), the forward returns `(y, y)`.
Arrays keep the dtype they came in (float32 or float64): constants are Python floats, which NumPy
never lets widen an array (a `np.float64(...)` constant would silently turn float32 into float64).

Shape letters used throughout minibort:
    B = batch, T = tokens per sequence, H = hidden (model width), I = FFN ("intermediate") width,
    V = vocabulary, N = attention heads, D = head width (H / N), M = positions that get MLM logits,
    Q = query rows when a layer computes only some positions (`self_attention`'s `rows`).
Linear weights are stored as PyTorch stores them, (out, in): y = x @ W.T + b.
"""

from __future__ import annotations

import itertools
import math

import numpy as np

from ._threads import run_blocks, run_rows

# ----------------------------------------------------------------------------------------- embedding


def embedding(ids: np.ndarray, W: np.ndarray):
    """Row lookup: (B, T) int ids, (V, H) table -> (B, T, H)."""
    return W[ids], (ids, W.shape)


def embedding_backward(dy: np.ndarray, cache, padding_idx: int | None = None,
                       out: np.ndarray | None = None) -> np.ndarray:
    """Gradient of the table. A row used k times receives the sum of its k upstream gradients.

    `dW[ids] += dy` would be wrong: with repeated ids, fancy-index assignment keeps only one of the
    updates. `np.add.at` accumulates every one. As in PyTorch's `nn.Embedding(padding_idx=...)`, the
    padding row receives no gradient from the lookup. With `out`, the rows are added into it (a
    tied table's other gradient, say) instead of into a fresh array of zeros.
    """
    ids, shape = cache
    ids = ids.reshape(-1)                                           # (B*T,)
    dy = dy.reshape(-1, shape[1])                                   # (B*T, H)
    if padding_idx is not None:
        keep = ids != padding_idx
        ids, dy = ids[keep], dy[keep]
    dW = np.zeros(shape, dtype=dy.dtype) if out is None else out    # (V, H)
    np.add.at(dW, ids, dy)                                          # rows scattered, repeats summed
    return dW


# ----------------------------------------------------------------------------------------- linear


def linear(x: np.ndarray, W: np.ndarray, b: np.ndarray | None):
    """y = x @ W.T + b: (..., in), (out, in), (out,) -> (..., out)."""
    x2 = x.reshape(-1, x.shape[-1])              # (R, in): one GEMM for all leading dims
    y = x2 @ W.T                                 # W.T is a view: BLAS reads it transposed, no copy
    if b is not None:
        y += b
    return y.reshape(*x.shape[:-1], W.shape[0]), (x, W)


def linear_backward(dy: np.ndarray, cache):
    """-> dx (..., in), dW (out, in), db (out,)."""
    x, W = cache
    dy2 = dy.reshape(-1, dy.shape[-1])           # (R, out), R = all leading dims flattened
    x2 = x.reshape(-1, x.shape[-1])              # (R, in)
    dx = (dy2 @ W).reshape(x.shape)              # (R, out) @ (out, in) -> (..., in)
    dW = dy2.T @ x2                              # (out, R) @ (R, in) -> (out, in)
    db = dy2.sum(axis=0)                         # (out,)
    return dx, dW, db


# ----------------------------------------------------------------------------------------- LayerNorm


# LayerNorm and GELU run over bands of rows (`run_rows`, minibort/_threads.py): each band's arrays
# stay in cache through the layer's several passes, and the bands share out over minibort's threads
# (NumPy's elementwise loops use one core each). Every row's arithmetic is what one pass over the
# whole array would do, so the numbers are the same bit for bit.


def layer_norm(x: np.ndarray, w: np.ndarray, b: np.ndarray, eps: float):
    """Normalise the last axis to zero mean and unit variance (biased), then scale and shift."""
    H = x.shape[-1]
    x2 = x.reshape(-1, H)                                          # (R, H) rows
    xhat, y = np.empty_like(x2), np.empty_like(x2)                 # (R, H)
    rstd = np.empty((x2.shape[0], 1), dtype=x.dtype)               # (R, 1)

    def rows(r: slice) -> None:                                    # the formula, on a band of rows
        mean = x2[r].mean(axis=-1, keepdims=True)                  # (r, 1)
        xh = np.subtract(x2[r], mean, out=xhat[r])                 # (r, H) centred
        var = np.square(xh).mean(axis=-1, keepdims=True)           # (r, 1) biased, as PyTorch
        rs = np.divide(1.0, np.sqrt(var + eps), out=rstd[r])       # (r, 1) 1 / sqrt(var + eps)
        xh *= rs                                                   # (r, H) normalised, in place
        np.multiply(xh, w, out=y[r])
        y[r] += b
    run_rows(rows, x2.shape[0], H * x.itemsize)
    return y.reshape(x.shape), (xhat.reshape(x.shape), rstd.reshape(*x.shape[:-1], 1), w)


def layer_norm_backward(dy: np.ndarray, cache):
    """-> dx, dw, db. With g = dy * w: dx = rstd * (g - mean(g) - xhat * mean(g * xhat))."""
    xhat, rstd, w = cache
    H = xhat.shape[-1]
    dy2, xh2, rs2 = dy.reshape(-1, H), xhat.reshape(-1, H), rstd.reshape(-1, 1)  # (R, H), (R, H), (R, 1)
    t = dy2 * xh2                                                  # (R, H) the one temporary reused below
    dw = t.sum(axis=0)                                             # (H,)
    db = dy2.sum(axis=0)                                           # (H,)
    dx = np.empty_like(dy2)                                        # (R, H)

    def rows(r: slice) -> None:                                    # the formula, on a band of rows
        g = np.multiply(dy2[r], w, out=dx[r])                      # (r, H) g = dy * w
        tr = np.multiply(g, xh2[r], out=t[r])
        m2 = tr.mean(axis=-1, keepdims=True)                       # (r, 1) mean(g * xhat)
        g -= g.mean(axis=-1, keepdims=True)                        # g - mean(g), in place
        np.multiply(xh2[r], m2, out=tr)
        g -= tr
        g *= rs2[r]                                                # dx
    run_rows(rows, dy2.shape[0], H * dy.itemsize)
    return dx.reshape(dy.shape), dw, db


# ----------------------------------------------------------------------------------------- GELU
# GELU(x) = x * Phi(x) = 0.5 x (1 + erf(x / sqrt 2)), the exact form transformers' "gelu" uses.
# NumPy has no erf, so here are two, one per precision:
#
# float64: Cephes' rational approximations (S. L. Moshier, ndtr.c), the ones many C libraries ship:
#   erf(x) = x T(x^2) / U(x^2) for |x| < 1, and 1 - exp(-x^2) P(|x|) / Q(|x|) beyond. Checked against
#   Python's math.erf on 400k points of [-10, 10]: within 1e-15 (tests/test_layers.py), which the
#   1e-10 parity with PyTorch in float64 needs.
# float32: one branch-free formula, Numerical Recipes' Chebyshev fit (erfcc):
#   erfc(a) = t exp(-a^2 + poly(t)), t = 1 / (1 + a/2), relative error below 1.2e-7 for all a >= 0,
#   so erf = 1 - erfc is within 5e-7 absolute once float32 rounds 1 - erfc near 0.
#   GELU needs Phi(x) = 0.5 erfc(-x / sqrt 2), which this form gives with no such cancellation:
#   within 2e-7 of the exact Phi on [-8, 8], hence GELU within 2e-7 |x| plus float32's rounding of
#   the product (tests/test_layers.py checks all three bounds against math.erf in float64).
#   It is cheaper than Cephes in NumPy: no masks to split the array, no gathers and scatters,
#   and GELU is the largest elementwise cost in Bort's forward (timings: python -m minibort.bench).
# The well-known tanh approximation is off by up to 5e-4: not the same function.

_ERF_T = (9.60497373987051638749e0, 9.00260197203842689217e1, 2.23200534594684319226e3,
          7.00332514112805075473e3, 5.55923013010394962768e4)
_ERF_U = (1.0, 3.35617141647503099647e1, 5.21357949780152679795e2, 4.59432382970980127987e3,
          2.26290000613890934246e4, 4.92673942608635921086e4)
_ERFC_P = (2.46196981473530512524e-10, 5.64189564831068821977e-1, 7.46321056442269912687e0,
           4.86371970985681366614e1, 1.96520832956077098242e2, 5.26445194995477358631e2,
           9.34528527171957607540e2, 1.02755188689515710272e3, 5.57535335369399327526e2)
_ERFC_Q = (1.0, 1.32281951154744992508e1, 8.67072140885989742329e1, 3.54937778887819891062e2,
           9.75708501743205489753e2, 1.82390916687909736289e3, 2.24633760818710981792e3,
           1.65666309194161350182e3, 5.57535340817727675546e2)
# Numerical Recipes (2nd ed., section 6.2) erfcc coefficients, highest power of t first.
_ERFCC = (0.17087277, -0.82215223, 1.48851587, -1.13520398, 0.27886807, -0.18628806, 0.09678418,
          0.37409196, 1.00002368, -1.26551223)


def _polyval(coefs, x: np.ndarray) -> np.ndarray:
    """Horner's rule, highest power first; Python-float coefficients keep x's dtype."""
    y = x * coefs[0]
    y += coefs[1]
    for c in coefs[2:]:
        y *= x
        y += c
    return y


def _erfc_abs32(a: np.ndarray, overwrite_a: bool = False) -> np.ndarray:
    """erfc(a) for a >= 0 by Numerical Recipes' erfcc (relative error < 1.2e-7), in a's dtype."""
    t = 0.5 * a
    t += 1.0
    np.reciprocal(t, out=t)                                         # t = 1 / (1 + a/2)
    p = _polyval(_ERFCC, t)
    a2 = np.square(a, out=a if overwrite_a else None)
    p -= a2
    np.exp(p, out=p)
    p *= t
    return p


def erf(x: np.ndarray) -> np.ndarray:
    """The error function, elementwise, in x's dtype (see the comment above for its accuracy)."""
    x = np.asarray(x)
    a = np.abs(x)
    if x.dtype != np.float64:
        return np.copysign(1.0 - _erfc_abs32(a), x)
    out = np.empty_like(x)
    small = a < 1.0
    # |x| < 1: erf(x) = x T(x^2) / U(x^2)
    xs = x[small]
    z = xs * xs
    out[small] = xs * _polyval(_ERF_T, z) / _polyval(_ERF_U, z)
    # |x| >= 1: erf(x) = sign(x) (1 - erfc(|x|)), erfc(a) = exp(-a^2) P(a) / Q(a). Beyond 8, erfc
    # is below 1e-29 and erf is +-1 to double precision, so clipping there changes nothing.
    al = np.minimum(a[~small], 8.0)
    erfc = np.exp(-al * al) * _polyval(_ERFC_P, al) / _polyval(_ERFC_Q, al)
    out[~small] = np.copysign(1.0 - erfc, x[~small])
    return out


_INV_SQRT2 = 1.0 / math.sqrt(2.0)
_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)


def normal_cdf(x: np.ndarray) -> np.ndarray:
    """Phi(x) = 0.5 (1 + erf(x / sqrt 2)), the standard normal CDF, in x's dtype."""
    if x.dtype == np.float64:
        return 0.5 * (1.0 + erf(x * _INV_SQRT2))                    # the reference form itself
    # float32, the fast form of the same function. Reference form:
    #     phi = 0.5 * (1 + erf(x / sqrt 2))
    # Fast form: Phi(-|x|) = erfc(|x| / sqrt 2) / 2 directly, and Phi(|x|) = 1 - Phi(-|x|), so no
    # 1 - erfc cancellation; equal to the reference within 2e-7 (tests/test_layers.py).
    # (In place where the arrays are our own: GELU is the largest elementwise cost in the forward.)
    a = np.abs(x)
    a *= _INV_SQRT2
    phi = _erfc_abs32(a, overwrite_a=True)
    phi *= 0.5                                                      # h = Phi(-|x|)
    # Phi(x) = 0.5 + sign(x) (0.5 - h): h for x < 0, 1 - h for x >= 0. Three cheap passes; a masked
    # subtract or np.where does the same but gathers and scatters, several times slower.
    np.subtract(0.5, phi, out=phi)
    np.copysign(phi, x, out=phi)
    phi += 0.5
    return phi


def gelu(x: np.ndarray):
    """0.5 x (1 + erf(x / sqrt 2)), elementwise. The cache keeps x and Phi(x) for the backward."""
    x2 = x.reshape(-1, x.shape[-1])                                 # (R, I) rows
    phi, y = np.empty_like(x2), np.empty_like(x2)

    def rows(r: slice) -> None:                                     # the formula, on a band of rows
        phi[r] = normal_cdf(x2[r])                                  # Phi(x), the normal CDF
        np.multiply(x2[r], phi[r], out=y[r])                        # x Phi(x)
    run_rows(rows, x2.shape[0], x2.shape[1] * x.itemsize)
    return y.reshape(x.shape), (x, phi.reshape(x.shape))


def gelu_backward(dy: np.ndarray, cache) -> np.ndarray:
    """d/dx [x Phi(x)] = Phi(x) + x phi(x), with phi the normal density exp(-x^2/2) / sqrt(2 pi)."""
    x, phi = cache
    x2, phi2, dy2 = (a.reshape(-1, a.shape[-1]) for a in (x, phi, dy))  # (R, I) rows
    dx = np.empty_like(dy2)

    def rows(r: slice) -> None:     # dy * (phi + x * (exp(-x^2 / 2) / sqrt(2 pi))), no temporary
        t = np.multiply(x2[r], -0.5, out=dx[r])                     # (r, I)
        t *= x2[r]
        np.exp(t, out=t)
        t *= _INV_SQRT_2PI                                          # phi(x), the density
        t *= x2[r]
        t += phi2[r]
        t *= dy2[r]
    run_rows(rows, dx.shape[0], dx.shape[1] * dx.itemsize)
    return dx.reshape(dy.shape)


# ----------------------------------------------------------------------------------------- tanh


def tanh(x: np.ndarray):
    y = np.tanh(x)
    return y, y


def tanh_backward(dy: np.ndarray, y: np.ndarray) -> np.ndarray:
    return dy * (1.0 - y * y)


# ----------------------------------------------------------------------------------------- softmax


def softmax(x: np.ndarray, axis: int = -1, inplace: bool = False):
    """exp(x - max) / sum, along `axis`. Subtracting the max keeps exp from overflowing.

    inplace=True overwrites x (attention's scores, a temporary of its own): at 8 x 512 tokens the
    scores are 67 MB, and a fresh array that size costs more in page faults than the exp itself.
    """
    m = x.max(axis=axis, keepdims=True)                            # (..., 1)
    y = np.subtract(x, m, out=x if inplace else None)               # x - max: one pass, no copy first
    np.exp(y, out=y)
    y /= y.sum(axis=axis, keepdims=True)
    return y, y


def softmax_backward(dy: np.ndarray, y: np.ndarray, axis: int = -1, out: np.ndarray | None = None) -> np.ndarray:
    """dx = y * (dy - sum(dy * y)): the Jacobian diag(y) - y y^T applied to dy.

    One temporary the size of dy (or none with out=dy, which overwrites dy with dx).
    """
    t = dy * y                                                      # (..., T)
    s = t.sum(axis=axis, keepdims=True)                             # (..., 1)
    dx = np.subtract(dy, s, out=t if out is None else out)          # dy - sum(dy * y)
    dx *= y
    return dx


# ----------------------------------------------------------------------------------------- dropout


def dropout(x: np.ndarray, p: float, rng: np.random.Generator | None):
    """Inverted dropout: zero each element with probability p, scale the rest by 1/(1-p).

    With p == 0 or no generator (evaluation), it is the identity and the cache is None.
    """
    if p == 0.0 or rng is None:
        return x, None
    keep = rng.random(x.shape, dtype=x.dtype) >= p
    scale = np.multiply(keep, 1.0 / (1.0 - p), dtype=x.dtype)       # 0 or 1/(1-p), in x's dtype
    return x * scale, scale


def dropout_backward(dy: np.ndarray, scale) -> np.ndarray:
    """The same mask and scale as the forward."""
    return dy if scale is None else dy * scale


# ----------------------------------------------------------------------------------------- attention


def attention_mask_bias(attention_mask: np.ndarray, dtype) -> np.ndarray:
    """(B, T) of 1 (attend) / 0 (padding) -> additive (B, 1, 1, T): 0 or the dtype's most negative value.

    This is transformers' convention; adding finfo.min to a score makes its softmax weight exactly 0.
    """
    neg = np.finfo(dtype).min
    return ((1.0 - attention_mask.astype(dtype)) * neg)[:, None, None, :]


def attention_reference(q: np.ndarray, k: np.ndarray, v: np.ndarray, mask_bias: np.ndarray,
                        p_drop: float = 0.0, rng: np.random.Generator | None = None):
    """softmax(q k^T / sqrt D + mask) v for all heads at once, the textbook form: (B, N, T, D) -> (B, N, T, D).

    Read this one first: `attention` below computes the same thing block by block. Returns
    (context, probabilities, cache); the tests compare the fast form against this one.
    """
    D = q.shape[-1]
    scale = 1.0 / math.sqrt(D)
    scores = q @ k.transpose(0, 1, 3, 2)                            # (B, N, T, T): one batched matmul
    scores *= scale
    scores += mask_bias                                             # (B, 1, 1, T) broadcast
    probs, _ = softmax(scores, inplace=True)                        # (B, N, T, T)
    probs_d, drop_cache = dropout(probs, p_drop, rng)               # (B, N, T, T)
    ctx = probs_d @ v                                               # (B, N, T, D)
    return ctx, probs, (q, k, v, probs, probs_d, drop_cache, scale)


def attention_reference_backward(dctx: np.ndarray, cache):
    """(B, N, T, D) gradient of the context -> dq, dk, dv, each (B, N, T, D). The forward read upwards."""
    q, k, v, probs, probs_d, drop_cache, scale = cache
    dprobs_d = dctx @ v.transpose(0, 1, 3, 2)                       # (B, N, T, T)
    dv = probs_d.transpose(0, 1, 3, 2) @ dctx                       # (B, N, T, D)
    dprobs = dropout_backward(dprobs_d, drop_cache)
    dscores = softmax_backward(dprobs, probs)                       # (B, N, T, T); the mask is constant
    dscores *= scale
    dq = dscores @ k                                                # (B, N, T, D)
    dk = dscores.transpose(0, 1, 3, 2) @ q                          # (B, N, T, D)
    return dq, dk, dv


# The fast form. The reference makes (B, N, T, T) arrays, 64 MB of scores per layer at Bort's 8 x 512,
# and sweeps them seven times (scale, mask, max, subtract, exp, sum, divide), each sweep a NumPy loop
# on one core. `attention` computes the same numbers one block of scores at a time, a block small
# enough (ATTENTION_BLOCK_BYTES) to stay in the core's L2 cache from its product with k through its
# softmax to its product with v, and shares the blocks out over several threads. That is
# FlashAttention's idea (Dao et al., 2022), in NumPy. (On this project's machine exp is most of the
# softmax's cost, in cache or not, so on one core the blocks gain little; the threads gain the most.
# python -m minibort.bench.forward times both forms.)
#
# FlashAttention also splits the keys, and then needs a running softmax: having seen keys 1..j of a
# row with running max m and running sum l = sum exp(s_i - m) and context c = sum exp(s_i - m) v_i,
# the next block of scores s' gives m' = max(m, max s'), l' = l e^(m - m') + sum exp(s' - m'),
# c' = c e^(m - m') + sum exp(s' - m') v', and c / l at the end is the softmax-weighted sum. Bort's
# rows have at most 512 keys (max_position_embeddings), and a block of whole rows fits in L2 (128
# rows x 512 keys x 4 bytes = 256 KB), so here every block holds whole rows and the softmax of a
# row is the ordinary one: the same arithmetic as the reference, with no rescaling.
#
# Two more savings: the 1/sqrt(D) scale is applied to q (T x D numbers) instead of the scores
# (T x T), and the context and gradients are written straight into (B, T, N, D) arrays, whose
# (B, T, H) reshape is free (the reference's transpose back costs a copy).
#
# The blocks are independent, so they run on several threads (minibort/_threads.py): NumPy's exp,
# max and sum use one core each, and a thread that takes the next free block never waits for a slow
# one, where OpenBLAS's own threads would (on a busy machine, they do).
#
# Blocks: for each sequence b, either a group of whole heads (when one head's T x T scores are small:
# at T = 128, 4 heads of 64 KB each) or, for long sequences, one head and a band of query rows.
# Either way a block is a contiguous slice of the (B, N, T, T) array, visited in memory order, so the
# dropout masks drawn block by block are exactly the reference's one big draw.

ATTENTION_BLOCK_BYTES = 1 << 18        # scores per block: 256 KB, a quarter of this machine's L2
ATTENTION_THREADS_MIN_BYTES = 1 << 20  # below 1 MB of scores in all, one thread: starting more costs more


def attention_blocks(B: int, N: int, T: int, itemsize: int, block_bytes: int = ATTENTION_BLOCK_BYTES,
                     Tk: int | None = None):
    """Yield (b, heads, rows) slices covering (B, N, T, Tk) in memory order, each about `block_bytes`.

    T is the number of queries, Tk the number of keys (default T; fewer queries than keys when a
    layer is asked for some rows only, see `self_attention`'s `rows`)."""
    Tk = T if Tk is None else Tk
    head_bytes = T * Tk * itemsize                                  # one head's (T, Tk) scores
    if head_bytes <= block_bytes:                                   # whole heads, several at a time
        g = max(1, block_bytes // head_bytes)
        for b in range(B):
            for n in range(0, N, g):
                yield b, slice(n, min(n + g, N)), slice(0, T)
    else:                                                           # one head, a band of query rows
        r = max(1, block_bytes // (Tk * itemsize))
        for b in range(B):
            for n in range(N):
                for t in range(0, T, r):
                    yield b, slice(n, n + 1), slice(t, min(t + r, T))


def attention(q: np.ndarray, k: np.ndarray, v: np.ndarray, mask_bias: np.ndarray, p_drop: float = 0.0,
              rng: np.random.Generator | None = None, keep_probs: bool = True,
              block_bytes: int = ATTENTION_BLOCK_BYTES, threads: int | None = None):
    """`attention_reference`'s result computed block by block: (B, N, T, D) q, k, v -> context (B, T, N, D).

    q may hold fewer rows than k and v, (B, N, Q, D) against (B, N, T, D): the context is then (B, Q, N, D).

    The context comes in (B, T, N, D) layout (reshape to (B, T, H) is free). Returns (context,
    probabilities, cache). keep_probs=False (inference) keeps no (B, N, T, T) array of
    probabilities: they and the cache are then None. The blocks run on `threads` threads
    (default: minibort._threads.num_threads(), see MINIBORT_NUM_THREADS there).
    """
    B, N, Q, D = q.shape                                            # Q queries (Q = T unless rows were picked)
    T = k.shape[2]                                                  # T keys and values
    dtype = q.dtype
    try:
        mask_bias = np.broadcast_to(mask_bias, (B, 1, 1, T))        # (B, 1, 1, T)
    except ValueError:
        raise ValueError(f"mask_bias has shape {np.shape(mask_bias)}; the blocked attention takes one bias "
                         f"per key, (B, 1, 1, T) = {(B, 1, 1, T)}, as attention_mask_bias(mask, dtype) "
                         "builds it (use attention_reference for other shapes)") from None
    padded = (mask_bias != 0.0).any(axis=(1, 2, 3))                 # (B,): sequences with padding
    scale = 1.0 / math.sqrt(D)
    qs = q * scale                                                  # (B, N, Q, D) scaled once, here
    ctx = np.empty((B, Q, N, D), dtype=dtype)
    ctx_h = ctx.transpose(0, 2, 1, 3)                               # (B, N, Q, D) view for writing
    probs = np.empty((B, N, Q, T), dtype=dtype) if keep_probs else None
    blocks = list(attention_blocks(B, N, Q, dtype.itemsize, block_bytes, Tk=T))
    if threads is None and B * N * Q * T * dtype.itemsize < ATTENTION_THREADS_MIN_BYTES:
        threads = 1                                                 # too little work to share out
    keep = None
    if p_drop > 0.0 and rng is not None:
        # The dropout mask first, block by block in memory order: the reference's very draws.
        keep = np.empty((B, N, Q, T), dtype=bool)
        for b, hs, rows in blocks:
            keep[b, hs, rows] = rng.random(keep[b, hs, rows].shape, dtype=dtype) >= p_drop

    def block(blk) -> None:                                         # one block, start to finish
        b, hs, rows = blk
        g, r = hs.stop - hs.start, rows.stop - rows.start
        s = probs[b, hs, rows] if keep_probs else np.empty((g, r, T), dtype=dtype)  # (g, r, T)
        np.matmul(qs[b, hs, rows], k[b, hs].transpose(0, 2, 1), out=s)  # (g, r, D) @ (g, D, T)
        if padded[b]:
            s += mask_bias[b]                                       # (1, 1, T) broadcast
        softmax(s, inplace=True)                                    # (g, r, T), still in cache
        if keep is not None:
            s = s * keep[b, hs, rows]                               # a copy: probs stay for the backward
            s *= 1.0 / (1.0 - p_drop)
        np.matmul(s, v[b, hs], out=ctx_h[b, hs, rows])              # (g, r, T) @ (g, T, D)
    run_blocks(block, blocks, threads)
    cache = (qs, k, v, probs, keep, p_drop, scale, block_bytes, threads) if keep_probs else None
    return ctx, probs, cache


def attention_backward(dctx: np.ndarray, cache):
    """(B, Q, N, D) gradient of `attention`'s context -> dq (B, Q, N, D), dk, dv (B, T, N, D).

    Block by block as the forward, with the reference's formulas: for a block of probabilities P,
    dv += P_d^T dC, dP = dropout_backward(dC v^T), dS = softmax_backward(dP, P), dq = scale dS k,
    dk += dS^T (scale q). The bands of one head add into the same rows of dk and dv, so they stay
    together on one thread, in order.
    """
    qs, k, v, probs, keep, p_drop, scale, block_bytes, threads = cache
    B, N, Q, D = qs.shape
    T = k.shape[2]
    dtype = qs.dtype
    dctx_h = dctx.transpose(0, 2, 1, 3)                             # (B, N, Q, D) view
    dq = np.empty((B, Q, N, D), dtype=dtype)
    dk, dv = (np.empty((B, T, N, D), dtype=dtype) for _ in range(2))
    dq_h, dk_h, dv_h = (t.transpose(0, 2, 1, 3) for t in (dq, dk, dv))  # (B, N, ., D) views

    def bands(blks) -> None:                                        # every band of one group of heads
        for b, hs, rows in blks:
            P = probs[b, hs, rows]                                  # (g, r, T)
            dC = dctx_h[b, hs, rows]                                # (g, r, D)
            first = rows.start == 0                                 # dk, dv: first band sets, others add
            Pd = P
            if keep is not None:
                Pd = P * keep[b, hs, rows]                          # (g, r, T) the dropped probabilities
                Pd *= 1.0 / (1.0 - p_drop)
            if first:
                np.matmul(Pd.transpose(0, 2, 1), dC, out=dv_h[b, hs])  # (g, T, r) @ (g, r, D)
            else:
                dv_h[b, hs] += Pd.transpose(0, 2, 1) @ dC
            dS = dC @ v[b, hs].transpose(0, 2, 1)                   # (g, r, T) d(dropped probs)
            if keep is not None:
                dS *= keep[b, hs, rows]
                dS *= 1.0 / (1.0 - p_drop)                          # (g, r, T) d(probs)
            softmax_backward(dS, P, out=dS)                         # (g, r, T) d(scores), in place
            np.matmul(dS, k[b, hs], out=dq_h[b, hs, rows])          # (g, r, T) @ (g, T, D)
            dq_h[b, hs, rows] *= scale
            if first:
                np.matmul(dS.transpose(0, 2, 1), qs[b, hs, rows], out=dk_h[b, hs])  # (g, T, r) @ (g, r, D)
            else:
                dk_h[b, hs] += dS.transpose(0, 2, 1) @ qs[b, hs, rows]
    groups = [list(g) for _, g in itertools.groupby(attention_blocks(B, N, Q, dtype.itemsize, block_bytes, Tk=T),
                                                    key=lambda blk: (blk[0], blk[1].start))]
    run_blocks(bands, groups, threads)
    return dq, dk, dv


def gather_rows(x: np.ndarray, rows: np.ndarray):
    """(B, T, H), (B, Q) positions -> (B, Q, H): row rows[b, j] of sequence b at [b, j]."""
    return x[np.arange(x.shape[0])[:, None], rows], (rows, x.shape)


def gather_rows_backward(dy: np.ndarray, cache, out: np.ndarray | None = None) -> np.ndarray:
    """(B, Q, H) -> (B, T, H), added into `out` if given; np.add.at, as a row may be picked twice."""
    rows, shape = cache
    dx = np.zeros(shape, dtype=dy.dtype) if out is None else out
    np.add.at(dx, (np.arange(shape[0])[:, None], rows), dy)
    return dx


def self_attention(x: np.ndarray, Wq, bq, Wk, bk, Wv, bv, mask_bias: np.ndarray, num_heads: int,
                   p_drop: float = 0.0, rng: np.random.Generator | None = None, reference: bool = False,
                   keep_probs: bool = True, rows: np.ndarray | None = None):
    """Multi-head self-attention before the output projection: (B, T, H) -> context (B, T, H).

    q, k, v = x Wq^T + bq, ...; split into N contiguous heads of D; softmax(q k^T / sqrt D + mask) v.
    Returns (context, probabilities, cache). reference=True computes the T x T part with
    `attention_reference` (the textbook form), otherwise with the blocked `attention`; the two agree
    to rounding. keep_probs=False (inference, blocked form only) returns None for both probabilities
    and cache.

    rows, (B, Q) positions, asks for their context only, (B, Q, H): only they make queries, every
    position still gives its key and value (`encoder_forward`'s `last_rows` says when that is enough).
    """
    B, T, H = x.shape
    N = num_heads
    D = H // N
    x_q, c_rows = (x, None) if rows is None else gather_rows(x, rows)  # (B, Q, H) the queries' rows
    Q = x_q.shape[1]
    # Three GEMMs rather than one on the stacked (3H, H) weight: the same arithmetic, but stacking
    # copies 12 MB per call at Bort's size, and OpenBLAS ran the (3H, H) shape slower (bench.forward).
    q, c_q = linear(x_q, Wq, bq)                                    # (B, Q, H)
    k, c_k = linear(x, Wk, bk)                                      # (B, T, H)
    v, c_v = linear(x, Wv, bv)                                      # (B, T, H)
    q = q.reshape(B, Q, N, D).transpose(0, 2, 1, 3)                 # (B, N, Q, D) view
    k, v = (t.reshape(B, T, N, D).transpose(0, 2, 1, 3) for t in (k, v))  # (B, N, T, D) views
    if reference:
        ctx, probs, c_att = attention_reference(q, k, v, mask_bias, p_drop, rng)  # (B, N, Q, D)
        ctx = ctx.transpose(0, 2, 1, 3).reshape(B, Q, H)            # (B, Q, H), heads side by side
    else:
        ctx, probs, c_att = attention(q, k, v, mask_bias, p_drop, rng, keep_probs)  # (B, Q, N, D)
        ctx = ctx.reshape(B, Q, H)                                  # (B, Q, H): a free reshape
        if c_att is None:
            return ctx, None, None
    return ctx, probs, (reference, c_q, c_k, c_v, c_att, c_rows)


def self_attention_backward(dctx: np.ndarray, cache):
    """-> dx, dWq, dbq, dWk, dbk, dWv, dbv. The forward read upwards."""
    reference, c_q, c_k, c_v, c_att, c_rows = cache
    B, Q, H = dctx.shape
    N = c_att[0].shape[1]
    D = H // N
    if reference:
        dq, dk, dv = attention_reference_backward(
            dctx.reshape(B, Q, N, D).transpose(0, 2, 1, 3), c_att)  # (B, N, Q, D), (B, N, T, D) x 2
        dq, dk, dv = (t.transpose(0, 2, 1, 3).reshape(B, -1, H) for t in (dq, dk, dv))  # (B, ., H) copies
    else:
        dq, dk, dv = attention_backward(dctx.reshape(B, Q, N, D), c_att)  # (B, Q, N, D), (B, T, N, D) x 2
        dq, dk, dv = (t.reshape(B, -1, H) for t in (dq, dk, dv))    # (B, Q, H), (B, T, H) x 2: free reshapes
    dx_q, dWq, dbq = linear_backward(dq, c_q)                       # (B, Q, H)
    dx, dWk, dbk = linear_backward(dk, c_k)                         # (B, T, H)
    dx_v, dWv, dbv = linear_backward(dv, c_v)                       # (B, T, H)
    if c_rows is None:                                              # x fed all three projections
        dx_q += dx
        dx_q += dx_v
        return dx_q, dWq, dbq, dWk, dbk, dWv, dbv
    dx += dx_v
    gather_rows_backward(dx_q, c_rows, out=dx)                      # the queries' rows, added in place
    return dx, dWq, dbq, dWk, dbk, dWv, dbv


# ----------------------------------------------------------------------------------------- losses


def log_softmax(x: np.ndarray, axis: int = -1) -> np.ndarray:
    m = x.max(axis=axis, keepdims=True)
    shifted = x - m
    return shifted - np.log(np.exp(shifted).sum(axis=axis, keepdims=True))


def cross_entropy(logits: np.ndarray, labels: np.ndarray):
    """Mean cross-entropy over rows: (M, C) logits, (M,) int labels -> scalar loss.

    Rows whose label is -100 must already be removed (the models gather labelled rows first).
    """
    M = logits.shape[0]
    logp = log_softmax(logits)                                      # (M, C)
    loss = -logp[np.arange(M), labels].mean()
    return loss, (logp, labels)


def cross_entropy_backward(dloss: float, cache) -> np.ndarray:
    """d mean(-log softmax(z)[y]) / dz = (softmax(z) - onehot(y)) / M."""
    logp, labels = cache
    M = logp.shape[0]
    dz = np.exp(logp)                                               # (M, C) softmax
    dz[np.arange(M), labels] -= 1.0
    dz *= dloss / M
    return dz


def mse(pred: np.ndarray, target: np.ndarray):
    """Mean squared error: transformers' loss for single-label regression."""
    diff = pred - target
    return (diff * diff).mean(), diff


def mse_backward(dloss: float, diff: np.ndarray) -> np.ndarray:
    return diff * (2.0 * dloss / diff.size)


def distillation_kl(student_logits: np.ndarray, teacher_logits: np.ndarray, temperature: float):
    """T^2 * KL(softmax(teacher / T) || softmax(student / T)), averaged over rows.

    Bort's pretraining term (Hinton et al.): the T^2 keeps gradient sizes comparable across T.
    """
    T = temperature
    logq = log_softmax(student_logits / T)                          # (M, V) student
    logp = log_softmax(teacher_logits.astype(student_logits.dtype) / T)  # (M, V) teacher
    p = np.exp(logp)
    M = student_logits.shape[0]
    loss = (T * T) * (p * (logp - logq)).sum() / M
    return loss, (logq, p, T)


def distillation_kl_backward(dloss: float, cache) -> np.ndarray:
    """d/dz_student = T^2 * (q - p) / (T M) = T (q - p) / M."""
    logq, p, T = cache
    M = logq.shape[0]
    return (np.exp(logq) - p) * (dloss * T / M)
