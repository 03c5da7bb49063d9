"""Training machinery in NumPy: optimizers, learning-rate schedules, gradient clipping, accumulation
and a finite check.

Parameters and gradients are dicts of arrays keyed by transformers' names (see `model.py`), so an
optimizer is given `model.params` once and `.step(grads)` updates those very arrays in place.
Every update keeps each array's dtype: float32 parameters get float32 moments and float32
arithmetic (all constants are Python floats, which never widen a NumPy array).

    AdamW     torch.optim.AdamW: bias-corrected Adam, decoupled weight decay p *= 1 - lr wd first.
    BertAdam  GluonNLP 0.8.3's BERTAdam, Bort's optimizer: Adam without bias correction,
              p -= lr (m / (sqrt(v) + eps) + wd p), no decay on LayerNorm and biases, eps 1e-6.
    SGD       torch.optim.SGD with momentum (no dampening, no Nesterov) and L2 weight decay.

    Scheduler(opt, fn)   torch's LambdaLR: opt.lr = base_lr * fn(step), with fn one of
    linear_warmup_decay, cosine (transformers' get_*_schedule_with_warmup) or constant.

A training step:

    loss, grads = model.loss_and_grads(ids, labels, mask)
    check_finite(loss, grads, step)
    clip_grad_norm(grads, 1.0)
    opt.step(grads)
    sched.step()

`minibort.trainer.Trainer` runs exactly these lines for every recipe (pretraining, fine-tuning), with
the evaluation, checkpoints and resume around them.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from ._threads import run_rows

Params = dict[str, np.ndarray]
# One band of all the arrays an update reads: 1 MB (64k float32 elements of each of p, g, m, v), in
# this machine's L2 and L3. Measured at Bort's size, one thread: whole arrays 0.28 s, 1 MB bands 0.20 s,
# 256 KB 0.24 s, 64 KB 0.42 s (below 1 MB the dozen NumPy calls per band cost more than the cache saves).
OPTIMIZER_BAND_BYTES = 1 << 20


def no_decay_layernorm_and_bias(name: str) -> bool:
    """True for parameters that get no weight decay in BERT/Bort recipes: LayerNorm weights and biases
    and every bias (alexa/bort sets wd_mult 0 on `.*beta|.*gamma|.*bias`)."""
    return "LayerNorm" in name or name.endswith("bias")


# ------------------------------------------------------------------------------------------ base


class Optimizer:
    """What the optimizers share: the parameter dict, lr, step count, per-parameter state arrays.

    `state` maps a state name (e.g. "exp_avg") to a dict {param name: array of the param's shape and
    dtype}. `state_dict()` flattens it to {"step": int, "lr": float, "exp_avg/<param name>": array}
    so it can be written with np.savez or minibort.formats.safetensors and read back with `load_state_dict`.
    """

    state_names: tuple[str, ...] = ()

    def __init__(self, params: Params, lr: float, weight_decay: float = 0.0,
                 no_decay: Callable[[str], bool] | None = None):
        if lr < 0.0:
            raise ValueError(f"lr must be >= 0, got {lr}")
        if weight_decay < 0.0:
            raise ValueError(f"weight_decay must be >= 0, got {weight_decay}")
        self.params = params
        self.lr = float(lr)
        self.weight_decay = float(weight_decay)
        self.no_decay = no_decay
        self.step_count = 0
        self.state: dict[str, dict[str, np.ndarray]] = {s: {} for s in self.state_names}

    def _wd(self, name: str) -> float:
        """The weight decay of one parameter: 0 where `no_decay(name)` is true."""
        if self.no_decay is not None and self.no_decay(name):
            return 0.0
        return self.weight_decay

    def _state(self, kind: str, name: str, p: np.ndarray) -> np.ndarray:
        """The state array `kind` of parameter `name`, created as zeros of p's shape and dtype."""
        s = self.state[kind].get(name)
        if s is None:
            s = self.state[kind][name] = np.zeros_like(p)
        return s

    @staticmethod
    def _in_bands(formula: Callable[..., None], *arrays: np.ndarray) -> None:
        """formula(*arrays), run over bands of the flattened arrays instead of all of each at once.

        An update is a dozen elementwise passes. Over whole arrays each pass streams every array
        through memory (Bort's word embeddings: 206 MB apiece, times p, g, m, v and a temporary);
        over bands of OPTIMIZER_BAND_BYTES, a band's slices stay in cache through all the passes and
        memory is read and written about once. An element's arithmetic does not depend on its band,
        so the numbers are the same bit for bit; the bands also share out over minibort's threads
        (`run_rows`). Non-contiguous arrays (not ours; none in practice) get one call on the whole.
        """
        if not all(a.flags.c_contiguous for a in arrays):
            formula(*arrays)
            return
        flat = [a.reshape(-1) for a in arrays]                      # views, no copies
        run_rows(lambda r: formula(*(f[r] for f in flat)), flat[0].size, sum(a.itemsize for a in arrays),
                 chunk_bytes=OPTIMIZER_BAND_BYTES)

    def _check(self, grads: Params) -> None:
        missing = [k for k in grads if k not in self.params]
        if missing:
            raise KeyError(f"gradient for unknown parameter {missing[0]!r}")
        for k, g in grads.items():
            p = self.params[k]
            if g.shape != p.shape:
                raise ValueError(f"{k}: gradient shape {g.shape} != parameter shape {p.shape}")

    def step(self, grads: Params) -> None:
        """Update every parameter that has a gradient, in place. Parameters without one are left
        alone (their state, if any, too), as PyTorch skips parameters whose .grad is None."""
        self._check(grads)
        self.step_count += 1
        for name, g in grads.items():
            self._update(name, self.params[name], g)

    def _update(self, name: str, p: np.ndarray, g: np.ndarray) -> None:
        raise NotImplementedError

    # ------------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict:
        """{"step": int, "lr": float, "<state>/<param name>": array}; arrays are copies."""
        d: dict = {"step": self.step_count, "lr": self.lr}
        for kind, arrays in self.state.items():
            for name, a in arrays.items():
                d[f"{kind}/{name}"] = a.copy()
        return d

    def load_state_dict(self, d: dict) -> None:
        """Restore what `state_dict` returned (0-d arrays from np.load are accepted for step and lr).
        State arrays take the dtype of the parameter they belong to."""
        self.step_count = int(d["step"])
        self.lr = float(d["lr"])
        self.state = {s: {} for s in self.state_names}
        for key, a in d.items():
            if key in ("step", "lr"):
                continue
            kind, _, name = key.partition("/")
            if kind not in self.state:
                raise KeyError(f"{type(self).__name__} has no state {kind!r} (key {key!r})")
            if name not in self.params:
                raise KeyError(f"state {key!r} names no parameter of this model")
            p = self.params[name]
            a = np.asarray(a)
            if a.shape != p.shape:
                raise ValueError(f"state {key!r} has shape {a.shape}, the parameter {p.shape}")
            self.state[kind][name] = np.array(a, dtype=p.dtype)         # a fresh copy in p's dtype


