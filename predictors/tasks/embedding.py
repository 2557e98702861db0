"""Sentence embedding: token states [n, seq, D] -> one pooled, L2-normalised vector per text."""

from __future__ import annotations

import json
from typing import Any, Sequence

import numpy as np

from ..model import ModelConfig, TaskTraits
from .base import DriftSignal, GateCheck, GateRun, OutputSpec, TaskHead, TokenBatch, percent


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
    per_token_output = True
    traits = TaskTraits(architectures=("Model",), needs_labels=False)  # a bare encoder, no head
    embedding_output = "embedding"

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
        return {"dimension": self.dimension, "pooling": self.config.pooling, "normalized": self.config.normalize,
                "matryoshka_dimensions": list(self.config.matryoshka_dimensions)}

    def shorten(self, vectors: np.ndarray, dimensions: int) -> np.ndarray:
        """The first `dimensions` of each vector (normalised again where the model normalises), for a
        model trained to keep its meaning at that size (Matryoshka representation learning). Any
        other model's leading dimensions are not an embedding of their own: cutting them silently
        would hand back vectors whose similarities mean nothing, so it is refused."""
        if dimensions == self.dimension:
            return vectors
        trained = sorted(d for d in self.config.matryoshka_dimensions if d < self.dimension)
        if not trained:
            raise ValueError(
                f"model '{self.config.name}' returns {self.dimension}-dimensional embeddings and cannot shorten them: "
                f"it was not trained with Matryoshka representation learning (its predictor.yaml declares no "
                f"matryoshka_dimensions); leave dimensions out or send {self.dimension}"
            )
        if dimensions not in trained:
            raise ValueError(
                f"model '{self.config.name}' was trained to shorten its {self.dimension}-dimensional embeddings to "
                f"{trained} dimensions (matryoshka_dimensions in its predictor.yaml), not {dimensions}"
            )
        cut = np.ascontiguousarray(vectors[:, :dimensions], dtype=np.float32)
        if self.config.normalize:
            cut /= np.clip(np.linalg.norm(cut, axis=-1, keepdims=True), 1e-12, None)
        return cut

    def drift_values(self, outputs: dict[str, Any], centroid: np.ndarray | None = None) -> dict[str, list]:
        """`cosine`: each text's vector against the reference centroid (none without one)."""
        if centroid is None:
            return {}
        vectors = np.asarray(outputs["embedding"], dtype=np.float32)
        norms = np.clip(np.linalg.norm(vectors, axis=-1) * np.linalg.norm(centroid), 1e-12, None)
        return {"cosine": [float(v) for v in (vectors @ centroid) / norms]}

    def drift_signals(self, values: dict[str, list]) -> list[DriftSignal]:
        return [DriftSignal("cosine")]

    def drift_centroid(self, outputs: dict[str, Any]) -> np.ndarray | None:
        """The mean of the reference texts' vectors, as a unit vector."""
        vectors = np.asarray(outputs["embedding"], dtype=np.float64)
        centroid = vectors.mean(axis=0)
        return centroid / max(float(np.linalg.norm(centroid)), 1e-12)

    @staticmethod
    def format_text(outputs: dict[str, dict[str, Any]], index: int) -> list[str]:
        if "embedding" not in outputs:
            return []
        dim = outputs["embedding"]["shape"][1]
        vector = outputs["embedding"]["data"][index * dim : (index + 1) * dim]
        return [f"  embedding: dim {dim} [{', '.join(f'{v:.4f}' for v in vector[:4])}, ...]"]

    @staticmethod
    def gate_figures(
        reference: GateRun, candidate: GateRun, labels: Sequence[str | None], texts: Sequence[str]
    ) -> dict[str, Any]:
        """Cosine between torch's and the candidate's vectors (mean, worst, 1st percentile, the worst
        text) and, as a retrieval view, whether each text's nearest neighbour in the sample stays."""
        a, b = reference.outputs["embedding"], candidate.outputs["embedding"]
        n = len(a)
        cosine = (a * b).sum(axis=1) / np.clip(np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1), 1e-12, None)
        figures: dict[str, Any] = {
            "cosine_mean": float(cosine.mean()) if n else 1.0,
            "cosine_min": float(cosine.min()) if n else 1.0,
            "cosine_p1": float(np.percentile(cosine, 1)) if n else 1.0,
        }
        if n:
            figures["worst_text"] = texts[int(cosine.argmin())][:80] if texts else None
        if n > 2:
            figures["neighbour_agreement"] = float((_nearest_neighbours(a) == _nearest_neighbours(b)).mean())
        return figures

    @staticmethod
    def gate_checks(precision: str, figures: dict[str, Any], thresholds: Any) -> list[GateCheck]:
        if precision == "fp32":  # fp32 is held to the backend output itself (max abs diff)
            return []
        return [GateCheck("int8 embedding cosine", figures["cosine_mean"], thresholds.int8_min_cosine, ">=",
                          lambda v: f"{v:.4f}", f" (worst text {figures['cosine_min']:.4f})")]

    @staticmethod
    def gate_summary(figures: dict[str, Any]) -> list[str]:
        parts = [f"cosine mean {figures['cosine_mean']:.4f} (worst text {figures['cosine_min']:.4f})"]
        if "neighbour_agreement" in figures:
            parts.append(f"nearest-neighbour agreement {percent(figures['neighbour_agreement'])}")
        return parts


def _nearest_neighbours(vectors: np.ndarray) -> np.ndarray:
    """Index of each vector's most cosine-similar other vector."""
    unit = vectors / np.clip(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12, None)
    similarity = unit @ unit.T
    np.fill_diagonal(similarity, -np.inf)
    return similarity.argmax(axis=1)
