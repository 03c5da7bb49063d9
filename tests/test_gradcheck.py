"""Finite-difference gradient checks of every hand-written backward, in float64, NumPy only.

For a function f and a random upstream gradient R, the scalar s = sum(f(x) * R) has ds/dx equal to
what the backward returns for dout = R. Fourth-order central differences estimate it:

    ds/dx_i ~ (s(x - 2h) - 8 s(x - h) + 8 s(x + h) - s(x + 2h)) / 12h,
    error ~ h^4 |s^(5)| / 30 + 18 eps |s| / 12h.

With h = 1e-4 and O(1) values that is ~1e-16 |s^(5)| + 1e-11 (the two-point stencil leaves up to
~5e-9 on these models, too close to a meaningful tolerance), so the check accepts
|analytic - numeric| <= ATOL + RTOL |numeric| with ATOL = 1e-8 and RTOL = 1e-6; a real bug is off
by O(|gradient|). The negative controls at the end feed deliberately wrong backwards to the same
check and assert that it rejects them: a check that cannot fail proves nothing.

Whole models are drawn by hypothesis (hidden 8-24, heads dividing it, 1-2 layers, FFN 4-20,
vocabulary ~30, batches with padding, first token always real). LayerNorm, biases and the pad row are
perturbed away from transformers' (1, 0, 0) initialisation so a forgotten term cannot hide.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from minibort import BortConfig, BortForMaskedLM, BortForSequenceClassification
from minibort import layers as L
from minibort import model as M

H_STEP = 1e-4
ATOL = 1e-8
RTOL = 1e-6


# ------------------------------------------------------------------------------------------ the check


def numeric_grad(f, x: np.ndarray, idxs, h: float = H_STEP) -> np.ndarray:
    """Fourth-order central differences of the scalar f() w.r.t. x at the flat indices idxs (x is
    edited in place and restored)."""
    flat = x.reshape(-1)
    out = np.empty(len(idxs))
    for j, i in enumerate(idxs):
        old = flat[i]
        s = {}
        for k in (-2, -1, 1, 2):
            flat[i] = old + k * h
            s[k] = f()
        flat[i] = old
        out[j] = (s[-2] - 8 * s[-1] + 8 * s[1] - s[2]) / (12 * h)
    return out


def check(name: str, analytic: np.ndarray, numeric: np.ndarray, atol: float = ATOL, rtol: float = RTOL) -> bool:
    """Combined absolute/relative criterion; prints the tensor's name, max error and tolerance."""
    err = np.abs(analytic - numeric)
    tol = atol + rtol * np.abs(numeric)
    ok = bool(np.all(err <= tol))
    worst = int(np.argmax(err - tol))
    print(f"{name:60s} max err {err.max():.2e}  tol {tol[worst]:.2e} at worst entry  "
          f"{'ok' if ok else 'FAIL'}")
    return ok


def gradcheck(name: str, f, x: np.ndarray, analytic: np.ndarray, idxs=None, rng=None, k: int = 6) -> bool:
    """Compare `analytic` (x's shape) with central differences of f at idxs (default: every entry of
    small x, else k random entries)."""
    if idxs is None:
        idxs = np.arange(x.size) if x.size <= 64 else rng.choice(x.size, size=k, replace=False)
    idxs = np.asarray(idxs)
    return check(name, analytic.reshape(-1)[idxs], numeric_grad(f, x, idxs))


# ------------------------------------------------------------------------------------------ layers


