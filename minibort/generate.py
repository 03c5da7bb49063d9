"""Fill masks and generate text with a Bort masked-LM, on CPU, from the command line.

    python -m minibort.generate "The <mask> statement leaves a loop early."
    python -m minibort.generate "Return the number of" --length 12 --seed 0
    echo "A <mask> is a sequence of characters." | python -m minibort.generate --json

Two modes:

- fill: for each `<mask>` in the prompt, the top-k tokens with their probabilities, a softmax over
  the model's own logits at that position (special tokens are not listed). Several masks are
  filled one at a time, the most confident first, each later guess conditioned on the earlier fills.
- generate (`--length N`): N masks appended to the prompt, filled by mask-predict (Ghazvininejad et
  al. 2019): predict every mask, then over `--steps` rounds re-mask the least confident tokens and
  predict them again, N (steps - t) / steps of them in round t. Tokens are drawn from the top-k
  with `--temperature` (0: argmax) using a generator seeded with `--seed`: same seed, same text.

`--model` is the embedded `bort-tiny` (pretrained by `python -m minibort.pretrain`; see its
training.json), a local folder (config.json + model.safetensors / pytorch_model.bin, or the original
release's bort.params, whose own MLM head minibort restores), or a hub id such as `amazon/bort`
(downloaded once into the cache; its MLM head is untrained, so its guesses mean nothing).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import warnings

import numpy as np

from . import layers as L

DEFAULT_MODEL = "bort-tiny"


class GenerateError(Exception):
    """A problem the user can fix; printed as `error: ...` without a traceback."""

    def __init__(self, message: str, status: int = 1):
        super().__init__(message)
        self.status = status


def load_model(name: str, notes: list[str] | None = None):
    """-> (BortForMaskedLM, Tokenizer, description) for any name `from_pretrained` takes (see
    `minibort.checkpoint.resolve`). `notes` collects the loaders' one-line warnings for the user."""
    from .hub import HubError
    from .model import BortForMaskedLM
    from .tokenizer import Tokenizer
    notes = [] if notes is None else notes
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            model = BortForMaskedLM.from_pretrained(name)
            tok = Tokenizer.from_pretrained(name)
        except HubError as e:
            raise GenerateError(f"{e} Or work offline with the embedded model (the default, bort-tiny).") from None
        except (OSError, ValueError) as e:           # CheckpointError, TokenizerError, ConfigError
            raise GenerateError(str(e)) from None
    notes.extend(dict.fromkeys(str(w.message) for w in caught))
    return model, tok, os.path.abspath(name) if os.path.isdir(name) else name


# ------------------------------------------------------------------------------------ the two modes


def _special_ids(tok) -> np.ndarray:
    return np.array(sorted(tok.all_special_ids), dtype=np.int64)


def softmax64(logits: np.ndarray) -> np.ndarray:
    """Softmax over the last axis in float64 (layers.softmax on a float64 copy): (..., V) -> (..., V)."""
    return L.softmax(np.asarray(logits, dtype=np.float64), inplace=True)[0]


def fill_masks(model, tok, ids: list[int], top_k: int = 5) -> dict:
    """Fill every <mask> in `ids`, most confident first.

    Each round runs the model once, takes the softmax of its logits at every remaining mask (M, V),
    fills the mask whose best non-special token is most probable, and records that mask's top-k.
    Returns {"ids": filled ids, "masks": [{"position", "order", "candidates": [...]}] in text order}.
    """
    ids = list(ids)
    special = _special_ids(tok)
    remaining = [i for i, t in enumerate(ids) if t == tok.mask_token_id]
    results = {}
    order = 0
    while remaining:
        x = np.array(ids, dtype=np.int64)[None]                                        # (1, T)
        logits = model(x, positions=np.array([remaining], dtype=np.int64))[0]          # (M, V)
        probs = softmax64(logits)                                                      # (M, V)
        ranked = probs.copy()
        ranked[:, special[special < ranked.shape[1]]] = -1.0                           # never list specials
        best = int(ranked.max(axis=1).argmax())                                        # most confident mask
        row = probs[best]
        top = np.argsort(-ranked[best], kind="stable")[:min(top_k, ranked.shape[1] - len(special))]
        pos = remaining.pop(best)
        order += 1
        results[pos] = {"position": pos, "order": order, "candidates": [
            {"token": tok.decode([int(t)]), "token_id": int(t), "probability": float(row[t])} for t in top]}
        ids[pos] = int(top[0])
    return {"ids": ids, "masks": [results[p] for p in sorted(results)]}


def mask_predict(model, tok, ids: list[int], positions: list[int], steps: int = 10, temperature: float = 1.0,
                 top_k: int = 5, seed: int = 0) -> list[int]:
    """Mask-predict: fill `positions` (all <mask>) in `ids` over `steps` rounds.

    Round 0 predicts every position; round t re-masks the n_t = N (steps - t) / steps least confident
    and predicts them again. A token is drawn from the top_k at temperature T (Gumbel-max with a
    generator seeded by `seed`; T = 0 takes the argmax); its confidence is its softmax probability.
    """
    rng = np.random.default_rng(seed)
    x = np.array(ids, dtype=np.int64)                                                  # (T,)
    pos = np.array(positions, dtype=np.int64)                                          # (N,)
    N = len(pos)
    conf = np.zeros(N)
    special = _special_ids(tok)
    for t in range(max(1, steps)):
        n = N if t == 0 else (N * (steps - t)) // steps
        if n == 0:
            break
        redo = np.sort(np.argsort(conf, kind="stable")[:n])                            # least confident
        x[pos[redo]] = tok.mask_token_id
        logits = model(x[None], positions=pos[redo][None])[0].astype(np.float64)       # (n, V)
        logits[:, special[special < logits.shape[1]]] = -np.inf
        probs = softmax64(logits)                                                      # (n, V)
        noise = rng.gumbel(size=logits.shape)                                          # drawn every round
        if temperature > 0:
            score = logits / temperature + noise
        else:
            score = logits.copy()
        if top_k and top_k < logits.shape[1]:
            kth = np.sort(logits, axis=1)[:, -top_k][:, None]
            score[logits < kth] = -np.inf                                              # keep the top k
        choice = score.argmax(axis=1)                                                  # (n,)
        x[pos[redo]] = choice
        conf[redo] = probs[np.arange(len(redo)), choice]
    return x.tolist()


