"""minibort: Amazon's Bort from scratch in NumPy, forward and backward, for people who learn by reading code."""

from .config import BortConfig, ConfigError
from .model import BortForMaskedLM, BortForSequenceClassification, BortModel
from .tokenizer import Tokenizer, train_bpe
from .checkpoint import CheckpointError

__all__ = [
    "BortConfig", "ConfigError", "BortModel", "BortForMaskedLM", "BortForSequenceClassification",
    "Tokenizer", "train_bpe", "CheckpointError",
]
__version__ = "0.1.0"
