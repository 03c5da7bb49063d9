"""Write tests/fixtures/forward_*.npz: what transformers computes for small Bort-shaped models.

Needs the `reference` extra (torch, transformers). Run from the repository root:

    python tests/reference/make_fixtures.py

It writes every PyTorch-made fixture: the forward ones below, then (through
make_training_fixtures.py, kept beside it) the ten-step optimizer trajectories. The GluonNLP fixture
needs MXNet in a separate environment: tests/reference/make_gluon_fixture.py says how.

For each model it stores the weights (float64), padded inputs, and for float32 and float64 every
intermediate (embedding output; per layer the attention probabilities, attention output, FFN
activation, layer output) and the MLM logits, with a format version and the torch/transformers
versions. The numpy-only tests in tests/test_fixtures.py read these files.

transformers initialises LayerNorm to (1, 0), biases to 0 and the pad row to 0: a fixture made from
that could not catch a forgotten bias or LayerNorm affine, so all of them are perturbed here.
"""

from __future__ import annotations

import json
import os
import sys

import numpy as np
import torch
import transformers
from transformers import BertConfig, BertForMaskedLM

FORMAT_VERSION = 1
HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(os.path.dirname(HERE), "fixtures")

# Two Bort-shaped models: one like Bort scaled down, one with a single head and odd sizes.
MODELS = {
    "small": {"vocab_size": 300, "hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
                  "intermediate_size": 48, "max_position_embeddings": 64},
    "odd": {"vocab_size": 211, "hidden_size": 37, "num_hidden_layers": 3, "num_attention_heads": 1,
                "intermediate_size": 29, "max_position_embeddings": 32},
}
COMMON = {"type_vocab_size": 1, "layer_norm_eps": 1e-5, "pad_token_id": 1, "hidden_act": "gelu",
              "hidden_dropout_prob": 0.1, "attention_probs_dropout_prob": 0.1}


def perturb(model: torch.nn.Module, gen: torch.Generator) -> None:
    """Move every LayerNorm weight off 1, every bias off 0, and the pad row off 0."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "LayerNorm" in name or name.endswith("bias"):
                p.add_(0.2 * torch.randn(p.shape, generator=gen, dtype=p.dtype))
        emb = model.bert.embeddings.word_embeddings.weight
        emb[model.config.pad_token_id] = 0.05 * torch.randn(emb.shape[1], generator=gen, dtype=emb.dtype)


def inputs_for(cfg: dict, rng: np.random.Generator):
    """A padded batch: 3 rows of different lengths (pad id 1 after each row's end)."""
    B, T = 3, min(12, cfg["max_position_embeddings"])
    ids = rng.integers(3, cfg["vocab_size"], size=(B, T))
    ids[:, 0] = 0                                              # <s>
    lengths = [T, 7, 3]
    mask = np.zeros((B, T), dtype=np.int64)
    for b, n in enumerate(lengths):
        mask[b, :n] = 1
        ids[b, n - 1] = 2                                      # </s>
        ids[b, n:] = COMMON["pad_token_id"]
    ids[0, 4] = ids[0, 5] = ids[0, 6]                          # repeated ids
    return ids.astype(np.int64), mask


def run(model: BertForMaskedLM, ids: np.ndarray, mask: np.ndarray) -> dict[str, np.ndarray]:
    """Every intermediate, named as minibort's BortModel.intermediates names them, and the logits."""
    captured = {}
    hooks = []
    for i, layer in enumerate(model.bert.encoder.layer):
        hooks.append(layer.attention.register_forward_hook(
            lambda m, a, out, i=i: captured.__setitem__(f"layer.{i}.attention_output", out[0])))
        hooks.append(layer.intermediate.register_forward_hook(
            lambda m, a, out, i=i: captured.__setitem__(f"layer.{i}.ffn_activation", out)))
    with torch.no_grad():
        out = model(torch.tensor(ids), attention_mask=torch.tensor(mask),
                    output_hidden_states=True, output_attentions=True)
    for h in hooks:
        h.remove()
    result = {"embedding_output": out.hidden_states[0]}
    for i in range(model.config.num_hidden_layers):
        result[f"layer.{i}.attention_probs"] = out.attentions[i]
        result[f"layer.{i}.attention_output"] = captured[f"layer.{i}.attention_output"]
        result[f"layer.{i}.ffn_activation"] = captured[f"layer.{i}.ffn_activation"]
        result[f"layer.{i}.output"] = out.hidden_states[i + 1]
    result["logits"] = out.logits
    return {k: v.detach().numpy() for k, v in result.items()}


def make(name: str, cfg: dict, seed: int) -> str:
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    config = BertConfig(**cfg, **COMMON, attn_implementation="eager")
    model = BertForMaskedLM(config).double().eval()
    perturb(model, gen)
    ids, mask = inputs_for(cfg, np.random.default_rng(seed))
    arrays = {"input_ids": ids, "attention_mask": mask}
    # The weights as transformers' state dict names them; the tied decoder aliases are left out,
    # as transformers' save_pretrained leaves them out.
    for k, v in model.state_dict().items():
        if k.startswith("cls.predictions.decoder.") or k.endswith("position_ids"):
            continue
        arrays[f"weights/{k}"] = v.numpy()
    for dtype_name, cast in (("float64", lambda m: m.double()), ("float32", lambda m: m.float())):
        for k, v in run(cast(model), ids, mask).items():
            arrays[f"{dtype_name}/{k}"] = v
    meta = {"format_version": FORMAT_VERSION, "torch": torch.__version__,
            "transformers": transformers.__version__, "config": {**cfg, **COMMON},
            "script": "tests/reference/make_fixtures.py"}
    arrays["meta"] = np.array(json.dumps(meta))
    path = os.path.join(OUT, f"forward_{name}.npz")
    tmp = path + ".tmp.npz"
    np.savez_compressed(tmp, **arrays)
    os.replace(tmp, path)
    return path


def main() -> None:
    os.makedirs(OUT, exist_ok=True)
    for seed, (name, cfg) in enumerate(MODELS.items()):
        path = make(name, cfg, seed)
        print(f"wrote {path} ({os.path.getsize(path) / 1024:.0f} KiB)", file=sys.stderr)
    sys.path.insert(0, HERE)
    import make_training_fixtures
    make_training_fixtures.main()


if __name__ == "__main__":
    main()