def _layer_cases():
    """(name, forward(*arrays) -> (out, cache), backward(dout, cache) -> tuple of grads, arrays)."""
    rng = np.random.default_rng(0)
    r = rng.standard_normal
    B, T, H, N, V = 2, 5, 8, 2, 11
    x = r((B, T, H))
    mask = np.array([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]])
    bias = L.attention_mask_bias(mask, np.float64)
    ids = np.array([[3, 1, 3, 3, 7], [0, 7, 1, 10, 3]])                 # repeated ids
    cases = [
        ("linear", L.linear, L.linear_backward, [r((B, T, H)), r((6, H)), r(6)]),
        ("layer_norm", lambda x, w, b: L.layer_norm(x, w, b, 1e-5), L.layer_norm_backward,
         [r((B, T, H)) * 2 + 1, 1 + 0.3 * r(H), r(H)]),
        ("gelu", L.gelu, lambda d, c: (L.gelu_backward(d, c),), [r((B, T, H)) * 2]),
        ("tanh", L.tanh, lambda d, c: (L.tanh_backward(d, c),), [r((B, T, H))]),
        ("softmax", L.softmax, lambda d, c: (L.softmax_backward(d, c),), [r((B, T, H)) * 3]),
        ("softmax axis 1", lambda x: L.softmax(x, axis=1), lambda d, c: (L.softmax_backward(d, c, axis=1),),
         [r((B, T, H))]),
        ("dropout p=0.3 fixed mask", lambda x: L.dropout(x, 0.3, np.random.default_rng(5)),
         lambda d, c: (L.dropout_backward(d, c),), [r((B, T, H))]),
        ("embedding (repeated ids)", lambda W: L.embedding(ids, W), lambda d, c: (L.embedding_backward(d, c),),
         [r((V, H))]),
    ]
    for p in (0.0, 0.25):
        def att(x, Wq, bq, Wk, bk, Wv, bv, p=p):
            ctx, _, cache = L.self_attention(x, Wq, bq, Wk, bk, Wv, bv, bias, N, p, np.random.default_rng(7))
            return ctx, cache
        cases.append((f"self_attention mask p_drop={p}", att, L.self_attention_backward,
                      [x.copy(), r((H, H)), r(H), r((H, H)), r(H), r((H, H)), r(H)]))
    M_, C = 7, 5
    labels = rng.integers(0, C, M_)
    cases += [
        ("cross_entropy", lambda z: L.cross_entropy(z, labels),
         lambda d, c: (L.cross_entropy_backward(d, c),), [r((M_, C)) * 2]),
        ("mse", lambda p_: L.mse(p_, np.linspace(-1, 1, M_)), lambda d, c: (L.mse_backward(d, c),), [r(M_)]),
        ("distillation_kl T=2", lambda z: L.distillation_kl(z, teacher, 2.0),
         lambda d, c: (L.distillation_kl_backward(d, c),), [r((M_, C)) * 2]),
        ("distillation_kl T=1", lambda z: L.distillation_kl(z, teacher, 1.0),
         lambda d, c: (L.distillation_kl_backward(d, c),), [r((M_, C)) * 2]),
    ]
    teacher = r((M_, C)) * 3
    return cases


LAYER_CASES = _layer_cases()


@pytest.mark.parametrize("case", LAYER_CASES, ids=[c[0] for c in LAYER_CASES])
def test_layer_backward_matches_finite_differences(case):
    name, fwd, bwd, arrays = case
    rng = np.random.default_rng(1)
    out, cache = fwd(*arrays)
    R = rng.standard_normal(np.shape(out))                         # random upstream gradient
    grads = bwd(R if np.ndim(out) else float(R), cache)
    grads = grads if isinstance(grads, tuple) else (grads,)

    def s():
        o, _ = fwd(*arrays)
        return float(np.sum(o * R))
    results = [gradcheck(f"{name} d{i}", s, a, g, rng=rng, k=12) for i, (a, g) in enumerate(zip(arrays, grads))]
    assert all(results)