# ------------------------------------------------------------------------------------------ AdamW


class AdamW(Optimizer):
    """torch.optim.AdamW (amsgrad=False), step for step:

        p *= 1 - lr * wd                                   (decoupled decay, before the Adam step)
        m += (1 - b1) (g - m)                              (torch's lerp; = b1 m + (1 - b1) g)
        v  = b2 v + (1 - b2) g^2
        p -= lr / (1 - b1^t) * m / (sqrt(v) / sqrt(1 - b2^t) + eps)

    `no_decay(name)` true -> weight decay 0 for that parameter (torch does this with param groups).
    """

    state_names = ("exp_avg", "exp_avg_sq")

    def __init__(self, params: Params, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 1e-2,
                 no_decay: Callable[[str], bool] | None = None):
        super().__init__(params, lr, weight_decay, no_decay)
        self.betas = (float(betas[0]), float(betas[1]))
        self.eps = float(eps)

    def _update(self, name: str, p: np.ndarray, g: np.ndarray) -> None:
        b1, b2 = self.betas
        lr, t = self.lr, self.step_count
        m = self._state("exp_avg", name, p)
        v = self._state("exp_avg_sq", name, p)
        wd = self._wd(name)
        step_size = lr / (1.0 - b1 ** t)
        sqrt_bc2 = math.sqrt(1.0 - b2 ** t)

        def formula(p, g, m, v) -> None:                           # the docstring's four lines, in place
            if wd != 0.0:
                p *= 1.0 - lr * wd
            tmp = np.subtract(g, m, out=np.empty_like(p), casting="same_kind")   # g - m
            tmp *= 1.0 - b1
            m += tmp                                               # m = lerp(m, g, 1 - b1)
            v *= b2
            np.multiply(g, g, out=tmp, casting="same_kind")
            tmp *= 1.0 - b2
            v += tmp                                               # v = b2 v + (1 - b2) g^2
            np.sqrt(v, out=tmp)
            tmp /= sqrt_bc2
            tmp += self.eps                                        # denominator
            np.divide(m, tmp, out=tmp)
            tmp *= -step_size
            p += tmp
        self._in_bands(formula, p, g, m, v)


# ------------------------------------------------------------------------------------------ BertAdam


