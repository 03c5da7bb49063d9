"""Property-based comparison of minibort's forward with transformers' BertModel / BertForMaskedLM.

Random small configurations, batch sizes, lengths and padding patterns, in float64; LayerNorm
weights, biases and the pad row perturbed. Each layer is fed the very input transformers' layer
received (captured with forward hooks), so a mismatch is pinned to one layer; then the whole model.
Tolerance: 1e-10 absolute on unpadded positions. Needs torch and transformers (reference extra).
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

torch = pytest.importorskip("torch", reason="needs torch (pip install torch==2.13.0 and the reference extra)")
transformers = pytest.importorskip("transformers", reason="needs transformers (reference extra)")

from minibort import BortConfig, BortForMaskedLM, BortModel
from minibort import layers as L

TOL = 1e-10


@st.composite
def configs_and_batches(draw):
    heads = draw(st.integers(1, 4))
    head_dim = draw(st.integers(1, 8))
    cfg = {"vocab_size": draw(st.integers(5, 60)), "hidden_size": heads * head_dim,
               "num_hidden_layers": draw(st.integers(1, 3)), "num_attention_heads": heads,
               "intermediate_size": draw(st.integers(1, 20)), "max_position_embeddings": draw(st.integers(8, 24)),
               "type_vocab_size": 1, "pad_token_id": 1, "layer_norm_eps": draw(st.sampled_from([1e-5, 1e-12]))}
    B = draw(st.integers(1, 4))
    T = draw(st.integers(1, cfg["max_position_embeddings"]))
    lengths = draw(st.lists(st.integers(1, T), min_size=B, max_size=B))
    seed = draw(st.integers(0, 2**31 - 1))
    return cfg, lengths, T, seed


def build(cfg: dict, lengths, T: int, seed: int):
    torch.manual_seed(seed)
    tm = transformers.BertForMaskedLM(transformers.BertConfig(**cfg, attn_implementation="eager")).double().eval()
    with torch.no_grad():
        for name, p in tm.named_parameters():
            if "LayerNorm" in name or name.endswith("bias"):
                p.add_(0.3 * torch.randn_like(p))
        tm.bert.embeddings.word_embeddings.weight[cfg["pad_token_id"]].normal_()
    rng = np.random.default_rng(seed)
    ids = rng.integers(0, cfg["vocab_size"], size=(len(lengths), T))
    mask = (np.arange(T)[None, :] < np.array(lengths)[:, None]).astype(np.int64)
    sd = {k: v.detach().numpy() for k, v in tm.state_dict().items()}
    return tm, ids, mask, sd


def check(name: str, got: np.ndarray, want, valid=None):
    want = want.detach().numpy() if hasattr(want, "detach") else want
    assert got.shape == want.shape, f"{name}: shape {got.shape} != {want.shape}"
    diff = np.abs(got - want)
    err = (diff[valid] if valid is not None else diff).max()
    assert err <= TOL, f"{name}: max error {err:.3e} > {TOL:.0e}"
    return err


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(configs_and_batches())
def test_each_layer_matches_transformers(case):
    cfg, lengths, T, seed = case
    tm, ids, mask, sd = build(cfg, lengths, T, seed)
    valid = mask.astype(bool)
    config = BortConfig(**cfg)
    seen = {}

    def hook(name):
        def fn(module, args, kwargs, out):
            seen[name] = (args[0] if args else next(iter(kwargs.values())), args, out)
        return fn

    hooks = [tm.bert.encoder.layer[i].attention.self.register_forward_hook(hook(f"self{i}"), with_kwargs=True)
             for i in range(cfg["num_hidden_layers"])]
    hooks += [tm.bert.encoder.layer[i].intermediate.register_forward_hook(hook(f"inter{i}"), with_kwargs=True)
              for i in range(cfg["num_hidden_layers"])]
    hooks += [tm.bert.encoder.layer[i].output.register_forward_hook(hook(f"out{i}"), with_kwargs=True)
              for i in range(cfg["num_hidden_layers"])]
    hooks.append(tm.cls.predictions.transform.register_forward_hook(hook("transform"), with_kwargs=True))
    with torch.no_grad():
        out = tm(torch.tensor(ids), attention_mask=torch.tensor(mask), output_hidden_states=True)
    for h in hooks:
        h.remove()

    # Embeddings: ids -> hidden_states[0].
    P = BortForMaskedLM(config, sd, dtype=np.float64).params
    emb = BortModel(config, sd, dtype=np.float64).intermediates(ids, mask)["embedding_output"]
    check("embeddings", emb, out.hidden_states[0], valid)
    mask_bias = L.attention_mask_bias(mask, np.float64)
    for i in range(cfg["num_hidden_layers"]):
        pre = f"bert.encoder.layer.{i}."
        x, _, (ctx_t, *_) = seen[f"self{i}"]
        ctx, _, _ = L.self_attention(
            x.numpy(), *(P[pre + f"attention.self.{n}.{w}"] for n in ("query", "key", "value")
                         for w in ("weight", "bias")), mask_bias, cfg["num_attention_heads"])
        check(f"layer {i} self-attention", ctx, ctx_t, valid)
        x, _, y_t = seen[f"inter{i}"]
        f, _ = L.linear(x.numpy(), P[pre + "intermediate.dense.weight"], P[pre + "intermediate.dense.bias"])
        check(f"layer {i} intermediate (linear + GELU)", L.gelu(f)[0], y_t, valid)
        g, args, y_t = seen[f"out{i}"]
        residual = args[1].numpy()
        o, _ = L.linear(g.numpy(), P[pre + "output.dense.weight"], P[pre + "output.dense.bias"])
        y, _ = L.layer_norm(o + residual, P[pre + "output.LayerNorm.weight"], P[pre + "output.LayerNorm.bias"],
                            cfg["layer_norm_eps"])
        check(f"layer {i} output (linear + residual + LayerNorm)", y, y_t, valid)
    x, _, y_t = seen["transform"]
    t, _ = L.linear(x.numpy(), P["cls.predictions.transform.dense.weight"], P["cls.predictions.transform.dense.bias"])
    t, _ = L.layer_norm(L.gelu(t)[0], P["cls.predictions.transform.LayerNorm.weight"],
                        P["cls.predictions.transform.LayerNorm.bias"], cfg["layer_norm_eps"])
    check("MLM transform", t, y_t, valid)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(configs_and_batches())
def test_whole_model_matches_transformers(case):
    cfg, lengths, T, seed = case
    tm, ids, mask, sd = build(cfg, lengths, T, seed)
    valid = mask.astype(bool)
    config = BortConfig(**cfg)
    with torch.no_grad():
        logits_t = tm(torch.tensor(ids), attention_mask=torch.tensor(mask)).logits
        hidden_t = tm.bert(torch.tensor(ids), attention_mask=torch.tensor(mask)).last_hidden_state
    check("BortModel last_hidden_state", BortModel(config, sd, dtype=np.float64)(ids, mask), hidden_t, valid)
    check("BortForMaskedLM logits", BortForMaskedLM(config, sd, dtype=np.float64)(ids, mask), logits_t, valid)
