"""What many test files write by hand: a comparison that prints what it compared, and weights moved off
transformers' initialisation so that a forgotten LayerNorm or bias cannot hide.

    from helpers import close, perturb_layernorm_and_biases
"""

from __future__ import annotations

import numpy as np


def max_error(got, want) -> float:
    """max |got - want| over all entries (0 for empty arrays); shapes must match."""
    got, want = np.asarray(got), np.asarray(want)
    assert got.shape == want.shape, f"shape {got.shape} != {want.shape}"
    return float(np.abs(got.astype(np.float64) - want.astype(np.float64)).max()) if got.size else 0.0


def close(name: str, got, want, atol: float, rtol: float = 0.0) -> float:
    """Assert |got - want| <= atol + rtol |want| everywhere; print the name, the max error and the
    tolerance whatever the outcome (run pytest with -s to see them). Returns the max error."""
    got, want = np.asarray(got, dtype=np.float64), np.asarray(want, dtype=np.float64)
    err = max_error(got, want)
    tol = atol + rtol * np.abs(want)                                  # per entry
    ok = bool(np.all(np.abs(got - want) <= tol))
    shown = f"{atol:.0e}" + (f" + {rtol:.0e}|ref|" if rtol else "")
    print(f"{name:58s} max abs err {err:.2e}  tol {shown}  {'ok' if ok else 'FAIL'}")
    assert ok, f"{name}: max error {err:.3e} exceeds {shown}"
    return err


def perturb_layernorm_and_biases(params: dict[str, np.ndarray], rng: np.random.Generator,
                                 scale: float = 0.1, weights: float | None = None) -> dict[str, np.ndarray]:
    """Move LayerNorm weights off 1 and every bias (LayerNorm's too) off 0 by N(0, scale), in place.

    transformers initialises them to exactly 1 and 0, where a dropped bias or LayerNorm weight gives
    the same numbers as a correct model. With `weights`, every other array is redrawn N(0, weights)
    (the padding row of the word embeddings with it, so its gradient shows). Returns `params`.
    """
    for name, p in params.items():
        if "LayerNorm.weight" in name or name.endswith("bias"):
            p += (scale * rng.standard_normal(p.shape)).astype(p.dtype)
        elif weights is not None:
            p[...] = weights * rng.standard_normal(p.shape)
    return params
