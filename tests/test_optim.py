"""minibort.optim against PyTorch and transformers, plus what needs only NumPy: BertAdam's formula,
gradient accumulation, the finite check, dtype preservation, resumable optimizer state."""

from __future__ import annotations

import math

import numpy as np
import pytest

from minibort import BortConfig, BortForMaskedLM, optim

REASON = "optimizer parity tests need torch/transformers (the `reference` extra)"


@pytest.fixture
def torch():
    return pytest.importorskip("torch", reason=REASON)


NAMES = ["enc.dense.weight", "enc.dense.bias", "enc.LayerNorm.weight", "enc.LayerNorm.bias", "emb.weight"]
SHAPES = [(5, 4), (5,), (4,), (4,), (7, 4)]


def make_params(dtype, seed=0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {n: rng.standard_normal(s).astype(dtype) for n, s in zip(NAMES, SHAPES)}


def grad_stream(dtype, steps, seed=1):
    rng = np.random.default_rng(seed)
    return [{n: rng.standard_normal(s).astype(dtype) for n, s in zip(NAMES, SHAPES)} for _ in range(steps)]


def max_err(P: dict, tparams: dict) -> float:
    return max(float(np.abs(P[n] - tparams[n].detach().numpy()).max()) for n in P)


def report(name, err, tol):
    print(f"{name:50s} max abs err {err:.2e}  tol {tol:.0e}")
    assert err <= tol


# ------------------------------------------------------------------------------------------ vs torch


@pytest.mark.reference
@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["float64", "float32"])
def test_adamw_with_no_decay_and_schedule_matches_torch(torch, dtype):
    """Ten AdamW steps under a linear warm-up/decay schedule; LayerNorm and biases without decay."""
    get_linear_schedule_with_warmup = pytest.importorskip("transformers", reason=REASON).get_linear_schedule_with_warmup
    P = make_params(dtype)
    T = {n: torch.nn.Parameter(torch.tensor(v.copy())) for n, v in P.items()}
    nd = optim.no_decay_layernorm_and_bias
    groups = [{"params": [T[n] for n in NAMES if not nd(n)], "weight_decay": 0.1},
              {"params": [T[n] for n in NAMES if nd(n)], "weight_decay": 0.0}]
    topt = torch.optim.AdamW(groups, lr=3e-2, betas=(0.8, 0.99), eps=1e-6)
    tsched = get_linear_schedule_with_warmup(topt, 3, 10)
    opt = optim.AdamW(P, lr=3e-2, betas=(0.8, 0.99), eps=1e-6, weight_decay=0.1, no_decay=nd)
    sched = optim.Scheduler(opt, optim.linear_warmup_decay(3, 10))
    for g in grad_stream(dtype, 10):
        for n in NAMES:
            T[n].grad = torch.tensor(g[n])
        topt.step()
        tsched.step()
        opt.step(g)
        sched.step()
        assert math.isclose(opt.lr, topt.param_groups[0]["lr"], rel_tol=1e-15, abs_tol=1e-18)
    tol = 1e-14 if dtype == np.float64 else 1e-6
    report(f"AdamW {np.dtype(dtype).name} params after 10 steps", max_err(P, T), tol)
    assert all(p.dtype == dtype for p in P.values())
    assert all(s.dtype == dtype for st in opt.state.values() for s in st.values())


@pytest.mark.reference
@pytest.mark.parametrize("momentum,wd", [(0.0, 0.0), (0.9, 0.0), (0.9, 0.05)])
def test_sgd_matches_torch(torch, momentum, wd):
    P = make_params(np.float64)
    T = {n: torch.nn.Parameter(torch.tensor(v.copy())) for n, v in P.items()}
    topt = torch.optim.SGD(list(T.values()), lr=0.1, momentum=momentum, weight_decay=wd)
    opt = optim.SGD(P, lr=0.1, momentum=momentum, weight_decay=wd)
    for g in grad_stream(np.float64, 6):
        for n in NAMES:
            T[n].grad = torch.tensor(g[n])
        topt.step()
        opt.step(g)
    report(f"SGD momentum={momentum} wd={wd}", max_err(P, T), 1e-14)


