"""Sequence classification: logits [n, C] -> label, score, probabilities."""

from __future__ import annotations

from typing import Any

import numpy as np

from ..model import TaskTraits
from .base import OutputSpec, TaskHead, TokenBatch, softmax


class ClassificationHead(TaskHead):
    hf_auto_class = "AutoModelForSequenceClassification"
    backend_output = "logits"
    traits = TaskTraits(architectures=("ForSequenceClassification",))

    def outputs(self) -> list[OutputSpec]:
        return [
            OutputSpec("label", "BYTES"),
            OutputSpec("score", "FP32"),
            OutputSpec("probabilities", "FP32", (len(self.config.labels),)),
        ]

    def decode(self, array: np.ndarray, batch: TokenBatch) -> dict[str, np.ndarray]:
        probabilities = softmax(array.astype(np.float32))
        best = probabilities.argmax(axis=-1)
        labels = np.array([self.config.labels[i] for i in best], dtype=object)
        return {
            "label": labels,
            "score": probabilities[np.arange(len(best)), best].astype(np.float32),
            "probabilities": probabilities.astype(np.float32),
        }

    def describe(self) -> dict[str, Any]:
        return {"labels": list(self.config.labels)}

    @staticmethod
    def format_text(outputs: dict[str, dict[str, Any]], index: int) -> list[str]:
        if "label" not in outputs:
            return []
        score = outputs["score"]["data"][index] if "score" in outputs else None
        return [f"  label: {outputs['label']['data'][index]}" + (f"  score: {score:.4f}" if score is not None else "")]
