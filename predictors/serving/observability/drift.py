"""Prediction drift: a reference distribution recorded at build time, a sliding window of what the
server predicts, and the population stability index (PSI) between the two per signal.

Each task head names its signals (TaskHead.drift_values / drift_signals): one value per text and
signal, categorical or numeric. Numeric signals are binned at the reference's deciles unless the
head fixes the edges, so each reference bin holds ~10 %.

PSI = sum over bins of (window - reference) * ln(window / reference), proportions floored at
1e-4. Rule of thumb: below 0.1 stable, 0.1-0.25 moderate shift, above 0.25 a real change.
"""

from __future__ import annotations

import json
import math
import threading
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ...model import DRIFT_REFERENCE_FILE, ModelConfig
from ...model.environment import server_environment
from ...tasks import TaskHead
from .drift_texts import builtin_texts

#: How many recent texts the window holds (env PREDICTORS_DRIFT_WINDOW).
DEFAULT_WINDOW = 1000
DECILES = 10
PROPORTION_FLOOR = 1e-4


def window_size_setting() -> int:
    return server_environment().drift_window


# ---- reference ----------------------------------------------------------------------------------
@dataclass
class Signal:
    """One signal's reference: categories (categorical) or inner bin edges (numeric), and the
    reference proportion of each bin."""

    name: str
    proportions: list[float]
    categories: list[str] | None = None
    edges: list[float] | None = None

    def bin(self, value: Any) -> int:
        if self.categories is not None:
            # an unseen category shares the last bin, "other", which the reference holds at ~0
            return self.categories.index(value) if value in self.categories else len(self.categories)
        return int(np.searchsorted(self.edges, value, side="right"))

    @property
    def bins(self) -> int:
        return len(self.categories) + 1 if self.categories is not None else len(self.edges) + 1

    def to_json(self) -> dict[str, Any]:
        kind = {"categories": self.categories} if self.categories is not None else {"edges": self.edges}
        return {**kind, "proportions": self.proportions}


def _proportions(bins: list[int], count: int) -> list[float]:
    counts = np.bincount(np.asarray(bins, dtype=np.int64), minlength=count)[:count]
    return [round(float(c), 6) for c in counts / max(1, len(bins))]


def categorical_signal(name: str, values: list[str], categories: list[str]) -> Signal:
    signal = Signal(name, [], categories=list(categories))
    signal.proportions = _proportions([signal.bin(v) for v in values], signal.bins)
    return signal


def numeric_signal(name: str, values: list[float], edges: list[float] | None = None) -> Signal:
    if edges is None:  # the reference's deciles; repeated values collapse into one edge
        quantiles = np.quantile(np.asarray(values, dtype=np.float64), np.linspace(0, 1, DECILES + 1)[1:-1])
        edges = sorted({round(float(q), 6) for q in quantiles})
    signal = Signal(name, [], edges=list(edges))
    signal.proportions = _proportions([signal.bin(v) for v in values], signal.bins)
    return signal


@dataclass
class Reference:
    task: str
    source: str
    texts: int
    signals: dict[str, Signal]
    centroid: list[float] | None = None

    def to_json(self) -> dict[str, Any]:
        data = {
            "task": self.task,
            "source": self.source,
            "texts": self.texts,
            "signals": {name: s.to_json() for name, s in self.signals.items()},
        }
        if self.centroid is not None:
            data["centroid"] = self.centroid
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Reference:
        signals = {
            name: Signal(name, list(s["proportions"]), categories=s.get("categories"), edges=s.get("edges"))
            for name, s in data["signals"].items()
        }
        return cls(data["task"], data.get("source", ""), int(data.get("texts", 0)), signals, data.get("centroid"))


def build_reference(config: ModelConfig, head: TaskHead, outputs: dict[str, Any], source: str, texts: int) -> Reference:
    """The reference distribution of a model's predictions on its reference texts."""
    centroid = head.drift_centroid(outputs)
    values = head.drift_values(outputs, centroid)
    signals: dict[str, Signal] = {}
    for spec in head.drift_signals(values):
        column = values[spec.name]
        if spec.categories is not None:
            signals[spec.name] = categorical_signal(spec.name, column, list(spec.categories))
        else:
            signals[spec.name] = numeric_signal(spec.name, column, list(spec.edges) if spec.edges is not None else None)
    return Reference(
        config.task, source, texts, signals, [round(float(v), 6) for v in centroid] if centroid is not None else None
    )


def read_reference(folder: Path) -> Reference | None:
    path = Path(folder) / DRIFT_REFERENCE_FILE
    if not path.is_file():
        return None
    return Reference.from_json(json.loads(path.read_text()))


def reference_texts(config: ModelConfig) -> tuple[list[str], str]:
    """The folder's held-out texts where the build recorded them, else the built-in texts."""
    heldout = config.heldout()
    if heldout:
        return [row["text"] for row in heldout], f"heldout.jsonl ({len(heldout)} texts)"
    texts = builtin_texts()
    return texts, f"built-in reference texts ({len(texts)}, predictors/serving/observability/drift_texts.py)"


# ---- the live window ----------------------------------------------------------------------------
def psi(reference: list[float], window: np.ndarray) -> float:
    expected = np.clip(np.asarray(reference, dtype=np.float64), PROPORTION_FLOOR, None)
    actual = np.clip(window, PROPORTION_FLOOR, None)
    return float(np.sum((actual - expected) * np.log(actual / expected)))


class DriftWindow:
    """The last `size` texts' signal bins, with running counts so PSI costs O(bins). Thread-safe:
    worker threads observe while the /metrics scrape reads."""

    def __init__(self, reference: Reference, head: TaskHead, size: int = DEFAULT_WINDOW) -> None:
        self.reference = reference
        self.head = head
        self.size = size
        self.centroid = np.asarray(reference.centroid, dtype=np.float32) if reference.centroid else None
        self._rows: deque[tuple[int, ...]] = deque()
        self._names = list(reference.signals)
        self._counts = {n: np.zeros(reference.signals[n].bins, dtype=np.int64) for n in self._names}
        self._lock = threading.Lock()

    def observe(self, outputs: dict[str, Any]) -> None:
        values = self.head.drift_values(outputs, self.centroid)
        if not values or any(n not in values for n in self._names):
            return
        signals = self.reference.signals
        rows = list(zip(*(tuple(signals[n].bin(v) for v in values[n]) for n in self._names)))
        with self._lock:
            for row in rows:
                self._rows.append(row)
                for name, index in zip(self._names, row):
                    self._counts[name][index] += 1
                if len(self._rows) > self.size:
                    for name, index in zip(self._names, self._rows.popleft()):
                        self._counts[name][index] -= 1

    def __len__(self) -> int:
        return len(self._rows)

    def psi(self, name: str) -> float:
        """PSI of one signal over the window; NaN while the window is empty."""
        with self._lock:
            total = len(self._rows)
            counts = self._counts[name].copy()
        if total == 0:
            return math.nan
        return psi(self.reference.signals[name].proportions, counts / total)