@pytest.mark.reference
@pytest.mark.parametrize("kind", ["linear", "cosine", "constant"])
def test_schedules_match_transformers(torch, kind):
    transformers = pytest.importorskip("transformers", reason=REASON)
    p = torch.nn.Parameter(torch.zeros(1))
    topt = torch.optim.SGD([p], lr=2e-4)
    warm, total = 7, 50
    if kind == "linear":
        ts, fn = transformers.get_linear_schedule_with_warmup(topt, warm, total), optim.linear_warmup_decay(warm, total)
    elif kind == "cosine":
        ts, fn = transformers.get_cosine_schedule_with_warmup(topt, warm, total), optim.cosine(warm, total)
    else:
        ts, fn = transformers.get_constant_schedule(topt), optim.constant()
    opt = optim.SGD({"p": np.zeros(1)}, lr=2e-4)
    sched = optim.Scheduler(opt, fn)
    for step in range(total + 5):                      # past the end: the multiplier stays at 0
        assert math.isclose(opt.lr, topt.param_groups[0]["lr"], rel_tol=1e-12, abs_tol=1e-20), step
        topt.step()
        ts.step()
        sched.step()


@pytest.mark.reference
@pytest.mark.parametrize("max_norm", [0.5, 1e6])
def test_clip_grad_norm_matches_torch(torch, max_norm):
    g = grad_stream(np.float64, 1)[0]
    T = {n: torch.nn.Parameter(torch.zeros(s, dtype=torch.float64)) for n, s in zip(NAMES, SHAPES)}
    for n in NAMES:
        T[n].grad = torch.tensor(g[n].copy())
    tnorm = torch.nn.utils.clip_grad_norm_(list(T.values()), max_norm)
    norm = optim.clip_grad_norm(g, max_norm)
    report(f"clip_grad_norm total norm (max_norm={max_norm})", abs(norm - float(tnorm)), 1e-13)
    report(f"clip_grad_norm clipped grads (max_norm={max_norm})",
           max(float(np.abs(g[n] - T[n].grad.numpy()).max()) for n in NAMES), 1e-15)


# ------------------------------------------------------------------------------------------ NumPy only


def test_bertadam_is_gluonnlp_formula():
    """GluonNLP's BERTAdam, written out plainly: no bias correction; lr * wd * p; no decay on
    LayerNorm and biases; eps 1e-6 by default."""
    P = make_params(np.float64)
    ref = {n: v.copy() for n, v in P.items()}
    m = {n: np.zeros_like(v) for n, v in P.items()}
    v = {n: np.zeros_like(x) for n, x in P.items()}
    lr, b1, b2, eps, wd = 1e-2, 0.9, 0.999, 1e-6, 0.3
    opt = optim.BertAdam(P, lr=lr, weight_decay=wd)
    assert opt.eps == 1e-6
    for g in grad_stream(np.float64, 5):
        opt.step(g)
        for n in NAMES:
            m[n] = b1 * m[n] + (1 - b1) * g[n]
            v[n] = b2 * v[n] + (1 - b2) * g[n] ** 2
            w = 0.0 if ("LayerNorm" in n or n.endswith("bias")) else wd
            ref[n] = ref[n] - lr * (m[n] / (np.sqrt(v[n]) + eps) + w * ref[n])
    report("BertAdam vs formula, 5 steps", max(float(np.abs(P[n] - ref[n]).max()) for n in NAMES), 1e-15)


def test_bertadam_first_step_has_no_bias_correction():
    """Step 1: m = 0.1 g, sqrt(v) = sqrt(0.001) |g| -> update ~ lr * 3.16 sign(g); AdamW's is lr sign(g)."""
    p = {"w": np.zeros(3)}
    optim.BertAdam(p, lr=1.0, eps=0.0).step({"w": np.array([2.0, -0.5, 1e-3])})
    np.testing.assert_allclose(p["w"], -0.1 / math.sqrt(0.001) * np.array([1, -1, 1]), rtol=1e-12)
    q = {"w": np.zeros(3)}
    optim.AdamW(q, lr=1.0, eps=0.0, weight_decay=0.0).step({"w": np.array([2.0, -0.5, 1e-3])})
    np.testing.assert_allclose(q["w"], -np.array([1, -1, 1]), rtol=1e-12)


def small_mlm(dtype=np.float64):
    cfg = BortConfig(vocab_size=40, hidden_size=16, num_hidden_layers=2, num_attention_heads=4,
                     intermediate_size=12, max_position_embeddings=16)
    return BortForMaskedLM(cfg, dtype=dtype, seed=3)