def test_embedding_padding_idx_gets_no_gradient():
    """PyTorch's nn.Embedding(padding_idx) semantics: the pad row's gradient is 0, the rest unchanged."""
    rng = np.random.default_rng(2)
    ids = np.array([[0, 1, 2, 1], [2, 2, 1, 3]])
    _, cache = L.embedding(ids, rng.standard_normal((5, 4)))
    dy = rng.standard_normal((2, 4, 4))
    full = L.embedding_backward(dy, cache)
    pad = L.embedding_backward(dy, cache, padding_idx=1)
    assert np.all(pad[1] == 0)
    np.testing.assert_array_equal(np.delete(pad, 1, 0), np.delete(full, 1, 0))


# ------------------------------------------------------------------------------------------ models


def perturb(params: dict, rng: np.random.Generator, pad_id: int) -> None:
    """Weights N(0, 0.3); LayerNorm weights 1 + N(0, 0.2); biases N(0, 0.2); pad row non-zero."""
    for name, p in params.items():
        if "LayerNorm.weight" in name:
            p[...] = 1 + 0.2 * rng.standard_normal(p.shape)
        elif name.endswith("bias"):
            p[...] = 0.2 * rng.standard_normal(p.shape)
        else:
            p[...] = 0.3 * rng.standard_normal(p.shape)


