"""The accuracy gate: an ONNX file is served only if it gives the answers PyTorch gives.

An exported graph is compared with the HuggingFace model it came from on a sample of texts run
through the serving pipeline (`runner.Runner`), so what is measured is what a client would get.
Every task gets the max abs diff of the backend output (classification logits; token logits /
hidden states at real, non-padding tokens); the task head adds its own figures, checks and summary
(`TaskHead.gate_figures`, `gate_checks`, `gate_summary`):

* classification: top-1 agreement with torch, and the accuracy drop where the sample has labels,
* embedding: cosine between the pooled, normalised vectors (the gate uses the mean; the worst text
  and nearest-neighbour agreement within the sample are reported),
* token classification: span agreement (entity spans, with offsets, found by both / by either).

Default gates (`Thresholds`): fp32 agrees 100 % with max abs diff < 1e-3; int8 top-1 (or span)
agreement >= 99 %, mean embedding cosine >= 0.99; neither may lose more than 1 point of accuracy.

A scikit-learn pipeline converted by skl2onnx (precision "converted") is compared with scikit-learn
itself: its featurization is reimplemented by ONNX operators (tokenizer, TfIdfVectorizer), so it is
held to agreement rather than to equal outputs: top-1 agreement >= 99.5 %, and on at least 99.5 % of
the texts every probability within 1e-4 of scikit-learn's (the 99.5th percentile of each text's
largest difference), no more than 1 point of accuracy lost.

The verdicts go into `export_report.json` (predictors.model.report), which the backend choice reads.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Sequence

import numpy as np

from ..tasks import TASKS, GateCheck, GateRun

#: The gate precision of a graph converted from another framework (skl2onnx), not exported from torch.
CONVERTED = "converted"


@dataclass(frozen=True)
class Thresholds:
    fp32_max_abs_diff: float = 1e-3
    fp32_min_agreement: float = 1.0
    int8_min_agreement: float = 0.99
    int8_min_cosine: float = 0.99
    max_accuracy_drop: float = 0.01  # 1 point
    converted_min_agreement: float = 0.995
    converted_probability_tolerance: float = 1e-4

    def min_agreement(self, precision: str) -> float:
        """Least share of answers (labels, spans) that must equal the reference's for a `precision` file."""
        return {"fp32": self.fp32_min_agreement, CONVERTED: self.converted_min_agreement}.get(
            precision, self.int8_min_agreement)

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


def max_abs_diff(reference: Sequence[np.ndarray], candidate: Sequence[np.ndarray]) -> float:
    """Largest absolute difference between two runs' backend outputs, text by text."""
    diff = 0.0
    for ref, cand in zip(reference, candidate):
        if ref.shape != cand.shape:
            raise ValueError(f"output shapes differ: torch {ref.shape} vs onnx {cand.shape}")
        if ref.size:
            diff = max(diff, float(np.abs(ref - cand).max()))
    return diff


def compare(
    task: str, reference: GateRun, candidate: GateRun, labels: Sequence[str | None] = (), texts: Sequence[str] = (),
    reference_name: str = "torch",
) -> dict[str, Any]:
    """Figures of `candidate` against `reference` (the torch run, or `reference_name`'s) on the same texts."""
    figures: dict[str, Any] = {"texts": len(reference.raw), "max_abs_diff": max_abs_diff(reference.raw, candidate.raw)}
    if reference_name != "torch":
        figures["reference"] = reference_name
    figures.update(TASKS[task].gate_figures(reference, candidate, labels, texts))
    return figures


@dataclass
class GateResult:
    file: str
    precision: str  # "fp32" | "int8"
    task: str
    figures: dict[str, Any]
    checks: list[dict[str, Any]] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return all(check["passed"] for check in self.checks)

    def failures(self) -> list[str]:
        return [check["message"] for check in self.checks if not check["passed"]]

    def summary(self) -> str:
        """The figures that matter, in one line: `top-1 agreement 99.60% (4 of 1000 changed), ...`."""
        parts = TASKS[self.task].gate_summary(self.figures)
        if "sample" in self.figures:  # run on a spread of the sample only (the fp32 gate)
            parts.append(f"on {self.figures['texts']} of the {self.figures['sample']} sample texts, spread by length")
        return ", ".join([*parts, f"max abs diff {self.figures['max_abs_diff']:.2e}"])

    def closeness(self) -> float:
        """How close a failing file came to passing: the smallest margin over its checks."""
        margins = [c["value"] - c["limit"] if c["op"] == ">=" else c["limit"] - c["value"] for c in self.checks]
        return min(margins) if margins else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {"passed": self.passed, "summary": self.summary(), "figures": self.figures,
                "checks": self.checks, "failures": self.failures()}


class GateFailed(RuntimeError):
    """An ONNX file failed its accuracy gate; the message names each failed gate and by how much."""

    def __init__(self, results: Sequence[GateResult]) -> None:
        self.results = list(results)
        lines = [f"{r.file} failed the {r.precision} accuracy gate: {'; '.join(r.failures())}" for r in self.results]
        super().__init__("\n".join(lines))


_HOLDS = {">=": float.__ge__, "<=": float.__le__, "<": float.__lt__}
_FAILS_AS = {">=": "below", "<=": "above", "<": "not below"}


def evaluate(check: GateCheck) -> dict[str, Any]:
    """The check as recorded in the report: its figures, whether it passed, and a message that
    names the gate and, on failure, the margin."""
    value, limit, show = float(check.value), float(check.limit), check.show
    passed = _HOLDS[check.op](value, limit)
    if passed:
        message = f"{check.gate} {show(value)} (gate {check.op} {show(limit)})"
    else:
        message = (f"{check.gate} gate: {show(value)} is {_FAILS_AS[check.op]} the limit {show(limit)} "
                   f"(off by {show(abs(value - limit))}){check.detail}")
    return {"gate": check.gate, "value": check.value, "limit": check.limit, "op": check.op, "passed": passed,
            "message": message}


def check_gate(
    file: str, precision: str, task: str, figures: dict[str, Any], thresholds: Thresholds = Thresholds()
) -> GateResult:
    """Apply the gates for `precision` ("fp32", "int8" or "converted") to `figures` from `compare`:
    fp32 is held to torch's backend output itself; the task head adds the checks of its answers."""
    checks: list[GateCheck] = []
    if precision == "fp32":
        checks.append(GateCheck("fp32 max abs diff", figures["max_abs_diff"], thresholds.fp32_max_abs_diff, "<",
                                lambda v: f"{v:.2e}"))
    checks += TASKS[task].gate_checks(precision, figures, thresholds)
    return GateResult(file, precision, task, figures, [evaluate(check) for check in checks])
