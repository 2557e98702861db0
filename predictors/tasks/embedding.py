"""Sentence embedding: token states [n, seq, D] -> one pooled, L2-normalised vector per text."""

from __future__ import annotations

import json
from typing import Any

import numpy as np

from ..model import ModelConfig, TaskTraits
from .base import OutputSpec, TaskHead, TokenBatch


def pool(states: np.ndarray, mask: np.ndarray, mode: str) -> np.ndarray:
    """Pool token states over the real (unpadded) tokens, as sentence-transformers' Pooling does."""
    mask = mask[..., None].astype(np.float32)
    if mode == "cls":
        return states[:, 0]
    if mode == "max":
        return np.where(mask > 0, states, -np.inf).max(axis=1)
    return (states * mask).sum(axis=1) / np.clip(mask.sum(axis=1), 1e-9, None)


class EmbeddingHead(TaskHead):
    hf_auto_class = "AutoModel"
    backend_output = "last_hidden_state"
    traits = TaskTraits(architectures=("Model",), needs_labels=False)  # a bare encoder, no head

    def __init__(self, config: ModelConfig) -> None:
        super().__init__(config)
        hf_config = json.loads((config.path / "config.json").read_text())
        self.dimension = int(hf_config["hidden_size"])

    def outputs(self) -> list[OutputSpec]:
        return [OutputSpec("embedding", "FP32", (self.dimension,))]

    def decode(self, array: np.ndarray, batch: TokenBatch) -> dict[str, np.ndarray]:
        vectors = pool(array.astype(np.float32), batch.arrays["attention_mask"], self.config.pooling)
        if self.config.normalize:
            vectors = vectors / np.clip(np.linalg.norm(vectors, axis=-1, keepdims=True), 1e-12, None)
        return {"embedding": vectors.astype(np.float32)}

    def describe(self) -> dict[str, Any]:
        return {"dimension": self.dimension, "pooling": self.config.pooling, "normalized": self.config.normalize}

    @staticmethod
    def format_text(outputs: dict[str, dict[str, Any]], index: int) -> list[str]:
        if "embedding" not in outputs:
            return []
        dim = outputs["embedding"]["shape"][1]
        vector = outputs["embedding"]["data"][index * dim : (index + 1) * dim]
        return [f"  embedding: dim {dim} [{', '.join(f'{v:.4f}' for v in vector[:4])}, ...]"]
