"""Training works: PyTorch's own first ten optimizer steps replayed (llm.c style), overfitting a tiny
batch, a short MLM run on real text, and train/eval semantics. NumPy only."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from minibort import BortConfig, BortForMaskedLM, optim

FIXTURE = Path(__file__).parent / "fixtures" / "training" / "trajectory.npz"
FORMAT_VERSION = 1
REGENERATE = "re-run `python tests/reference/make_training_fixtures.py` (needs torch and transformers)"


# ------------------------------------------------------------------------------------------ trajectory


@pytest.fixture(scope="module")
def trajectory():
    if not FIXTURE.exists():
        pytest.fail(f"{FIXTURE} is missing: {REGENERATE}")
    d = dict(np.load(FIXTURE))
    if int(d["format_version"]) != FORMAT_VERSION:
        pytest.fail(f"{FIXTURE} has format {int(d['format_version'])}, the test reads {FORMAT_VERSION}: {REGENERATE}")
    return d


@pytest.mark.parametrize("kind", ["adamw", "bertadam"])
def test_trajectory_matches_pytorch(trajectory, kind):
    """Ten steps from the same float64 weights on the same batches: every step's loss within 1e-5 of
    PyTorch's (it is ~1e-14), the pre-clipping gradient norm too, and the loss after the last step."""
    d = trajectory
    cfg = BortConfig.from_dict(json.loads(str(d["config"])))
    # copies: the model keeps the arrays it is given (no copy for matching dtype), and the optimizer
    # updates them in place, which would leak one run's weights into the next
    params = {k[len("param/"):]: v.copy() for k, v in d.items() if k.startswith("param/")}
    model = BortForMaskedLM(cfg, params, dtype=np.float64)
    assert set(model.params) == set(params)
    hp = json.loads(str(d[f"{kind}_hparams"]))
    if kind == "adamw":
        opt = optim.AdamW(model.params, lr=hp["lr"], weight_decay=hp["weight_decay"],
                          no_decay=optim.no_decay_layernorm_and_bias)
        sched = optim.Scheduler(opt, optim.linear_warmup_decay(hp["warmup"], hp["total"]))
    else:
        opt, sched = optim.BertAdam(model.params, lr=hp["lr"], eps=hp["eps"], weight_decay=hp["weight_decay"]), None
    losses, norms = [], []
    for s in range(len(d[f"{kind}_losses"])):
        loss, grads = model.loss_and_grads(d["input_ids"][s], d["labels"][s], d["attention_mask"][s])
        optim.check_finite(loss, grads, s)
        norms.append(optim.clip_grad_norm(grads, hp["clip"]))
        losses.append(loss)
        opt.step(grads)
        if sched is not None:
            sched.step()
    final, _ = model.loss_and_grads(d["input_ids"][0], d["labels"][0], d["attention_mask"][0])
    want = d[f"{kind}_losses"]
    for s, (got, ref) in enumerate(zip(losses, want)):
        print(f"{kind} step {s}: loss {got:.12f}  pytorch {ref:.12f}  diff {abs(got - ref):.1e}")
    loss_err = float(np.abs(np.array(losses) - want).max())
    norm_err = float(np.abs(np.array(norms) - d[f"{kind}_grad_norms"]).max())
    final_err = abs(final - float(d[f"{kind}_final_loss"]))
    print(f"{kind}: max loss diff {loss_err:.1e}, max grad-norm diff {norm_err:.1e}, final-loss diff "
          f"{final_err:.1e}; tol 1e-5 (fixture from torch {d['torch_version']}, "
          f"transformers {d['transformers_version']})")
    assert loss_err <= 1e-5 and norm_err <= 1e-5 and final_err <= 1e-5


# ------------------------------------------------------------------------------------------ learning


def test_overfits_a_tiny_batch():
    """Two sequences, every position labelled: AdamW drives the loss to near zero."""
    cfg = BortConfig(vocab_size=30, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                     intermediate_size=32, max_position_embeddings=16)
    model = BortForMaskedLM(cfg, dtype=np.float32, seed=0)
    rng = np.random.default_rng(0)
    ids = rng.integers(3, 30, (2, 8))
    labels = rng.integers(3, 30, (2, 8))                      # arbitrary targets: pure memorisation
    opt = optim.AdamW(model.params, lr=1e-2, weight_decay=0.0)
    first = None
    for step in range(150):
        loss, grads = model.loss_and_grads(ids, labels)
        first = loss if first is None else first
        opt.step(grads)
        if loss < 0.01:
            break
    print(f"overfit: loss {first:.3f} -> {loss:.4f} in {step + 1} steps")
    assert loss < 0.01