@st.composite
def small_problem(draw):
    """A small Bort-shaped config and a padded batch: ids, attention mask, MLM labels, class labels."""
    H = draw(st.integers(8, 24))
    N = draw(st.sampled_from([n for n in (1, 2, 3, 4, 6, 8) if H % n == 0]))
    cfg = BortConfig(vocab_size=draw(st.integers(24, 32)), hidden_size=H, num_hidden_layers=draw(st.integers(1, 2)),
                     num_attention_heads=N, intermediate_size=draw(st.integers(4, 20)),
                     max_position_embeddings=12, num_labels=draw(st.sampled_from([1, 2, 3])),
                     pad_token_id=1)
    B = draw(st.integers(1, 3))
    T = draw(st.integers(2, 7))
    lengths = [draw(st.integers(1, T)) for _ in range(B)]                   # >= 1: first token real
    seed = draw(st.integers(0, 2**31 - 1))
    rng = np.random.default_rng(seed)
    mask = np.zeros((B, T), np.int64)
    for b, n in enumerate(lengths):
        mask[b, :n] = 1
    # Real tokens come from a few ids (so ids repeat) and never the pad id: at a real position the pad
    # id has a true derivative that PyTorch's padding_idx (and minibort) deliberately drops.
    pool = np.array([0, 2, 3, 5, 7])
    ids = np.where(mask == 1, rng.choice(pool, size=(B, T)), cfg.pad_token_id)
    labels = np.full((B, T), -100)
    real = np.argwhere(mask == 1)
    chosen = real[rng.choice(len(real), size=max(1, len(real) // 2), replace=False)]
    labels[chosen[:, 0], chosen[:, 1]] = rng.integers(0, cfg.vocab_size, len(chosen))
    y = rng.standard_normal(B) if cfg.num_labels == 1 else rng.integers(0, cfg.num_labels, B)
    return cfg, ids, mask, labels, y, seed


def _entries(name: str, p: np.ndarray, ids: np.ndarray, pad: int, rng) -> np.ndarray:
    """Flat indices to check: a few random ones; for the word embeddings also the pad row, the rows
    of repeated ids and an unused row."""
    k = min(p.size, 4)
    idx = list(rng.choice(p.size, size=k, replace=False))
    if name.endswith("word_embeddings.weight"):
        H = p.shape[1]
        vals, counts = np.unique(ids, return_counts=True)
        repeated = [v for v, c in zip(vals, counts) if c > 1 and v != pad]
        unused = [v for v in range(p.shape[0]) if v not in vals]
        for row in [pad] + repeated[:2] + unused[:1]:
            idx += [row * H + int(rng.integers(H))]
    return np.array(sorted({int(i) for i in idx}))


def check_model(model, loss_fn, ids, rng, train_seed=None) -> bool:
    """Gradcheck every parameter tensor of `model` at a few entries. In training mode the dropout
    generator is reseeded before each call so every evaluation draws the same masks."""
    def f():
        if train_seed is not None:
            model.train(seed=train_seed)
        return loss_fn()[0]
    if train_seed is not None:
        model.train(seed=train_seed)
    _, grads = loss_fn()
    assert set(grads) == set(model.params)
    pad = model.config.pad_token_id
    results = [gradcheck(name, f, p, grads[name], _entries(name, p, ids, pad, rng))
               for name, p in model.params.items()]
    return all(results)


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(small_problem())
def test_mlm_gradients_match_finite_differences(problem):
    cfg, ids, mask, labels, _, seed = problem
    rng = np.random.default_rng(seed)
    m = BortForMaskedLM(cfg, dtype=np.float64)
    perturb(m.params, rng, cfg.pad_token_id)
    assert check_model(m, lambda: m.loss_and_grads(ids, labels, mask), ids, rng)


@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(small_problem())
def test_classifier_gradients_match_finite_differences(problem):
    cfg, ids, mask, _, y, seed = problem
    rng = np.random.default_rng(seed)
    m = BortForSequenceClassification(cfg, dtype=np.float64)
    perturb(m.params, rng, cfg.pad_token_id)
    assert check_model(m, lambda: m.loss_and_grads(ids, y, mask), ids, rng)


@settings(max_examples=4, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(small_problem())
def test_gradients_with_dropout_match_finite_differences(problem):
    """Training mode: dropout masks fixed by reseeding; the backward must reuse the forward's masks."""
    cfg, ids, mask, labels, y, seed = problem
    rng = np.random.default_rng(seed)
    m = BortForMaskedLM(cfg, dtype=np.float64)
    perturb(m.params, rng, cfg.pad_token_id)
    assert check_model(m, lambda: m.loss_and_grads(ids, labels, mask), ids, rng, train_seed=seed)
    c = BortForSequenceClassification(cfg, dtype=np.float64)             # + the classifier head's dropout
    perturb(c.params, rng, cfg.pad_token_id)
    assert check_model(c, lambda: c.loss_and_grads(ids, y, mask), ids, rng, train_seed=seed)


@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(small_problem())
def test_distillation_loss_gradients_match_finite_differences(problem):
    """Bort's pretraining loss 0.1 MLM + 0.5 T^2 KL(teacher || student), T = 2."""
    cfg, ids, mask, labels, _, seed = problem
    rng = np.random.default_rng(seed)
    m = BortForMaskedLM(cfg, dtype=np.float64)
    perturb(m.params, rng, cfg.pad_token_id)
    teacher = 2 * rng.standard_normal((int((labels != -100).sum()), cfg.vocab_size))
    assert check_model(m, lambda: m.loss_and_grads(ids, labels, mask, teacher_logits=teacher, mlm_weight=0.1,
                                                   distill_weight=0.5, temperature=2.0), ids, rng)


@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(small_problem())
def test_gradient_wrt_embedding_output(problem):
    """d loss / d (embedding output), through the encoder blocks and the MLM head, every entry."""
    cfg, ids, mask, labels, _, seed = problem
    rng = np.random.default_rng(seed)
    m = BortForMaskedLM(cfg, dtype=np.float64)
    perturb(m.params, rng, cfg.pad_token_id)
    P, sel = m.params, labels != -100
    x0 = rng.standard_normal((*ids.shape, cfg.hidden_size))
    bias = L.attention_mask_bias(mask, np.float64)

    def forward(x):
        caches = []
        for i in range(cfg.num_hidden_layers):
            x, c, _ = M.encoder_layer(P, f"bert.encoder.layer.{i}.", cfg, x, bias, None)
            caches.append(c)
        logits, c_head = M.mlm_head(P, cfg, x[sel], m.word_embeddings)
        loss, c_ce = L.cross_entropy(logits, labels[sel])
        return loss, x, caches, c_head, c_ce

    _loss, h, caches, c_head, c_ce = forward(x0)
    dh_sel, _, _ = M.mlm_head_backward(L.cross_entropy_backward(1.0, c_ce), c_head)
    dx = np.zeros_like(h)
    dx[sel] = dh_sel
    for i in reversed(range(cfg.num_hidden_layers)):
        dx = M.encoder_layer_backward(dx, caches[i], f"bert.encoder.layer.{i}.", {})
    assert gradcheck("embedding output", lambda: forward(x0)[0], x0, dx, idxs=np.arange(x0.size))


# ------------------------------------------------------------------------------------------ negative controls


def test_negative_control_embedding_backward_without_add_at():
    """`dW[ids] += dy` keeps one update per repeated id: the check must reject it."""
    rng = np.random.default_rng(3)
    ids = np.array([[3, 1, 3, 3, 7], [0, 7, 1, 10, 3]])
    W = rng.standard_normal((11, 4))
    R = rng.standard_normal((2, 5, 4))

    def wrong_backward(dy, cache):
        ids, shape = cache
        dW = np.zeros(shape)
        dW[ids.reshape(-1)] += dy.reshape(-1, shape[1])                 # the bug
        return dW
    _, cache = L.embedding(ids, W)
    s = lambda: float(np.sum(L.embedding(ids, W)[0] * R))
    print("negative control, expected to FAIL:")
    assert not gradcheck("embedding, dW[ids] += dy", s, W, wrong_backward(R, cache))
    assert gradcheck("embedding, np.add.at", s, W, L.embedding_backward(R, cache))


def test_negative_control_layer_norm_without_mean_term():
    """A LayerNorm backward that forgets the -mean(g) term must be rejected."""
    rng = np.random.default_rng(4)
    x, w, b = rng.standard_normal((3, 6)), 1 + 0.3 * rng.standard_normal(6), rng.standard_normal(6)
    R = rng.standard_normal((3, 6))
    _, (xhat, rstd, _) = L.layer_norm(x, w, b, 1e-5)
    g = R * w
    wrong_dx = rstd * (g - xhat * (g * xhat).mean(axis=-1, keepdims=True))
    print("negative control, expected to FAIL:")
    assert not gradcheck("layer_norm dx without mean", lambda: float(np.sum(L.layer_norm(x, w, b, 1e-5)[0] * R)),
                         x, wrong_dx)


def test_negative_control_untied_decoder_gradient(monkeypatch):
    """An MLM head whose decoder gradient never reaches the tied word embeddings must be rejected."""
    cfg = BortConfig(vocab_size=25, hidden_size=8, num_hidden_layers=1, num_attention_heads=2,
                     intermediate_size=6, max_position_embeddings=8)
    rng = np.random.default_rng(5)
    m = BortForMaskedLM(cfg, dtype=np.float64)
    perturb(m.params, rng, cfg.pad_token_id)
    ids = np.array([[0, 5, 7, 5, 2]])
    labels = np.array([[-100, 9, -100, 4, -100]])
    name = "bert.embeddings.word_embeddings.weight"
    W = m.params[name]
    idxs = np.array([9 * 8 + 3, 4 * 8 + 1, 5 * 8 + 2, 20 * 8])           # label rows, an input row, unused row
    f = lambda: m.loss_and_grads(ids, labels)[0]
    assert gradcheck(name + " (correct)", f, W, m.loss_and_grads(ids, labels)[1][name], idxs)

    real = M.mlm_head_backward

    def forgets_tied(dlogits, cache):
        dh, g, dword = real(dlogits, cache)
        return dh, g, np.zeros_like(dword)                            # the bug
    monkeypatch.setattr(M, "mlm_head_backward", forgets_tied)
    wrong = m.loss_and_grads(ids, labels)[1][name]
    monkeypatch.undo()
    print("negative control, expected to FAIL:")
    assert not gradcheck(name + " (decoder gradient forgotten)", f, W, wrong, idxs)
