"""Write tests/fixtures/training/trajectory.npz: ten optimizer steps of a small BertForMaskedLM in PyTorch.

Needs the `reference` extra (torch, transformers). Run from the repository root:

    python tests/reference/make_training_fixtures.py

llm.c's idea: the first N losses of a real training run, recorded by the reference framework, are
the strictest end-to-end test of a forward, a backward and an optimizer together. From one set of
perturbed float64 weights (LayerNorm, biases and the pad row moved off transformers' 1/0/0 init) and
ten fixed padded batches, it runs

    adamw:    torch.optim.AdamW (wd 0.01, none on LayerNorm and biases), linear warm-up 3 / decay 12,
              global-norm clipping at 1.0;
    bertadam: GluonNLP's BERTAdam re-implemented below in PyTorch (Adam without bias correction,
              p -= lr (m / (sqrt(v) + eps) + wd p), no decay on LayerNorm and biases), clipping at 1.0;

and stores per step the loss (before that step's update) and the gradient norm (before clipping),
plus the loss on batch 0 after the last step. Dropout is off (model.eval()): its random masks are
not reproducible across frameworks. tests/test_training.py replays both runs with minibort.
"""

from __future__ import annotations

import json
import os

import numpy as np
import torch
import transformers
from transformers import BertConfig, BertForMaskedLM, get_linear_schedule_with_warmup

FORMAT_VERSION = 1
HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(os.path.dirname(HERE), "fixtures", "training", "trajectory.npz")

CONFIG = {"vocab_size": 64, "hidden_size": 16, "num_hidden_layers": 2, "num_attention_heads": 4,
          "intermediate_size": 20, "max_position_embeddings": 16, "type_vocab_size": 1,
          "layer_norm_eps": 1e-5, "pad_token_id": 1, "hidden_act": "gelu",
          "hidden_dropout_prob": 0.1, "attention_probs_dropout_prob": 0.1}
STEPS, B, T = 10, 4, 12
RUNS = {
    "adamw": {"lr": 5e-3, "weight_decay": 0.01, "warmup": 3, "total": 12, "clip": 1.0},
    "bertadam": {"lr": 5e-3, "weight_decay": 0.01, "eps": 1e-6, "clip": 1.0},
}


def no_decay(name: str) -> bool:
    return "LayerNorm" in name or name.endswith("bias")


class BertAdamTorch(torch.optim.Optimizer):
    """GluonNLP 0.8.3's BERTAdam (MXNet adamw_update with eta = lr) in PyTorch:
    m = b1 m + (1 - b1) g; v = b2 v + (1 - b2) g^2; p -= lr (m / (sqrt(v) + eps) + wd p)."""

    def __init__(self, params, lr, betas=(0.9, 0.999), eps=1e-6, weight_decay=0.0):
        super().__init__(params, {"lr": lr, "betas": betas, "eps": eps, "weight_decay": weight_decay})

    @torch.no_grad()
    def step(self):
        for group in self.param_groups:
            b1, b2 = group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                st = self.state[p]
                if not st:
                    st["m"], st["v"] = torch.zeros_like(p), torch.zeros_like(p)
                m, v = st["m"], st["v"]
                m.mul_(b1).add_(p.grad, alpha=1 - b1)
                v.mul_(b2).addcmul_(p.grad, p.grad, value=1 - b2)
                update = m / (v.sqrt() + group["eps"])
                if group["weight_decay"]:
                    update = update + group["weight_decay"] * p
                p.sub_(group["lr"] * update)


def make_batches(rng: np.random.Generator):
    ids = rng.integers(3, CONFIG["vocab_size"], size=(STEPS, B, T))
    ids[:, :, 0] = 0
    lengths = rng.integers(3, T + 1, size=(STEPS, B))
    mask = (np.arange(T)[None, None] < lengths[..., None]).astype(np.int64)
    ids[mask == 0] = CONFIG["pad_token_id"]
    labels = np.where((rng.random((STEPS, B, T)) < 0.25) & (mask == 1),
                      rng.integers(3, CONFIG["vocab_size"], (STEPS, B, T)), -100)
    labels[:, :, 1] = ids[:, :, 1]                  # at least one label per row
    return ids, mask, labels


def build_model() -> BertForMaskedLM:
    torch.manual_seed(0)
    model = BertForMaskedLM(BertConfig(**CONFIG, attn_implementation="eager")).double()
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=gen, dtype=torch.float64)
            if "LayerNorm.weight" in name:
                p.copy_(1 + 0.2 * noise)
            elif name.endswith("bias"):
                p.copy_(0.2 * noise)
            else:
                p.copy_(0.2 * noise)              # larger than 0.02 so ten steps move the loss visibly
    return model.eval()


def run(kind: str, init: dict, batches) -> dict:
    model = build_model()
    model.load_state_dict(init, strict=False)
    named = dict(model.named_parameters())
    hp = RUNS[kind]
    groups = [{"params": [p for n, p in named.items() if not no_decay(n)], "weight_decay": hp["weight_decay"]},
              {"params": [p for n, p in named.items() if no_decay(n)], "weight_decay": 0.0}]
    if kind == "adamw":
        opt = torch.optim.AdamW(groups, lr=hp["lr"])
        sched = get_linear_schedule_with_warmup(opt, hp["warmup"], hp["total"])
    else:
        opt, sched = BertAdamTorch(groups, lr=hp["lr"], eps=hp["eps"]), None
    ids, mask, labels = (torch.tensor(a) for a in batches)
    losses, norms = [], []
    for s in range(STEPS):
        opt.zero_grad(set_to_none=True)
        out = model(input_ids=ids[s], attention_mask=mask[s], labels=labels[s])
        out.loss.backward()
        norms.append(float(torch.nn.utils.clip_grad_norm_(model.parameters(), hp["clip"])))
        losses.append(out.loss.item())
        opt.step()
        if sched is not None:
            sched.step()
    with torch.no_grad():
        final = model(input_ids=ids[0], attention_mask=mask[0], labels=labels[0]).loss.item()
    print(f"{kind}: losses {np.round(losses, 4).tolist()} final {final:.4f}")
    return {f"{kind}_losses": np.array(losses), f"{kind}_grad_norms": np.array(norms),
            f"{kind}_final_loss": np.array(final), f"{kind}_hparams": np.array(json.dumps(hp))}


def main() -> None:
    model = build_model()
    init = {n: p.detach().clone() for n, p in model.named_parameters()}
    batches = make_batches(np.random.default_rng(2))
    out = {
        "format_version": np.array(FORMAT_VERSION),
        "torch_version": np.array(torch.__version__),
        "transformers_version": np.array(transformers.__version__),
        "config": np.array(json.dumps(CONFIG)),
        "input_ids": batches[0], "attention_mask": batches[1], "labels": batches[2],
    }
    out.update({f"param/{n}": p.numpy() for n, p in init.items()})
    for kind in RUNS:
        out.update(run(kind, init, batches))
    os.makedirs(os.path.dirname(OUT), exist_ok=True)
    np.savez_compressed(OUT, **out)
    print(f"wrote {OUT} ({os.path.getsize(OUT) / 1024:.0f} KB)")


if __name__ == "__main__":
    main()
