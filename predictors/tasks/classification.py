"""Sequence classification: logits [n, C] -> label, score, probabilities."""

from __future__ import annotations

from typing import Any, Iterable, Sequence

import numpy as np

from ..model import TaskTraits
from .base import (
    DriftSignal, GateCheck, GateRun, Observation, OutputSpec, TaskHead, TaskMetric, TokenBatch, percent, softmax,
)

SCORE_BUCKETS = (0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99, 1.0)
PREDICTED_LABELS = "predictors_predicted_labels"
TOP_SCORE = "predictors_top_score"


class ClassificationHead(TaskHead):
    hf_auto_class = "AutoModelForSequenceClassification"
    backend_output = "logits"
    traits = TaskTraits(architectures=("ForSequenceClassification",), text_pipelines=True)
    metrics = (
        TaskMetric(PREDICTED_LABELS, "counter", "Texts by predicted label (classification).", ("label",)),
        TaskMetric(TOP_SCORE, "histogram", "Probability of the predicted label (classification).", buckets=SCORE_BUCKETS),
    )
    dashboard_panels = {
        "Predicted label distribution": (
            "sum by (model, label) (rate(predictors_predicted_labels_total{{{sel}}}[{rate}]))"
            " / ignoring (label) group_left sum by (model) (rate(predictors_predicted_labels_total{{{sel}}}[{rate}]))",
        ),
        "Top score (median)": (
            "histogram_quantile(0.5, sum by (model, le) (rate(predictors_top_score_bucket{{{sel}}}[{rate}])))",
        ),
    }

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

    def observe(self, outputs: dict[str, np.ndarray]) -> Iterable[Observation]:
        for label, count in zip(*np.unique(np.asarray(outputs["label"], dtype=str), return_counts=True)):
            yield PREDICTED_LABELS, (str(label),), int(count)
        for score in np.asarray(outputs["score"], dtype=np.float64):
            yield TOP_SCORE, (), float(score)

    def metric_label_values(self) -> dict[str, list[tuple[str, ...]]]:
        return {PREDICTED_LABELS: [(label,) for label in self.config.labels]}

    def drift_values(self, outputs: dict[str, Any], centroid: np.ndarray | None = None) -> dict[str, list]:
        """`label` (the predicted label, categorical) and `score` (the top probability)."""
        return {"label": [str(v) for v in outputs["label"]], "score": [float(v) for v in outputs["score"]]}

    def drift_signals(self, values: dict[str, list]) -> list[DriftSignal]:
        return [DriftSignal("label", categories=tuple(self.config.labels)), DriftSignal("score")]

    @staticmethod
    def format_text(outputs: dict[str, dict[str, Any]], index: int) -> list[str]:
        if "label" not in outputs:
            return []
        score = outputs["score"]["data"][index] if "score" in outputs else None
        return [f"  label: {outputs['label']['data'][index]}" + (f"  score: {score:.4f}" if score is not None else "")]

    @staticmethod
    def gate_figures(
        reference: GateRun, candidate: GateRun, labels: Sequence[str | None], texts: Sequence[str]
    ) -> dict[str, Any]:
        """Top-1 agreement with the reference, the largest probability change (over all texts, and
        the 99.5th percentile of each text's largest), and accuracy on labelled texts."""
        n = len(reference.raw)
        ref_labels, cand_labels = reference.outputs["label"], candidate.outputs["label"]
        changed = int(sum(a != b for a, b in zip(ref_labels, cand_labels)))
        per_text = np.abs(reference.outputs["probabilities"] - candidate.outputs["probabilities"]).max(axis=1) if n else None
        figures: dict[str, Any] = {
            "top1_agreement": (n - changed) / n if n else 1.0,
            "changed": changed,
            "max_probability_diff": float(per_text.max()) if n else 0.0,
            "probability_diff_p995": float(np.percentile(per_text, 99.5)) if n else 0.0,
        }
        known = [i for i, label in enumerate(labels) if label is not None]
        if known:
            ref_acc = sum(ref_labels[i] == labels[i] for i in known) / len(known)
            cand_acc = sum(cand_labels[i] == labels[i] for i in known) / len(known)
            figures.update(labelled=len(known), reference_accuracy=ref_acc, accuracy=cand_acc,
                           accuracy_drop=ref_acc - cand_acc)
        return figures

    @staticmethod
    def gate_screen_order(reference: GateRun) -> np.ndarray | None:
        """Least certain first (smallest gap between the reference's top two probabilities): a
        quantized graph's changed labels are almost all among them."""
        probabilities = np.asarray(reference.outputs["probabilities"], dtype=np.float64)
        if probabilities.ndim != 2 or probabilities.shape[1] < 2:
            return None
        top_two = np.sort(probabilities, axis=1)[:, -2:]
        return np.argsort(top_two[:, 1] - top_two[:, 0], kind="stable")

    @staticmethod
    def gate_checks(precision: str, figures: dict[str, Any], thresholds: Any) -> list[GateCheck]:
        reference = figures.get("reference", "torch")
        where = (f" among the {figures['screened']} texts {reference} was least sure of; the rest were not run"
                 if "screened" in figures else "")
        checks = [GateCheck(f"{precision} top-1 agreement", figures["top1_agreement"],
                            thresholds.min_agreement(precision), ">=", percent,
                            f" ({figures['changed']} of {figures['texts']} texts changed label{where})")]
        if precision == "converted":  # a reimplemented featurization: probabilities within a tolerance
            checks.append(GateCheck(
                "converted probability difference (99.5th percentile of texts)", figures["probability_diff_p995"],
                thresholds.converted_probability_tolerance, "<=", lambda v: f"{v:.1e}",
                f" (largest {figures['max_probability_diff']:.1e})",
            ))
        if "accuracy_drop" in figures:
            checks.append(GateCheck(
                f"{precision} accuracy drop", figures["accuracy_drop"], thresholds.max_accuracy_drop, "<=",
                lambda v: f"{100 * v:.2f} pt",
                f" (accuracy {percent(figures['accuracy'])} vs {reference} {percent(figures['reference_accuracy'])})",
            ))
        return checks

    @staticmethod
    def gate_summary(figures: dict[str, Any]) -> list[str]:
        reference = figures.get("reference", "torch")
        screened = f" among the {figures['screened']} least certain" if "screened" in figures else ""
        at_most = "at most " if screened else ""
        parts = [f"top-1 agreement {at_most}{percent(figures['top1_agreement'])} "
                 f"({figures['changed']} of {figures['texts']} changed{screened})"]
        if "reference" in figures:
            parts.append(f"largest probability difference {figures['max_probability_diff']:.1e}")
        if "accuracy" in figures:
            parts.append(f"accuracy {percent(figures['accuracy'])} vs {reference} {percent(figures['reference_accuracy'])}")
        return parts
