"""Write tests/fixtures/training/finetune_trajectory.npz: ten fine-tuning steps of a small Bort-shaped
BertForSequenceClassification in PyTorch, with each of minibort.finetune's two recipes.

Needs the `reference` extra (torch, transformers). Run from the repository root:

    python tests/reference/make_finetune_fixtures.py

From one set of perturbed weights (LayerNorm, biases and the pad row moved off transformers' 1/0/0
init) and ten fixed padded batches of 3-class labels (plus regression targets), it runs, with
eager attention and dropout off (model.eval(): random masks are not reproducible across frameworks):

    transformers:  torch.optim.AdamW (eps 1e-8, wd 0.01, none on LayerNorm and biases),
                   transformers' get_linear_schedule_with_warmup (3 warm-up steps of 12), clip 1.0;
    bort:          GluonNLP's BERTAdam (as in make_training_fixtures.py; eps 1e-6, wd 1.0, none on
                   LayerNorm and biases), alexa/bort's schedule (ramp-up 8 steps = 32 examples / batch
                   4, warm-up int(8 * 0.45) = 3, linear decay, then the 1e-7 floor for steps 8 and 9),
                   clip 1.0, head weights U(-0.5, 0.5) (Bort's initialisation);
    regression:    num_labels 1 (MSE), the transformers recipe;

each in float64 and in float32, storing per step the loss (before that step's update) and the
gradient norm (before clipping), and the loss on batch 0 after the last step.
tests/test_finetune.py replays all of them with minibort.finetune.make_optimizer and minibort.trainer.
"""

from __future__ import annotations

import json
import os
import sys

import numpy as np
import torch
import transformers
from transformers import BertConfig, BertForSequenceClassification, get_linear_schedule_with_warmup

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from make_training_fixtures import BertAdamTorch, no_decay

FORMAT_VERSION = 1
OUT = os.path.join(os.path.dirname(HERE), "fixtures", "training", "finetune_trajectory.npz")

CONFIG = {"vocab_size": 64, "hidden_size": 16, "num_hidden_layers": 2, "num_attention_heads": 4,
          "intermediate_size": 12, "max_position_embeddings": 16, "type_vocab_size": 1,
          "layer_norm_eps": 1e-5, "pad_token_id": 1, "hidden_act": "gelu",
          "hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0, "num_labels": 3}
STEPS, B, T = 10, 4, 12
N_TRAIN = 32                                   # the bort schedule's ramp-up: int(32 / 4 * 1) = 8 steps
RUNS = {
    "transformers": {"recipe": "transformers", "num_labels": 3, "lr": 5e-3, "weight_decay": 0.01,
                     "warmup_ratio": 0.25, "total": 12, "clip": 1.0},
    "bort": {"recipe": "bort", "num_labels": 3, "lr": 5e-3, "weight_decay": 1.0, "warmup_ratio": 0.45,
             "n_train": N_TRAIN, "batch_size": B, "ramp_up_epochs": 1, "clip": 1.0},
    "regression": {"recipe": "transformers", "num_labels": 1, "lr": 5e-3, "weight_decay": 0.01,
                   "warmup_ratio": 0.25, "total": 12, "clip": 1.0},
}


def make_batches(rng: np.random.Generator):
    ids = rng.integers(3, CONFIG["vocab_size"], size=(STEPS, B, T))
    ids[:, :, 0] = 0                                                 # <s>
    lengths = rng.integers(3, T + 1, size=(STEPS, B))
    mask = (np.arange(T)[None, None] < lengths[..., None]).astype(np.int64)
    ids[mask == 0] = CONFIG["pad_token_id"]
    labels = rng.integers(0, 3, size=(STEPS, B))
    targets = rng.standard_normal((STEPS, B))
    return ids, mask, labels, targets


def build_model(num_labels: int, bort_head: bool) -> BertForSequenceClassification:
    torch.manual_seed(0)
    cfg = BertConfig(**{**CONFIG, "num_labels": num_labels}, attn_implementation="eager")
    model = BertForSequenceClassification(cfg).double()
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=gen, dtype=torch.float64)
            if "LayerNorm.weight" in name:
                p.copy_(1 + 0.2 * noise)
            elif bort_head and name in ("bert.pooler.dense.weight", "classifier.weight"):
                p.copy_(torch.rand(p.shape, generator=gen, dtype=torch.float64) - 0.5)   # U(-0.5, 0.5)
            else:
                p.copy_(0.2 * noise)                  # biases too: a forgotten bias cannot hide
    return model.eval()


