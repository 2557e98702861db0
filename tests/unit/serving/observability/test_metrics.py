"""Metric functions against prometheus_client's real registry, with stand-in models (no weights)."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
from kserve.errors import InvalidInput, ModelNotReady
from prometheus_client import REGISTRY, generate_latest

from predictors.model import DRIFT_REFERENCE_FILE, ModelConfig
from predictors.serving.observability import drift, metrics
from predictors.serving.errors import QueueFull
from predictors.tasks import head_for


class StandInModel(SimpleNamespace):
    """A stand-in for TextPredictor: the attributes metrics reads, no weights (weak-referenceable)."""


def stand_in_model(tmp_path: Path, name: str, task: str = "classification", with_reference: bool = False):
    config = ModelConfig(name=name, path=tmp_path, task=task, version="3", labels=("great", "other"))
    if with_reference:
        outputs = {"label": np.array(["great", "other"] * 50, dtype=object), "score": np.linspace(0.5, 1.0, 100)}
        reference = drift.build_reference(config, head_for(config), outputs, "stand-in", 100)
        (tmp_path / DRIFT_REFERENCE_FILE).write_text(json.dumps(reference.to_json()))
    model = StandInModel(
        name=name, config=config, head=head_for(config), ready=False, load_seconds=None,
        choice=SimpleNamespace(name="onnx", weights=tmp_path / "model.int8.onnx"),
    )
    metrics.track(model)
    metrics.serve_default(model.name, model.config.version)  # as the repository does when it serves
    return model


def value(name: str, **labels: str) -> float | None:
    return REGISTRY.get_sample_value(name, labels)


def test_model_state_is_read_at_scrape_time_with_a_stand_in_model(tmp_path):
    model = stand_in_model(tmp_path, "state-stand-in")
    key = {"model": "state-stand-in", "version": "3"}
    assert value("predictors_model_ready", **key) == 0.0
    model.ready, model.load_seconds = True, 2.5
    assert value("predictors_model_ready", **key) == 1.0
    assert value("predictors_model_load_seconds", **key) == 2.5
    assert value("predictors_model_info", **key, backend="onnx", weights="model.int8.onnx", task="classification") == 1.0
    assert value("predictors_drift_window_texts", **key) is None  # no reference file: no drift series


def test_predictions_feed_label_counter_score_histogram_and_drift(tmp_path):
    model = stand_in_model(tmp_path, "pred-stand-in", with_reference=True)
    key = {"model": "pred-stand-in", "version": "3"}
    outputs = {"label": np.array(["great", "great", "other"], dtype=object), "score": np.array([0.9, 0.8, 0.6])}
    metrics.observe_predictions(model, outputs, truncated=1)
    assert value("predictors_predicted_labels_total", **key, label="great") == 2
    assert value("predictors_top_score_count", **key) == 3
    assert value("predictors_top_score_bucket", **key, le="0.7") == 1
    assert value("predictors_truncated_texts_total", **key) == 1
    assert value("predictors_drift_window_texts", **key) == 3
    assert value("predictors_drift_psi", **key, signal="label") is not None


def test_chunk_stage_and_queue_observations(tmp_path):
    model = stand_in_model(tmp_path, "chunk-stand-in")
    key = {"model": "chunk-stand-in", "version": "3"}
    metrics.observe_tokens(model, np.array([4, 2]), padded_tokens=8)  # a batch of 2 texts padded to 4 tokens
    assert value("predictors_text_tokens_count", **key) == 2 and value("predictors_text_tokens_sum", **key) == 6
    assert value("predictors_chunk_padding_ratio_sum", **key) == 0.25
    metrics.QUEUED.labels("chunk-stand-in", "3").inc(2)  # as the scheduler's enqueued hook counts them
    metrics.observe_queue_wait(model, 0.01, 2)
    assert value("predictors_queued_texts", **key) == 0
    assert value("predictors_stage_duration_seconds_count", **key, stage="queue") == 1
    metrics.observe_stage(model, "tokenize", 0.002)
    assert value("predictors_stage_duration_seconds_count", **key, stage="tokenize") == 1
    assert value("predictors_stage_duration_seconds_sum", **key, stage="tokenize") == 0.002
    metrics.observe_plan(model, texts=5, chunks=2)
    assert value("predictors_request_chunks_sum", **key) == 2


def test_outcomes_and_bounded_model_labels(tmp_path):
    model = stand_in_model(tmp_path, "outcome-stand-in")  # tracked weakly: keep it alive
    assert [metrics.outcome_for_status(s) for s in (200, 400, 404, 429, 503, 504, 500)] == [
        "success", "client_error", "client_error", "overloaded", "not_ready", "timeout", "server_error"]
    assert metrics.outcome_for_exception(QueueFull("full", 1.0)) == "overloaded"
    assert metrics.outcome_for_exception(InvalidInput("x")) == "client_error"
    assert metrics.outcome_for_exception(ModelNotReady("m")) == "not_ready"
    assert metrics.outcome_for_exception(RuntimeError("boom")) == "server_error"
    assert metrics.tracked("outcome-stand-in") == ("outcome-stand-in", "3")
    assert metrics.tracked("outcome-stand-in", "9") is None and metrics.tracked("no-such-model") is None
    metrics.observe_request(("outcome-stand-in", "3"), "v1", "client_error", 0.002, texts=4)
    key = {"model": "outcome-stand-in", "version": "3", "protocol": "v1"}
    assert value("predictors_requests_total", **key, outcome="client_error") == 1
    assert value("predictors_texts_total", **key, outcome="client_error") == 4
    assert value("predictors_request_duration_seconds_bucket", **key, le="0.0025") == 1


def test_exposition_has_help_and_prefix():
    text = generate_latest(REGISTRY).decode()
    ours = [line for line in text.splitlines() if line.startswith("# HELP predictors_")]
    assert len(ours) >= 18 and all(len(line.split(" ", 3)[3]) > 10 for line in ours)


def test_stats_quantile_matches_prometheus_interpolation():
    from predictors.cli.stats import histogram_quantile

    buckets = {0.1: 50.0, 0.5: 90.0, 1.0: 100.0, float("inf"): 100.0}
    assert histogram_quantile(0.5, buckets) == 0.1  # exactly at a bucket's upper bound
    assert abs(histogram_quantile(0.7, buckets) - 0.3) < 1e-9  # half way through (0.1, 0.5]
    assert abs(histogram_quantile(0.95, buckets) - 0.75) < 1e-9