def mlm_batch(B=6, T=9, seed=0):
    rng = np.random.default_rng(seed)
    ids = rng.integers(3, 40, (B, T))
    ids[:, 0] = 0
    lengths = rng.integers(2, T + 1, B)
    mask = (np.arange(T)[None] < lengths[:, None]).astype(np.int64)
    ids[mask == 0] = 1
    labels = np.where((rng.random((B, T)) < 0.4) & (mask == 1), rng.integers(3, 40, (B, T)), -100)
    labels[:, 1] = ids[:, 1]                                   # at least one label per row
    return ids, mask, labels


def test_gradient_accumulation_equals_big_batch():
    """Micro-batches holding different numbers of labels, weighted by their label counts, give the
    big batch's mean-over-labels loss and gradient."""
    m = small_mlm()
    ids, mask, labels = mlm_batch()
    loss_big, g_big = m.loss_and_grads(ids, labels, mask)
    acc = optim.GradientAccumulator()
    for rows in (slice(0, 1), slice(1, 4), slice(4, 6)):
        loss, g = m.loss_and_grads(ids[rows], labels[rows], mask[rows])
        acc.add(loss, g, weight=int((labels[rows] != -100).sum()))
    loss_acc, g_acc = acc.result()
    err = max(float(np.abs(g_acc[n] - g_big[n]).max()) for n in g_big)
    report("accumulated vs big-batch gradient", err, 1e-14)
    report("accumulated vs big-batch loss", abs(loss_acc - loss_big), 1e-14)
    assert set(g_acc) == set(g_big)
    # an unweighted mean of micro-batch means is NOT the big-batch gradient here
    plain = optim.accumulate(None, m.loss_and_grads(ids[:1], labels[:1], mask[:1])[1])
    for rows in (slice(1, 4), slice(4, 6)):
        optim.accumulate(plain, m.loss_and_grads(ids[rows], labels[rows], mask[rows])[1])
    assert max(float(np.abs(plain[n] / 3 - g_big[n]).max()) for n in g_big) > 1e-4


def test_check_finite_names_step_and_tensor():
    g = {n: np.ones(s) for n, s in zip(NAMES, SHAPES)}
    optim.check_finite(1.5, g, 7)                                       # fine: no error
    g["enc.LayerNorm.bias"][2] = np.nan
    with pytest.raises(optim.NonFiniteError, match=r"step 12: gradient of enc\.LayerNorm\.bias .*index \(2,\)"):
        optim.check_finite(1.5, g, 12)
    g["enc.LayerNorm.bias"][2] = 1.0
    g["emb.weight"][3, 1] = -np.inf
    with pytest.raises(optim.NonFiniteError, match=r"step 3: gradient of emb\.weight .*\(3, 1\)"):
        optim.check_finite(1.5, g, 3)
    with pytest.raises(FloatingPointError, match="step 4: the loss is nan"):
        optim.check_finite(float("nan"), g, 4)
    # a model that overflows: huge weights -> the check stops training with a named tensor
    m = small_mlm(np.float32)
    for k in m.params:
        if k.endswith("dense.weight"):
            m.params[k] *= np.float32(1e30)
    ids, mask, labels = mlm_batch(2)
    with np.errstate(all="ignore"):
        loss, grads = m.loss_and_grads(ids, labels, mask)
        with pytest.raises(optim.NonFiniteError, match="step 99"):
            optim.check_finite(loss, grads, 99)


@pytest.mark.parametrize("opt_cls", [optim.AdamW, optim.BertAdam, optim.SGD])
def test_float32_stays_float32_end_to_end(opt_cls):
    m = small_mlm(np.float32)
    ids, mask, labels = mlm_batch(3)
    opt = opt_cls(m.params, lr=1e-3, weight_decay=0.01)
    sched = optim.Scheduler(opt, optim.cosine(1, 5))
    acc = optim.GradientAccumulator()
    for _ in range(2):
        loss, g = m.loss_and_grads(ids, labels, mask)
        acc.add(loss, g, weight=int((labels != -100).sum()))
        acc.add(loss, g, weight=3)
        _, g = acc.result()
        optim.check_finite(loss, g, 0)
        optim.clip_grad_norm(g, 0.1)
        assert all(v.dtype == np.float32 for v in g.values())
        opt.step(g)
        sched.step()
    assert all(v.dtype == np.float32 for v in m.params.values())
    assert all(s.dtype == np.float32 for st in opt.state.values() for s in st.values())


