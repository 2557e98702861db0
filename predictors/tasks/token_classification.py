"""Token classification (NER): token logits [n, seq, C] -> entity spans with character offsets."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Iterable, Sequence

import numpy as np

from ..model import TaskTraits
from .base import (
    DriftSignal, GateCheck, GateRun, Observation, OutputSpec, TaskHead, TaskMetric, TokenBatch, percent, softmax,
)

ENTITY_BUCKETS = (0, 1, 2, 3, 5, 8, 13, 21)
ENTITIES_PER_TEXT = "predictors_entities_per_text"
ENTITY_COUNT_EDGES = (1, 2, 3, 4, 6)  # drift bins 0, 1, 2, 3, 4-5, 6+
NO_ENTITY = "none"


@dataclass
class _Span:
    entity: str
    start: int
    end: int
    scores: list[float] = field(default_factory=list)


def entity_type(label: str) -> tuple[str | None, bool]:
    """("PHONE", True) for "B-PHONE"; (None, False) for "O". The flag says the tag opens a span."""
    if label == "O":
        return None, False
    if label[:2] in ("B-", "I-"):
        return label[2:], label[:2] == "B-"
    return label, False


def merge_tokens(
    text: str, tokens: list[tuple[str, float, int, int]]
) -> list[dict[str, Any]]:
    """Merge (label, score, start, end) token predictions into whole entity spans.

    A token joins the open span when it has the same entity type and either touches it (a subword
    or punctuation piece of the same word: `john` `.` `smith` `@` ... in an email, which this kind
    of model tags B- on every piece) or is an I- continuation separated only by whitespace.
    """
    spans: list[_Span] = []
    current: _Span | None = None
    for label, score, start, end in tokens:
        kind, opens = entity_type(label)
        if kind is None:
            current = None
            continue
        if current is not None and current.entity == kind:
            touching = start == current.end
            continues = not opens and text[current.end : start].strip() == ""
            if touching or continues:
                current.end = end
                current.scores.append(score)
                continue
        current = _Span(kind, start, end, [score])
        spans.append(current)
    return [
        {
            "entity": s.entity,
            "start": s.start,
            "end": s.end,
            "text": text[s.start : s.end],
            "score": round(float(np.mean(s.scores)), 6),
        }
        for s in spans
    ]


class TokenClassificationHead(TaskHead):
    hf_auto_class = "AutoModelForTokenClassification"
    backend_output = "logits"
    needs_offsets = True
    per_token_output = True
    traits = TaskTraits(architectures=("ForTokenClassification",))
    # Its inputs are the personal data it looks for: not cached by default (docs/performance.md), and
    # hashed in prediction logs.
    inputs_are_personal_data = True
    metrics = (TaskMetric(ENTITIES_PER_TEXT, "histogram", "Entity spans found per text (token classification).",
                          buckets=ENTITY_BUCKETS),)
    dashboard_panels = {
        "Entities per text (mean)": (
            "sum by (model) (rate(predictors_entities_per_text_sum{{{sel}}}[{rate}]))"
            " / sum by (model) (rate(predictors_entities_per_text_count{{{sel}}}[{rate}]))",
        ),
    }

    def outputs(self) -> list[OutputSpec]:
        return [OutputSpec("entities", "BYTES", json=True)]

    def decode(self, array: np.ndarray, batch: TokenBatch) -> dict[str, np.ndarray]:
        probabilities = softmax(array.astype(np.float32))
        best = probabilities.argmax(axis=-1)
        entities = np.empty(len(batch.texts), dtype=object)
        for i, text in enumerate(batch.texts):
            tokens = [
                (self.config.labels[best[i, j]], float(probabilities[i, j, best[i, j]]), int(s), int(e))
                for j, (s, e) in enumerate(batch.offsets[i])
                if not batch.special_tokens[i, j] and e > s
            ]
            entities[i] = merge_tokens(text, tokens)
        return {"entities": entities}

    def describe(self) -> dict[str, Any]:
        kinds = sorted({k for k in (entity_type(label)[0] for label in self.config.labels) if k})
        return {"entities": kinds}

    def without_input_text(self, outputs: dict[str, Any]) -> dict[str, Any]:
        """Each entity without its `text` (the span of input it quotes); its offsets stay."""
        return {
            **outputs,
            "entities": [[{k: v for k, v in entity.items() if k != "text"} for entity in entities]
                         for entities in outputs["entities"]],
        }

    def observe(self, outputs: dict[str, np.ndarray]) -> Iterable[Observation]:
        for count in self.drift_values(outputs)["entity_count"]:
            yield ENTITIES_PER_TEXT, (), count

    def drift_values(self, outputs: dict[str, Any], centroid: np.ndarray | None = None) -> dict[str, list]:
        """`entity_count` (spans per text) and `entity_type` (the first span's type, or "none")."""
        entities = [e if isinstance(e, list) else json.loads(e) for e in outputs["entities"]]
        return {
            "entity_count": [float(len(e)) for e in entities],
            "entity_type": [e[0]["entity"] if e else NO_ENTITY for e in entities],
        }

    def drift_signals(self, values: dict[str, list]) -> list[DriftSignal]:
        kinds = sorted({v for v in values["entity_type"] if v != NO_ENTITY})
        return [DriftSignal("entity_count", edges=ENTITY_COUNT_EDGES),
                DriftSignal("entity_type", categories=(NO_ENTITY, *kinds))]

    @staticmethod
    def format_text(outputs: dict[str, dict[str, Any]], index: int) -> list[str]:
        if "entities" not in outputs:
            return []
        entities = json.loads(outputs["entities"]["data"][index])
        if not entities:
            return ["  entities: none"]
        return [
            f"  {e['entity']:<14} {e['text']!r} [{e['start']}:{e['end']}] score {e['score']:.3f}" for e in entities
        ]

    @staticmethod
    def gate_figures(
        reference: GateRun, candidate: GateRun, labels: Sequence[str | None], texts: Sequence[str]
    ) -> dict[str, Any]:
        """Agreement of the top label per real token, and of the entity spans (type, start, end):
        spans found by both / spans found by either."""
        same_tokens = total_tokens = 0
        for ref, cand in zip(reference.raw, candidate.raw):
            same_tokens += int((ref.argmax(-1) == cand.argmax(-1)).sum())
            total_tokens += len(ref)
        both = either = same_texts = 0
        for ref, cand in zip(reference.outputs["entities"], candidate.outputs["entities"]):
            a = {(e["entity"], e["start"], e["end"]) for e in ref}
            b = {(e["entity"], e["start"], e["end"]) for e in cand}
            both += len(a & b)
            either += len(a | b)
            same_texts += a == b
        n = len(reference.raw)
        return {
            "token_agreement": same_tokens / total_tokens if total_tokens else 1.0,
            "span_agreement": both / either if either else 1.0,
            "spans": either,
            "texts_with_same_spans": same_texts / n if n else 1.0,
        }

    @staticmethod
    def gate_checks(precision: str, figures: dict[str, Any], thresholds: Any) -> list[GateCheck]:
        return [GateCheck(f"{precision} span agreement", figures["span_agreement"],
                          thresholds.min_agreement(precision), ">=", percent)]

    @staticmethod
    def gate_summary(figures: dict[str, Any]) -> list[str]:
        return [f"span agreement {percent(figures['span_agreement'])} of {figures['spans']} spans"]
