"""The task-head contract: backend arrays in, typed per-text outputs out."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from ..model import ModelConfig, TaskTraits


@dataclass(frozen=True)
class OutputSpec:
    """One V2 output tensor: its name, datatype and the shape of one text's value (no batch dim)."""

    name: str
    datatype: str
    item_shape: tuple[int, ...] = ()
    # BYTES values that are JSON documents: V1 responses carry them parsed, V2 as JSON strings.
    json: bool = False

    def metadata(self) -> dict[str, Any]:
        return {"name": self.name, "datatype": self.datatype, "shape": [-1, *self.item_shape]}


@dataclass
class TokenBatch:
    """A tokenized chunk: the arrays a backend consumes plus what a head needs to map back to text."""

    texts: list[str]
    arrays: dict[str, np.ndarray]  # input_ids, attention_mask, token_type_ids (int64, [n, seq])
    offsets: np.ndarray | None  # [n, seq, 2] character offsets, for heads that need them
    special_tokens: np.ndarray | None  # [n, seq] 1 where the token is [CLS]/[SEP]/[PAD]
    truncated: list[bool]


class TaskHead(ABC):
    """Turns one backend output array for a chunk into per-text outputs, one entry per OutputSpec."""

    # The HuggingFace auto class and the output tensor of it that this head consumes; the ONNX
    # export writes the same tensor under the same name.
    hf_auto_class: ClassVar[str]
    backend_output: ClassVar[str]
    needs_offsets: ClassVar[bool] = False
    # The folder contract's view of the task: which config.json architectures mean it, labels needed.
    traits: ClassVar[TaskTraits]

    def __init__(self, config: ModelConfig) -> None:
        self.config = config

    @abstractmethod
    def outputs(self) -> list[OutputSpec]:
        """The outputs this head produces, in response order."""

    @abstractmethod
    def decode(self, array: np.ndarray, batch: TokenBatch) -> dict[str, np.ndarray]:
        """Per-text outputs for the chunk: each value's first dimension is len(batch.texts)."""

    def describe(self) -> dict[str, Any]:
        """Extra model metadata a client can discover (labels, dimensions)."""
        return {}

    @staticmethod
    @abstractmethod
    def format_text(outputs: dict[str, dict[str, Any]], index: int) -> list[str]:
        """Lines the CLI prints for text `index` of a V2 JSON response (`outputs` by name)."""


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=-1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=-1, keepdims=True)
