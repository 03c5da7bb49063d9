"""minibort: Amazon's Bort from scratch in NumPy, forward and backward, for people who learn by reading code."""

from .bpe_train import train_bpe
from .config import BortConfig, ConfigError
from .formats.common import CheckpointError
from .model import BortForMaskedLM, BortForSequenceClassification, BortModel
from .tokenizer import Tokenizer

__all__ = [
    "BortConfig",
    "BortForMaskedLM",
    "BortForSequenceClassification",
    "BortModel",
    "CheckpointError",
    "ConfigError",
    "Tokenizer",
    "train_bpe",
]
__version__ = "0.1.0"
