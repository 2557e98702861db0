"""The export gate's verdicts, on figures and synthetic runs (no models): messages name the gate
and the margin, fp32 is held to the backend output, the task head adds its checks."""

from __future__ import annotations

import numpy as np
import pytest

from predictors.export import GateFailed, Thresholds
from predictors.export.gate import check_gate, compare
from predictors.tasks import GateCheck
from tests.unit.tasks.test_gate_figures import SyntheticRun


def test_gate_messages_name_the_gate_and_the_margin():
    figures = {"texts": 1000, "max_abs_diff": 0.2, "top1_agreement": 0.985, "changed": 15,
               "labelled": 1000, "reference_accuracy": 0.843, "accuracy": 0.83, "accuracy_drop": 0.013}
    result = check_gate("model.int8.onnx", "int8", "classification", figures)
    assert not result.passed
    assert result.failures() == [
        "int8 top-1 agreement gate: 98.50% is below the limit 99.00% (off by 0.50%) (15 of 1000 texts changed label)",
        "int8 accuracy drop gate: 1.30 pt is above the limit 1.00 pt (off by 0.30 pt) (accuracy 83.00% vs torch 84.30%)",
    ]
    fp32 = check_gate("model.onnx", "fp32", "classification", {**figures, "top1_agreement": 1.0, "changed": 0,
                                                                 "accuracy_drop": 0.0, "max_abs_diff": 2e-6})
    assert fp32.passed
    assert [c["gate"] for c in fp32.checks] == ["fp32 max abs diff", "fp32 top-1 agreement", "fp32 accuracy drop"]
    assert fp32.checks[0]["message"] == "fp32 max abs diff 2.00e-06 (gate < 1.00e-03)"
    embedding = check_gate("model.int8.onnx", "int8", "embedding",
                           {"texts": 48, "max_abs_diff": 0.5, "cosine_mean": 0.985, "cosine_min": 0.95})
    assert embedding.failures()[0].startswith("int8 embedding cosine gate: 0.9850 is below the limit 0.9900")
    spans = check_gate("model.int8.onnx", "int8", "token_classification",
                       {"texts": 10, "max_abs_diff": 0.1, "span_agreement": 0.995, "spans": 200,
                        "token_agreement": 0.999, "texts_with_same_spans": 0.9}, Thresholds(int8_min_agreement=0.999))
    assert not spans.passed and "int8 span agreement gate" in spans.failures()[0]


def test_fp32_max_abs_diff_at_the_limit_fails():
    result = check_gate("model.onnx", "fp32", "embedding", {"texts": 3, "max_abs_diff": 1e-3, "cosine_mean": 1.0,
                                                             "cosine_min": 1.0})
    assert result.failures() == ["fp32 max abs diff gate: 1.00e-03 is not below the limit 1.00e-03 (off by 0.00e+00)"]
    assert result.summary() == "cosine mean 1.0000 (worst text 1.0000), max abs diff 1.00e-03"


def test_closeness_is_the_smallest_margin_and_the_failure_names_every_file():
    near = check_gate("model.int8.onnx", "int8", "classification",
                      {"texts": 100, "max_abs_diff": 0.1, "top1_agreement": 0.985, "changed": 2})
    far = check_gate("model.int8.onnx", "int8", "classification",
                     {"texts": 100, "max_abs_diff": 0.1, "top1_agreement": 0.95, "changed": 5})
    assert near.closeness() == pytest.approx(-0.005) and near.closeness() > far.closeness()
    failure = GateFailed([near])
    assert str(failure).startswith("model.int8.onnx failed the int8 accuracy gate: int8 top-1 agreement gate: 98.50%")
    report = near.as_dict()
    assert report["passed"] is False and report["failures"] == near.failures() and report["checks"][0]["op"] == ">="


def test_compare_takes_the_largest_backend_difference_then_the_heads_figures():
    torch_run = SyntheticRun([np.zeros((3, 4)), np.zeros((1, 4))], {"embedding": np.eye(2, dtype=np.float32)})
    onnx_run = SyntheticRun([np.full((3, 4), 0.01), np.full((1, 4), -0.25)], {"embedding": np.eye(2, dtype=np.float32)})
    figures = compare("embedding", torch_run, onnx_run, [None, None], ["a", "b"])
    assert list(figures)[:3] == ["texts", "max_abs_diff", "cosine_mean"]
    assert figures["texts"] == 2 and figures["max_abs_diff"] == pytest.approx(0.25)
    with pytest.raises(ValueError, match="output shapes differ"):
        compare("embedding", torch_run, SyntheticRun([np.zeros((2, 4)), np.zeros((1, 4))], onnx_run.outputs))


def test_a_check_a_head_returns_is_evaluated_with_its_formatter():
    from predictors.export.gate import evaluate

    check = evaluate(GateCheck("int8 widget score", 0.5, 0.75, ">=", lambda v: f"{v:.1f}", " (see widgets)"))
    assert check == {"gate": "int8 widget score", "value": 0.5, "limit": 0.75, "op": ">=", "passed": False,
                     "message": "int8 widget score gate: 0.5 is below the limit 0.8 (off by 0.2) (see widgets)"}