def byte_corpus() -> np.ndarray:
    """Python's own documentation (pydoc_data.topics, ~460 KB in the stdlib) as byte ids + 4."""
    from pydoc_data.topics import topics
    text = "\n".join(topics[k] for k in sorted(topics)).encode("utf-8")
    return np.frombuffer(text, dtype=np.uint8).astype(np.int64) + 4        # 0-3: <s> <pad> </s> <mask>


def mask_tokens(ids: np.ndarray, rng, vocab: int, mask_id: int = 3, p: float = 0.15):
    """BERT's recipe: 15 % of positions labelled; of those 80 % -> <mask>, 10 % random, 10 % kept."""
    labels = np.where(rng.random(ids.shape) < p, ids, -100)
    labels[:, 1] = np.where(labels[:, 1] == -100, ids[:, 1], labels[:, 1])       # never an empty batch
    sel = labels != -100
    r = rng.random(ids.shape)
    out = ids.copy()
    out[sel & (r < 0.8)] = mask_id
    rand = sel & (r >= 0.8) & (r < 0.9)
    out[rand] = rng.integers(4, vocab, int(rand.sum()))
    return out, labels


def test_mlm_on_real_text_loss_falls():
    """A short byte-level MLM run on real English: the held-out loss falls well below its start."""
    data = byte_corpus()
    split = int(len(data) * 0.9)
    V, T, B = 260, 32, 16
    cfg = BortConfig(vocab_size=V, hidden_size=48, num_hidden_layers=2, num_attention_heads=4,
                     intermediate_size=64, max_position_embeddings=T)
    model = BortForMaskedLM(cfg, dtype=np.float32, seed=0)
    rng = np.random.default_rng(0)

    def batch(lo, hi, rng):
        starts = rng.integers(lo, hi - T, B)
        return np.stack([data[s:s + T] for s in starts])

    held_rng = np.random.default_rng(123)
    held = [mask_tokens(batch(split, len(data), held_rng), held_rng, V) for _ in range(4)]

    def held_out_loss():
        return float(np.mean([model.loss_and_grads(x, y)[0] for x, y in held]))

    steps = 120
    opt = optim.AdamW(model.params, lr=3e-3, weight_decay=0.01, no_decay=optim.no_decay_layernorm_and_bias)
    sched = optim.Scheduler(opt, optim.linear_warmup_decay(10, steps))
    model.train(seed=0)
    before = held_out_loss()
    for step in range(steps):
        x, y = mask_tokens(batch(0, split, rng), rng, V)
        loss, grads = model.loss_and_grads(x, y)
        optim.check_finite(loss, grads, step)
        optim.clip_grad_norm(grads, 1.0)
        opt.step(grads)
        sched.step()
    model.eval()
    after = held_out_loss()
    print(f"byte-level MLM on pydoc topics: held-out loss {before:.3f} -> {after:.3f} in {steps} steps "
          f"(uniform over bytes: {np.log(256):.3f})")
    assert after < 0.75 * before


# ------------------------------------------------------------------------------------------ train / eval


def _model():
    cfg = BortConfig(vocab_size=40, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                     intermediate_size=12, max_position_embeddings=16, hidden_dropout_prob=0.2,
                     attention_probs_dropout_prob=0.2)
    return BortForMaskedLM(cfg, dtype=np.float64, seed=1)


IDS = np.array([[0, 5, 9, 12, 2, 1], [0, 7, 7, 30, 22, 2]])
MASK = (IDS != 1).astype(np.int64)
LABELS = np.where(np.arange(6)[None] % 2 == 1, IDS, -100)


def test_eval_is_deterministic():
    m = _model().eval()
    a, b = m(IDS, MASK), m(IDS, MASK)
    np.testing.assert_array_equal(a, b)
    la, ga = m.loss_and_grads(IDS, LABELS, MASK)
    lb, gb = m.loss_and_grads(IDS, LABELS, MASK)
    assert la == lb and all(np.array_equal(ga[k], gb[k]) for k in ga)


def test_train_with_a_seed_is_reproducible():
    m = _model()
    m.train(seed=42)
    run1 = [m.loss_and_grads(IDS, LABELS, MASK) for _ in range(2)]
    m.train(seed=42)
    run2 = [m.loss_and_grads(IDS, LABELS, MASK) for _ in range(2)]
    for (l1, g1), (l2, g2) in zip(run1, run2):
        assert l1 == l2 and all(np.array_equal(g1[k], g2[k]) for k in g1)
    assert run1[0][0] != run1[1][0]                  # the generator moves on: a new mask each call


def test_dropout_changes_outputs_in_train_mode_only():
    m = _model()
    ref = m.eval()(IDS, MASK)
    m.train(seed=0)
    t1, t2 = m(IDS, MASK), m(IDS, MASK)
    assert not np.allclose(t1, ref) and not np.allclose(t1, t2)
    np.testing.assert_array_equal(m.eval()(IDS, MASK), ref)     # back to eval: exactly as before
