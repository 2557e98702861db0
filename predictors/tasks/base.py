"""The task-head contract: backend arrays in, typed per-text outputs out.

Everything task-specific lives in the head: its outputs, how they are decoded, compared in the
export gate and printed by the CLI, which metrics it observes and which dashboard panels show them,
its drift signals, and whether its answers are cached by default. The layers above iterate over
the registry (tasks/__init__.py) and never name a task."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, Callable, ClassVar, Iterable, Protocol, Sequence

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

    texts: list[str]  # as the model sees them: cut to the character limit and cleaned
    # input_ids, attention_mask, token_type_ids (int64, [n, seq]); empty for a backend that takes texts
    arrays: dict[str, np.ndarray]
    offsets: np.ndarray | None  # [n, seq, 2] character offsets, for heads that need them
    special_tokens: np.ndarray | None  # [n, seq] 1 where the token is [CLS]/[SEP]/[PAD]
    truncated: list[bool]


@dataclass(frozen=True)
class TaskMetric:
    """A Prometheus series a task observes for each text it predicts, beside `model` and `version`.
    `kind` is "counter" (each observation adds its value) or "histogram" (each is one sample)."""

    name: str  # without the _total suffix of counters
    kind: str
    help: str
    labels: tuple[str, ...] = ()
    buckets: tuple[float, ...] = ()


#: One observation of a TaskMetric: (metric name, values of its extra labels, value).
Observation = tuple[str, tuple[str, ...], float]


@dataclass(frozen=True)
class DriftSignal:
    """How the drift reference bins one signal: by `categories` (categorical; values outside share
    a last "other" bin), by fixed inner `edges` (numeric), or, with neither, at the reference's deciles."""

    name: str
    categories: tuple[str, ...] | None = None
    edges: tuple[float, ...] | None = None


def percent(value: float) -> str:
    return f"{100 * value:.2f}%"


class GateRun(Protocol):
    """One backend's answers on the export gate's sample, in sample order (predictors.export makes them)."""

    raw: Sequence[np.ndarray]  # per text: its backend output ([C], or [real_tokens, D] when per_token_output)
    outputs: dict[str, np.ndarray]  # this head's decoded outputs, one row per text


@dataclass(frozen=True)
class GateCheck:
    """One check of the export gate: `value op limit` must hold. `show` formats value and limit in
    the message; `detail` is appended when the check fails."""

    gate: str  # e.g. "int8 top-1 agreement"
    value: float
    limit: float
    op: str  # ">=", "<=" or "<"
    show: Callable[[float], str] = percent
    detail: str = ""


class TaskHead(ABC):
    """Turns one backend output array for a chunk into per-text outputs, one entry per OutputSpec."""

    # The HuggingFace auto class and the output tensor of it that this head consumes; the ONNX
    # export writes the same tensor under the same name.
    hf_auto_class: ClassVar[str]
    backend_output: ClassVar[str]
    needs_offsets: ClassVar[bool] = False
    # The folder contract's view of the task: which config.json architectures mean it, labels needed.
    traits: ClassVar[TaskTraits]
    # True when the backend output holds one value per token ([n, seq, ...]) rather than per text
    # ([n, C]): the ONNX export gives it a dynamic sequence axis and compares real tokens only.
    per_token_output: ClassVar[bool] = False
    # Whether the texts a model of this task is sent are personal data unless its predictor.yaml
    # says otherwise (`personal_data`): then its answers are not cached by default and prediction
    # logs write a keyed hash of each text instead of the text (see `personal_data`).
    inputs_are_personal_data: ClassVar[bool] = False
    # The output holding one vector per text, where this task embeds texts: the OpenAI-compatible
    # embeddings API serves exactly the models whose head names one.
    embedding_output: ClassVar[str | None] = None
    # The series `observe` feeds (predictors_* metrics beside the serving layer's own).
    metrics: ClassVar[tuple[TaskMetric, ...]] = ()
    # Dashboard panel title -> PromQL expressions; `{sel}` is the model selector and `{rate}` the rate
    # interval, filled in by the dashboard renderer (predictors/deploy/monitoring.py).
    dashboard_panels: ClassVar[dict[str, tuple[str, ...]]] = {}

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

    @property
    def personal_data(self) -> bool:
        """Whether this model's input texts are personal data: its predictor.yaml's `personal_data`,
        else the task's default."""
        declared = self.config.personal_data
        return self.inputs_are_personal_data if declared is None else declared

    def without_input_text(self, outputs: dict[str, Any]) -> dict[str, Any]:
        """`outputs` (one request's, as lists) without the pieces of input text some outputs quote,
        for a prediction log that must not hold the texts themselves."""
        return outputs

    def shorten(self, vectors: np.ndarray, dimensions: int) -> np.ndarray:
        """`vectors` (this head's `embedding_output`) cut to `dimensions`; raises ValueError saying
        why when this model's vectors cannot be cut to that size."""
        raise ValueError(f"model '{self.config.name}' does not embed texts")

    # ---- what the server watches: metrics and drift ----------------------------------------------
    def observe(self, outputs: dict[str, np.ndarray]) -> Iterable[Observation]:
        """The observations of `metrics` for one request's outputs."""
        return ()

    def metric_label_values(self) -> dict[str, list[tuple[str, ...]]]:
        """Per metric with extra labels, the label values to create at 0 when the model loads, so
        ratios and alerts have data before the first prediction (e.g. each class label)."""
        return {}

    @abstractmethod
    def drift_values(self, outputs: dict[str, Any], centroid: np.ndarray | None = None) -> dict[str, list]:
        """Each drift signal's value for every text of one prediction's outputs (`centroid`: the
        reference's, for heads whose signals are measured against it)."""

    @abstractmethod
    def drift_signals(self, values: dict[str, list]) -> list[DriftSignal]:
        """How the reference bins each signal, given the reference texts' `drift_values`."""

    def drift_centroid(self, outputs: dict[str, Any]) -> np.ndarray | None:
        """A unit vector the signals are measured against, from the reference texts' outputs (None: none)."""
        return None

    @staticmethod
    @abstractmethod
    def format_text(outputs: dict[str, dict[str, Any]], index: int) -> list[str]:
        """Lines the CLI prints for text `index` of a V2 JSON response (`outputs` by name)."""

    # ---- the ONNX export gate: how an export's answers are compared with torch's ----------------
    @staticmethod
    @abstractmethod
    def gate_figures(
        reference: GateRun, candidate: GateRun, labels: Sequence[str | None], texts: Sequence[str]
    ) -> dict[str, Any]:
        """Task figures of `candidate` against `reference` (the torch run) on the same texts; `labels`
        holds the gold label per text (None where unknown)."""

    @staticmethod
    @abstractmethod
    def gate_checks(precision: str, figures: dict[str, Any], thresholds: Any) -> list[GateCheck]:
        """The checks a `precision` ("fp32" | "int8") file's `figures` must pass; `thresholds` is a
        predictors.export.gate.Thresholds."""

    @staticmethod
    @abstractmethod
    def gate_summary(figures: dict[str, Any]) -> list[str]:
        """The figures that matter, as phrases of the gate's one-line summary."""

    @staticmethod
    def gate_screen_order(reference: GateRun) -> np.ndarray | None:
        """The sample's text indices, those whose answer an export most likely changes first, or
        None. The gate runs the first of them before the rest and stops once the `changed` answers
        there already fail it (the same verdict, sooner). None: every text is run."""
        return None


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=-1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=-1, keepdims=True)
