"""Task heads, registered by name. A new task is one module and one entry here."""

from .base import OutputSpec, TaskHead, TokenBatch
from .classification import ClassificationHead
from .embedding import EmbeddingHead
from .token_classification import TokenClassificationHead

TASKS: dict[str, type[TaskHead]] = {
    "classification": ClassificationHead,
    "embedding": EmbeddingHead,
    "token_classification": TokenClassificationHead,
}

__all__ = ["TASKS", "OutputSpec", "TaskHead", "TokenBatch"]