class BertAdam(Optimizer):
    """GluonNLP 0.8.3's `BERTAdam` (MXNet's `adamw_update` with eta = lr), Bort's optimizer:

        m = b1 m + (1 - b1) g
        v = b2 v + (1 - b2) g^2
        p -= lr * (m / (sqrt(v) + eps) + wd * p)          (no bias correction; decay scaled by lr)

    Defaults follow GluonNLP (eps 1e-6) and alexa/bort (no decay on LayerNorm gamma/beta and biases).
    Without bias correction the first steps are tiny (m starts at 0.1 g): the warm-up Bort used hides it.
    """

    state_names = ("mean", "var")

    def __init__(self, params: Params, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-6, weight_decay: float = 0.0,
                 no_decay: Callable[[str], bool] | None = no_decay_layernorm_and_bias):
        super().__init__(params, lr, weight_decay, no_decay)
        self.betas = (float(betas[0]), float(betas[1]))
        self.eps = float(eps)

    def _update(self, name: str, p: np.ndarray, g: np.ndarray) -> None:
        b1, b2 = self.betas
        m = self._state("mean", name, p)
        v = self._state("var", name, p)
        wd = self._wd(name)

        def formula(p, g, m, v) -> None:                           # the docstring's three lines, in place
            m *= b1
            tmp = np.multiply(g, 1.0 - b1, out=np.empty_like(p), casting="same_kind")
            m += tmp                                               # m = b1 m + (1 - b1) g
            v *= b2
            np.multiply(g, g, out=tmp, casting="same_kind")
            tmp *= 1.0 - b2
            v += tmp                                               # v = b2 v + (1 - b2) g^2
            np.sqrt(v, out=tmp)
            tmp += self.eps
            np.divide(m, tmp, out=tmp)                             # m / (sqrt(v) + eps)
            if wd != 0.0:
                tmp += wd * p                                      # + wd p (the old p)
            tmp *= -self.lr
            p += tmp
        self._in_bands(formula, p, g, m, v)


# ------------------------------------------------------------------------------------------ SGD


class SGD(Optimizer):
    """torch.optim.SGD (dampening 0, no Nesterov): g += wd p; buf = momentum buf + g (buf = g at the
    first step); p -= lr buf. Here weight decay is L2 (added to the gradient), as in torch."""

    state_names = ("momentum_buffer",)

    def __init__(self, params: Params, lr: float, momentum: float = 0.0, weight_decay: float = 0.0,
                 no_decay: Callable[[str], bool] | None = None):
        super().__init__(params, lr, weight_decay, no_decay)
        self.momentum = float(momentum)

    def _update(self, name: str, p: np.ndarray, g: np.ndarray) -> None:
        wd = self._wd(name)
        d = g.astype(p.dtype, copy=True)
        if wd != 0.0:
            d += wd * p
        if self.momentum != 0.0:
            buf = self.state["momentum_buffer"].get(name)
            if buf is None:
                buf = self.state["momentum_buffer"][name] = d.copy()   # torch: clone at the first step
            else:
                buf *= self.momentum
                buf += d
            d = buf.copy()
        d *= -self.lr
        p += d


# ------------------------------------------------------------------------------------------ schedules
# Each schedule is a function of the step (0, 1, 2, ...) returning the lr multiplier, like the
# lambdas torch's LambdaLR takes. Step 0 is the first optimizer step: with warm-up it has lr 0, as in
# transformers.


def linear_warmup_decay(num_warmup_steps: int, num_training_steps: int) -> Callable[[int], float]:
    """transformers' get_linear_schedule_with_warmup: 0 -> 1 over the warm-up, then linearly to 0."""
    def fn(step: int) -> float:
        if step < num_warmup_steps:
            return float(step) / float(max(1, num_warmup_steps))
        return max(0.0, float(num_training_steps - step) / float(max(1, num_training_steps - num_warmup_steps)))
    return fn


def cosine(num_warmup_steps: int, num_training_steps: int, num_cycles: float = 0.5) -> Callable[[int], float]:
    """transformers' get_cosine_schedule_with_warmup: linear warm-up, then half a cosine down to 0."""
    def fn(step: int) -> float:
        if step < num_warmup_steps:
            return float(step) / float(max(1, num_warmup_steps))
        progress = float(step - num_warmup_steps) / float(max(1, num_training_steps - num_warmup_steps))
        return max(0.0, 0.5 * (1.0 + math.cos(math.pi * float(num_cycles) * 2.0 * progress)))
    return fn


def constant() -> Callable[[int], float]:
    """Multiplier 1 at every step."""
    return lambda step: 1.0


