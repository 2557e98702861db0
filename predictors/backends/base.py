"""The backend contract: token-id arrays in, the task head's tensor out."""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path
from typing import ClassVar

import numpy as np

from ..model import ModelConfig
from ..tasks import TaskHead


class Backend(ABC):
    """One runtime holding one model's weights. `run` is called from worker threads, concurrently."""

    name: ClassVar[str]
    platform: ClassVar[str]  # V2 model metadata "platform"

    def __init__(self, config: ModelConfig, head: TaskHead, weights: Path, threads: int = 1) -> None:
        self.config = config
        self.head = head
        self.weights = weights
        self.threads = threads

    @property
    @abstractmethod
    def input_names(self) -> tuple[str, ...]:
        """Tokenizer outputs this model consumes (input_ids, attention_mask, token_type_ids...)."""

    @abstractmethod
    def run(self, arrays: dict[str, np.ndarray]) -> np.ndarray:
        """The head's tensor (logits or last_hidden_state) for one padded chunk."""