def bort_lambda(lr: float, num_train_steps: int, num_warmup_steps: int):
    """finetune_bort.py's schedule as a LambdaLR multiplier (its lines, divided by lr)."""
    def fn(step_num: int) -> float:
        if step_num < num_warmup_steps:
            new_lr = lr * step_num / num_warmup_steps
        else:
            offset = (step_num - num_warmup_steps) / (num_train_steps - num_warmup_steps)
            new_lr = max(1e-7, lr - offset * lr)
        return new_lr / lr
    return fn


def run(kind: str, init: dict, batches, dtype) -> dict:
    hp = RUNS[kind]
    model = build_model(hp["num_labels"], kind == "bort").to(dtype)
    model.load_state_dict({k: v.to(dtype) for k, v in init.items()}, strict=False)
    named = dict(model.named_parameters())
    groups = [{"params": [p for n, p in named.items() if not no_decay(n)], "weight_decay": hp["weight_decay"]},
              {"params": [p for n, p in named.items() if no_decay(n)], "weight_decay": 0.0}]
    if hp["recipe"] == "transformers":
        opt = torch.optim.AdamW(groups, lr=hp["lr"], eps=1e-8)
        warmup = int(np.ceil(hp["warmup_ratio"] * hp["total"]))
        sched = get_linear_schedule_with_warmup(opt, warmup, hp["total"])
    else:
        opt = BertAdamTorch(groups, lr=hp["lr"], eps=1e-6)
        ramp = int(hp["n_train"] / hp["batch_size"] * hp["ramp_up_epochs"])
        sched = torch.optim.lr_scheduler.LambdaLR(opt, bort_lambda(hp["lr"], ramp, int(ramp * hp["warmup_ratio"])))
    ids, mask, labels, targets = batches
    ids, mask = torch.tensor(ids), torch.tensor(mask)
    y = torch.tensor(targets, dtype=dtype) if hp["num_labels"] == 1 else torch.tensor(labels)
    losses, norms, lrs = [], [], []
    for s in range(STEPS):
        opt.zero_grad(set_to_none=True)
        out = model(input_ids=ids[s], attention_mask=mask[s], labels=y[s])
        out.loss.backward()
        norms.append(float(torch.nn.utils.clip_grad_norm_(model.parameters(), hp["clip"])))
        losses.append(out.loss.item())
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    with torch.no_grad():
        final = model(input_ids=ids[0], attention_mask=mask[0], labels=y[0]).loss.item()
    tag = "f64" if dtype == torch.float64 else "f32"
    print(f"{kind} {tag}: losses {np.round(losses, 4).tolist()} final {final:.4f}; lrs {lrs}")
    return {f"{kind}_{tag}_losses": np.array(losses), f"{kind}_{tag}_grad_norms": np.array(norms),
            f"{kind}_{tag}_final_loss": np.array(final), f"{kind}_{tag}_lrs": np.array(lrs),
            f"{kind}_hparams": np.array(json.dumps(hp))}


def main() -> None:
    batches = make_batches(np.random.default_rng(2))
    out = {
        "format_version": np.array(FORMAT_VERSION),
        "torch_version": np.array(torch.__version__),
        "transformers_version": np.array(transformers.__version__),
        "config": np.array(json.dumps(CONFIG)),
        "input_ids": batches[0], "attention_mask": batches[1], "labels": batches[2], "targets": batches[3],
    }
    for kind, hp in RUNS.items():
        init = {n: p.detach().clone() for n, p in build_model(hp["num_labels"], kind == "bort").named_parameters()}
        out.update({f"{kind}_param/{n}": p.numpy() for n, p in init.items()})
        for dtype in (torch.float64, torch.float32):
            out.update(run(kind, init, batches, dtype))
    os.makedirs(os.path.dirname(OUT), exist_ok=True)
    np.savez_compressed(OUT, **out)
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