class Scheduler:
    """torch.optim.lr_scheduler.LambdaLR: sets optimizer.lr = base_lr * fn(step).

    Made before the first optimizer step (step 0 applied at once); call `.step()` after each
    `optimizer.step()`.
    """

    def __init__(self, optimizer: Optimizer, fn: Callable[[int], float]):
        self.optimizer = optimizer
        self.fn = fn
        self.base_lr = optimizer.lr
        self.last_step = 0
        optimizer.lr = self.base_lr * fn(0)

    def step(self) -> float:
        """Advance one step and return the new lr."""
        self.last_step += 1
        self.optimizer.lr = self.base_lr * self.fn(self.last_step)
        return self.optimizer.lr

    def get_last_lr(self) -> float:
        return self.optimizer.lr

    def state_dict(self) -> dict:
        return {"base_lr": self.base_lr, "last_step": self.last_step}

    def load_state_dict(self, d: dict) -> None:
        self.base_lr = float(d["base_lr"])
        self.last_step = int(d["last_step"])
        self.optimizer.lr = self.base_lr * self.fn(self.last_step)


# ------------------------------------------------------------------------------------------ gradients


def global_norm(grads: Params) -> float:
    """sqrt(sum over tensors of sum(g^2)), accumulated in float64 across tensors."""
    total = 0.0
    for g in grads.values():
        f = g.reshape(-1)
        total += float(np.dot(f, f))                               # one BLAS dot, no temporary
    return math.sqrt(total)


def clip_grad_norm(grads: Params, max_norm: float) -> float:
    """torch.nn.utils.clip_grad_norm_: scale every gradient in place by
    min(1, max_norm / (total_norm + 1e-6)) and return the total norm before clipping."""
    total = global_norm(grads)
    coef = max_norm / (total + 1e-6)
    if coef < 1.0:                      # torch multiplies by the clamped coefficient always; 1.0 is a no-op
        for g in grads.values():
            g *= coef
    return total


def accumulate(grads_sum: Params | None, grads: Params, weight: float = 1.0) -> Params:
    """grads_sum += weight * grads, in place; with grads_sum None, returns a fresh weight * grads."""
    if grads_sum is None:
        return {k: g * weight for k, g in grads.items()}
    for k, g in grads.items():
        if k in grads_sum:
            s = grads_sum[k]
            if weight == 1.0:
                s += g
            else:
                s += g * weight
        else:
            grads_sum[k] = g * weight
    return grads_sum


class GradientAccumulator:
    """Sums micro-batch gradients into the gradient of the whole batch.

    `loss_and_grads` returns the mean over the micro-batch's labelled tokens. The big batch's MLM
    loss is the mean over ALL its labelled tokens, so each micro-batch is weighted by its number of
    labelled tokens n_i:  grad = sum_i n_i grad_i / sum_i n_i  (and the same for the loss). This equals
    the big-batch gradient exactly, even when micro-batches hold different numbers of labels. For a
    loss that is a mean over sequences (classification), weight by the number of sequences instead.

        acc = GradientAccumulator()
        for ids, labels, mask in micro_batches:
            loss, grads = model.loss_and_grads(ids, labels, mask)
            acc.add(loss, grads, weight=int((labels != -100).sum()))
        loss, grads = acc.result()
    """

    def __init__(self):
        self.reset()

    def reset(self) -> None:
        self.grads: Params | None = None
        self.loss_sum = 0.0
        self.weight_sum = 0.0

    def add(self, loss: float, grads: Params, weight: float = 1.0) -> None:
        if weight <= 0:
            raise ValueError(f"micro-batch weight must be positive, got {weight}")
        self.grads = accumulate(self.grads, grads, weight)
        self.loss_sum += float(loss) * weight
        self.weight_sum += weight

    def result(self) -> tuple[float, Params]:
        """(weighted mean loss, weighted mean gradients); the arrays are the accumulator's own."""
        if self.grads is None:
            raise ValueError("no micro-batch was added")
        inv = 1.0 / self.weight_sum
        for g in self.grads.values():
            g *= inv
        loss, grads = self.loss_sum * inv, self.grads
        self.reset()
        return loss, grads


class NonFiniteError(FloatingPointError):
    """The loss or a gradient holds NaN or infinity; the message names the step and the tensor."""


def check_finite(loss: float, grads: Params, step: int) -> None:
    """Raise NonFiniteError if the loss or any gradient is NaN or infinite, naming step and tensor.

    Cheap on the good path: one sum per tensor (NaN and inf propagate into it); only a non-finite
    sum triggers the exact element check (a sum can also overflow on finite values).
    """
    if not math.isfinite(loss):
        raise NonFiniteError(f"step {step}: the loss is {loss}")
    for name, g in grads.items():
        if math.isfinite(float(g.sum())):
            continue
        bad = ~np.isfinite(g)
        n_bad = int(bad.sum())
        if n_bad:
            first = np.unravel_index(int(np.argmax(bad)), g.shape)
            raise NonFiniteError(
                f"step {step}: gradient of {name} has {n_bad} non-finite value(s) "
                f"({int(np.isnan(g).sum())} NaN), first at index {tuple(int(i) for i in first)}: {g[first]}")
