"""minibort: Amazon's Bort from scratch in NumPy, forward and backward, for people who learn by reading code.

The names below are imported on first use (PEP 562's module `__getattr__`, as transformers does
for its own): `import minibort` stays light, and `python -m minibort.tokenizer` (or any other
module run as a script) does not find itself imported already by this package.
"""

import importlib

_EXPORTS = {
    "BortConfig": ".config",
    "BortForMaskedLM": ".model",
    "BortForSequenceClassification": ".model",
    "BortModel": ".model",
    "CheckpointError": ".formats.common",
    "ConfigError": ".config",
    "Tokenizer": ".tokenizer",
    "train_bpe": ".bpe_train",
}
__all__ = ["BortConfig", "BortForMaskedLM", "BortForSequenceClassification", "BortModel", "CheckpointError",
           "ConfigError", "Tokenizer", "train_bpe"]         # the keys of _EXPORTS
__version__ = "0.1.0"


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'minibort' has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name], __name__), name)
    globals()[name] = value                     # found once; later lookups do not come here
    return value


def __dir__() -> list[str]:
    return sorted(list(globals()) + __all__)
