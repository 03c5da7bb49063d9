"""Hyper-parameter sets for Agora: a grid builder, two presets, and JSON files.

A hyper-parameter set θ is a dict from a name to a value, in a fixed name order, e.g.
`{"seed": 0, "lr": 1e-5, "weight_decay": 10, "warmup_ratio": 0.45, "batch_size": 8}`. The order
matters to Agora's pruning, which compares two sets as sequences of (name, value) pairs.

    grid(seed=[0, 1], lr=[1e-4, 1e-5])       # 4 sets, the last axis varying fastest
    load_grid("original")                    # alexa/bort's README grid: 480 sets
    load_grid("small")                       # 8 sets that bort-tiny runs through in minutes
    load_grid("my_grid.json")                # a list of sets, or {"axis": [values], ...}
"""

from __future__ import annotations

import itertools
import json
import os
from typing import Any

Theta = dict[str, Any]

# The names Agora's default fit understands (minibort.finetune.FinetuneConfig's fields). Others are
# allowed in a grid, but the default fit refuses them, naming them.
KNOWN_NAMES = ("seed", "lr", "weight_decay", "warmup_ratio", "batch_size", "epochs", "max_length",
               "patience", "recipe", "classifier_head")

# alexa/bort's README: "seeds {0..4} x lr {1e-4, 1e-5, 9e-6} x weight decay {0, 10, 100, 350} x
# warm-up {0.35, 0.40, 0.45, 0.50} x batch {8, 16}" = 5 * 3 * 4 * 4 * 2 = 480 sets.
ORIGINAL_AXES: dict[str, list] = {
    "seed": [0, 1, 2, 3, 4],
    "lr": [1e-4, 1e-5, 9e-6],
    "weight_decay": [0.0, 10.0, 100.0, 350.0],
    "warmup_ratio": [0.35, 0.40, 0.45, 0.50],
    "batch_size": [8, 16],
}

# minibort's own: 8 sets for bort-tiny on a few dozen examples. bort-tiny is small and trained with
# lr 2e-3, so it wants larger learning rates than Bort's grid; two seeds so that pruning by common
# subsequence has something to group.
SMALL_AXES: dict[str, list] = {
    "seed": [0, 1],
    "lr": [1e-3, 3e-4],
    "weight_decay": [0.0, 0.01],
    "warmup_ratio": [0.1],
    "batch_size": [8],
}

PRESETS = {"original": ORIGINAL_AXES, "small": SMALL_AXES}


class GridError(ValueError):
    """A grid that Agora cannot use; the message says why and how to fix it."""


def grid(**axes: list) -> list[Theta]:
    """The Cartesian product of the axes, in the order given, the last axis varying fastest."""
    for name, values in axes.items():
        if isinstance(values, (str, bytes)) or not hasattr(values, "__iter__"):
            raise GridError(f"axis {name!r} must be a list of values, got {values!r}")
        if len(list(values)) == 0:
            raise GridError(f"axis {name!r} has no values; give it at least one or leave it out")
    names = list(axes)
    return [dict(zip(names, combo)) for combo in itertools.product(*(list(axes[n]) for n in names))]


def check_grid(thetas: list[Theta]) -> list[Theta]:
    """Refuse an empty grid, a set that is not a dict of scalars, and repeated sets; return the list."""
    if not thetas:
        raise GridError("the grid is empty: Agora needs at least one hyper-parameter set "
                        "(use --grid small, --grid original, or a JSON file with at least one set)")
    seen = {}
    for i, theta in enumerate(thetas):
        if not isinstance(theta, dict) or not theta:
            raise GridError(f"set {i} of the grid is {theta!r}; each set must be a non-empty mapping "
                            "from a hyper-parameter name to a value")
        for name, value in theta.items():
            if not isinstance(name, str) or not isinstance(value, (int, float, str, bool)):
                raise GridError(f"set {i} of the grid has {name!r}: {value!r}; names must be strings "
                                "and values numbers, strings or booleans")
        key = tuple(theta.items())
        if key in seen:
            raise GridError(f"sets {seen[key]} and {i} of the grid are the same ({theta}); remove one")
        seen[key] = i
    return thetas


def load_grid(spec: str | os.PathLike | list | dict) -> list[Theta]:
    """A preset name ("original", "small"), a JSON file, a list of sets, or a dict of axes -> sets.

    A JSON file holds either a list of sets (`[{"lr": 1e-4, "seed": 0}, ...]`) or axes
    (`{"lr": [1e-4, 1e-5], "seed": [0, 1]}`).
    """
    if isinstance(spec, dict):
        return check_grid(grid(**spec))
    if isinstance(spec, list):
        return check_grid([dict(t) for t in spec])
    spec = os.fspath(spec)
    if spec in PRESETS:
        return check_grid(grid(**PRESETS[spec]))
    if not os.path.isfile(spec):
        raise GridError(f"unknown grid {spec!r}: not a preset ({', '.join(PRESETS)}) and not a file")
    try:
        with open(spec, encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise GridError(f"cannot read the grid file {spec}: {e}; it must be JSON, a list of sets or "
                        "a mapping of axes to lists") from None
    if not isinstance(data, (list, dict)):
        raise GridError(f"the grid file {spec} holds a {type(data).__name__}; it must hold a list of sets "
                        "or a mapping of axes to lists")
    try:
        return load_grid(data)
    except GridError as e:
        raise GridError(f"{spec}: {e}") from None