# ------------------------------------------------------------------------------------ command line


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="python -m minibort.generate",
        description="Fill <mask> tokens, or continue a prompt by mask-predict, with a Bort masked-LM.")
    ap.add_argument("prompt", nargs="?", help="text with <mask> tokens (read from standard input if omitted)")
    ap.add_argument("--model", default=DEFAULT_MODEL,
                    help="embedded model name, local folder, or hub id such as amazon/bort (default: %(default)s)")
    ap.add_argument("--length", type=int, default=None,
                    help="generate: append this many masks and fill them by mask-predict")
    ap.add_argument("--top-k", type=int, default=5,
                    help="candidates listed per mask; in generate mode, sample among the k best (default: 5)")
    ap.add_argument("--steps", type=int, default=10, help="mask-predict refinement rounds (default: 10)")
    ap.add_argument("--temperature", type=float, default=1.0,
                    help="sampling temperature for generate; 0 takes the argmax (default: 1.0)")
    ap.add_argument("--seed", type=int, default=0, help="seed of the sampling generator (default: 0)")
    ap.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    return ap


def run(args: argparse.Namespace) -> dict:
    prompt = args.prompt
    if prompt is None:
        if sys.stdin.isatty():
            print("reading the prompt from standard input (end with Ctrl-D)", file=sys.stderr)
        try:
            prompt = sys.stdin.buffer.read().decode("utf-8")
        except UnicodeDecodeError as e:
            raise GenerateError(f"standard input is not UTF-8 text (byte {e.start}: {e.reason}); "
                                "convert it first, e.g. with `iconv -t utf-8`", 2) from None
        prompt = prompt.rstrip("\n")
    if not prompt.strip():
        raise GenerateError("the prompt is empty; give text with <mask> tokens, or text and --length N", 2)
    if args.length is not None and args.length < 1:
        raise GenerateError(f"--length must be at least 1, got {args.length}", 2)
    if args.top_k < 1:
        raise GenerateError(f"--top-k must be at least 1, got {args.top_k}", 2)
    if args.steps < 1:
        raise GenerateError(f"--steps must be at least 1, got {args.steps}", 2)
    if args.temperature < 0:
        raise GenerateError(f"--temperature must be >= 0, got {args.temperature}", 2)

    notes: list[str] = []
    model, tok, described = load_model(args.model, notes)
    for note in notes:
        print(f"note: {note}", file=sys.stderr)
    ids = tok.encode(prompt)                                   # <s> ... </s>
    limit = model.config.max_position_embeddings
    n_new = args.length or 0
    if len(ids) + n_new > limit:
        extra = f" plus {n_new} to generate" if n_new else ""
        raise GenerateError(f"the prompt is {len(ids)} tokens (with <s> and </s>){extra}; {described} takes at "
                            f"most {limit}. Shorten the prompt" + (" or --length" if n_new else ""), 2)
    if max(ids) >= model.config.vocab_size:
        raise GenerateError(f"the tokenizer produced id {max(ids)}, outside the model's vocabulary "
                            f"({model.config.vocab_size}); do vocab.json and the weights belong together?")
    out = {"model": described, "prompt": prompt}
    if args.length is None:
        if tok.mask_token_id not in ids:
            raise GenerateError("the prompt has no <mask>; put <mask> where a word should go, or pass "
                                "--length N to continue the text", 2)
        r = fill_masks(model, tok, ids, args.top_k)
        out.update(mode="fill", masks=r["masks"], text=tok.decode(r["ids"], skip_special_tokens=True))
    else:
        body = ids[:-1]
        filled = body + [tok.mask_token_id] * args.length + ids[-1:]
        positions = [i for i, t in enumerate(filled) if t == tok.mask_token_id]
        new = mask_predict(model, tok, filled, positions, args.steps, args.temperature, args.top_k, args.seed)
        out.update(mode="generate", length=args.length, steps=args.steps, temperature=args.temperature,
                   top_k=args.top_k, seed=args.seed, token_ids=new,
                   continuation=tok.decode(new[len(body):-1]),
                   text=tok.decode(new, skip_special_tokens=True))
    return out


def render(out: dict) -> str:
    """The human-readable form of `run`'s result."""
    lines = []
    if out["mode"] == "fill":
        several = len(out["masks"]) > 1
        for i, m in enumerate(out["masks"], 1):
            head = f"<mask> {i}" + (f" (filled {_ordinal(m['order'])})" if several else "") + ":"
            lines.append(head)
            for c in m["candidates"]:
                lines.append(f"  {c['probability']:7.4f}  {c['token'].strip() or repr(c['token'])}")
        lines.append(out["text"])
    else:
        lines.append(out["text"])
    return "\n".join(lines)


def _ordinal(n: int) -> str:
    return f"{n}{'th' if 10 <= n % 100 <= 20 else {1: 'st', 2: 'nd', 3: 'rd'}.get(n % 10, 'th')}"


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        out = run(args)
    except GenerateError as e:
        print(f"error: {e}", file=sys.stderr)
        return e.status
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    if args.json:
        print(json.dumps(out, ensure_ascii=False))
    else:
        print(render(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