@pytest.mark.parametrize("opt_cls", [optim.AdamW, optim.BertAdam, optim.SGD])
def test_state_dict_resumes_exactly(opt_cls, tmp_path):
    """3 steps, save (np.savez), restore into a fresh optimizer, 3 more == 6 uninterrupted steps, bit for bit."""
    kw = {"lr": 1e-2, "weight_decay": 0.1} | ({"momentum": 0.9} if opt_cls is optim.SGD else {})
    grads = grad_stream(np.float32, 6)
    P1 = make_params(np.float32)
    o1 = opt_cls(P1, **kw)
    for g in grads:
        o1.step(g)
    P2 = make_params(np.float32)
    o2 = opt_cls(P2, **kw)
    for g in grads[:3]:
        o2.step(g)
    np.savez(tmp_path / "opt.npz", **o2.state_dict())
    np.savez(tmp_path / "params.npz", **P2)
    P3 = {k: v.copy() for k, v in np.load(tmp_path / "params.npz").items()}
    o3 = opt_cls(P3, **kw)
    o3.load_state_dict(dict(np.load(tmp_path / "opt.npz")))
    assert o3.step_count == 3
    for g in grads[3:]:
        o3.step(g)
    for n in NAMES:
        np.testing.assert_array_equal(P3[n], P1[n])


def test_optimizer_updates_the_models_own_arrays_and_refuses_bad_grads():
    m = small_mlm()
    before = {k: v.copy() for k, v in m.params.items()}
    arrays = {k: id(v) for k, v in m.params.items()}
    opt = optim.AdamW(m.params, lr=1e-2)
    ids, mask, labels = mlm_batch(2)
    opt.step(m.loss_and_grads(ids, labels, mask)[1])
    assert {k: id(v) for k, v in m.params.items()} == arrays              # in place
    assert all(not np.array_equal(before[k], m.params[k]) for k in ("cls.predictions.bias",
                                                                     "bert.embeddings.word_embeddings.weight"))
    with pytest.raises(KeyError, match="nonexistent"):
        opt.step({"nonexistent": np.zeros(1)})
    with pytest.raises(ValueError, match="shape"):
        opt.step({"cls.predictions.bias": np.zeros(3)})


def test_clip_grad_norm_numpy():
    g = {"a": np.array([3.0, 0.0]), "b": np.array([[4.0]])}
    assert optim.clip_grad_norm(g, 10.0) == 5.0 and g["a"][0] == 3.0          # under the limit: untouched
    assert optim.clip_grad_norm(g, 1.0) == 5.0
    np.testing.assert_allclose(optim.global_norm(g), 1.0, rtol=1e-6)


@pytest.mark.parametrize("cls", [optim.AdamW, optim.BertAdam])
@pytest.mark.parametrize("threads", [1, 2])
def test_updates_in_bands_equal_one_pass_bit_for_bit(cls, threads, monkeypatch):
    """The update runs over cache-sized bands of the flattened arrays (on minibort's threads); every
    element's arithmetic is the one-pass formula's, so the results are identical, not merely close."""
    from minibort import _threads
    rng = np.random.default_rng(0)
    shapes = {"big.weight": (317, 641), "big.bias": (641,), "LayerNorm.weight": (7,)}   # 203k elements: many bands
    start = {k: rng.standard_normal(s).astype(np.float32) for k, s in shapes.items()}
    grads = [{k: rng.standard_normal(s).astype(np.float32) for k, s in shapes.items()} for _ in range(3)]
    results = []
    monkeypatch.setitem(_threads._state, "threads", threads)
    for one_pass in (False, True):                                    # bands, then the formula on whole arrays
        if one_pass:
            monkeypatch.setattr(optim.Optimizer, "_in_bands", staticmethod(lambda formula, *arrays: formula(*arrays)))
        params = {k: v.copy() for k, v in start.items()}
        opt = cls(params, lr=1e-2, weight_decay=0.1)
        for g in grads:
            opt.step(g)
        results.append(params)
    for k in shapes:
        np.testing.assert_array_equal(results[0][k], results[1][k], err_msg=k)
    assert not np.array_equal(results[0]["big.weight"], start["big.weight"])


def test_a_non_contiguous_parameter_is_updated_whole():
    """A parameter that is a strided view (not one of minibort's own) still gets the right update."""
    base = np.ones((4, 6), dtype=np.float64)
    view = base[:, ::2]                                               # (4, 3), not contiguous
    g = np.full((4, 3), 0.5)
    opt = optim.AdamW({"w": view}, lr=0.1, weight_decay=0.0)
    opt.step({"w": g})
    np.testing.assert_allclose(view, 1.0 - 0.1, rtol=1e-6)            # Adam's first step: lr * sign(g)
    np.testing.assert_array_equal(base[:, 1::2], 1.0)                 # the rest of the buffer untouched
