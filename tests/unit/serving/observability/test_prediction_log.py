"""Sampled prediction logs (serving/observability/prediction_log.py) on config-only model folders:
settings, the lines, keyed hashes for personal data, rotation, and failed writes that are counted
and logged once. The real server writing them: tests/integration/test_prediction_logs.py."""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import time

import numpy as np
import pytest
from prometheus_client import REGISTRY

from predictors.model import ModelConfigError
from predictors.serving.observability import prediction_log
from predictors.serving.observability.prediction_log import PredictionLog, close_all, settings_for
from predictors.tasks import head_for, load_model_config
from tests.helpers import write_folder

KEY = "k" * 32
ENTITIES = np.empty(1, dtype=object)
ENTITIES[0] = [{"entity": "PER", "start": 5, "end": 10, "text": "Maria", "score": 0.98}]


def model(tmp_path, name="m", yaml="", ner=False):
    folder = write_folder(tmp_path / name, architecture="BertForTokenClassification" if ner else "BertForSequenceClassification",
                          labels=("O", "B-PER") if ner else ("neg", "pos"), predictor_yaml=yaml)
    config = load_model_config(folder)
    return config, head_for(config)


def lines(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def count(name, outcome):
    return REGISTRY.get_sample_value("predictors_prediction_log_lines_total", {"model": name, "version": "1", "outcome": outcome}) or 0


def wait_for(condition, seconds=10.0):
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.01)


def test_settings_come_from_the_model_then_the_server(tmp_path, monkeypatch):
    config, head = model(tmp_path)
    assert settings_for(config, head.personal_data) is None  # off by default
    monkeypatch.setenv("PREDICTORS_PREDICTION_LOG_SAMPLE", "0.25")
    with pytest.raises(ModelConfigError, match="names no file"):
        settings_for(config, False)
    monkeypatch.setenv("PREDICTORS_PREDICTION_LOG_PATH", str(tmp_path / "all.jsonl"))
    server_wide = settings_for(config, False)
    assert (server_wide.sample, server_wide.path, server_wide.inputs) == (0.25, tmp_path / "all.jsonl", "text")
    own, _ = model(tmp_path, "own", f"prediction_log: {{sample: 1, path: {tmp_path / 'own.jsonl'}, max_mb: 0.5, backups: 2}}\n")
    mine = settings_for(own, True)
    assert (mine.sample, mine.path, mine.max_bytes, mine.backups, mine.inputs) == (1.0, tmp_path / "own.jsonl", 2**19, 2, "hash")
    off, _ = model(tmp_path, "off", "prediction_log: {sample: 0}\n")
    assert settings_for(off, False) is None  # a model may opt out of the server-wide log


def test_a_sampled_request_is_one_line_with_its_texts_and_outputs(tmp_path):
    path = tmp_path / "logs" / "predictions.jsonl"  # the folder is made
    config, head = model(tmp_path, "plain", f"prediction_log: {{sample: 1, path: {path}}}\n")
    log = PredictionLog.for_model(config, head)
    log.offer("r1", "v2_rest", ["great", "bad"], {"label": np.array(["pos", "neg"], dtype=object),
                                                  "score": np.array([0.9, 0.8], np.float32)}, [1], 4.2)
    close_all()
    (line,) = lines(path)
    assert line["request_id"] == "r1" and line["model"] == "plain" and line["version"] == "1"
    assert line["protocol"] == "v2_rest" and line["latency_ms"] == 4.2 and line["texts"] == 2
    assert line["inputs"] == ["great", "bad"] and line["outputs"]["label"] == ["pos", "neg"]
    assert line["outputs"]["score"] == [pytest.approx(0.9), pytest.approx(0.8)] and line["truncated"] == [1]
    assert line["time"].endswith("+00:00")


def test_personal_data_is_written_as_a_keyed_hash_without_quoted_spans(tmp_path, monkeypatch):
    monkeypatch.setenv("PREDICTORS_PREDICTION_LOG_KEY", KEY)
    path = tmp_path / "pii.jsonl"
    config, head = model(tmp_path, "pii", f"prediction_log: {{sample: 1, path: {path}}}\n", ner=True)
    assert head.personal_data  # the task's default
    PredictionLog.for_model(config, head).offer("r2", "v1", ["Call Maria"], {"entities": ENTITIES}, [], 1.0)
    close_all()
    (line,) = lines(path)
    assert "inputs" not in line and "Maria" not in path.read_text()
    assert line["inputs_hmac_sha256"] == [hmac.new(KEY.encode(), b"Call Maria", hashlib.sha256).hexdigest()]
    assert line["outputs"]["entities"] == [[{"entity": "PER", "start": 5, "end": 10, "score": 0.98}]]


def test_settings_can_declare_the_inputs_personal_or_not(tmp_path):
    plain, plain_head = model(tmp_path, "declared", "personal_data: true\n")
    ner, ner_head = model(tmp_path, "public-ner", "personal_data: false\nprediction_log: {inputs: none}\n", ner=True)
    assert plain_head.personal_data and not ner_head.personal_data


def test_the_file_rotates_by_size(tmp_path):
    path = tmp_path / "small.jsonl"
    config, head = model(tmp_path, "rotating", f"prediction_log: {{sample: 1, path: {path}, max_mb: 0.001, backups: 2}}\n")
    log = PredictionLog.for_model(config, head)
    for n in range(40):
        log.offer(f"r{n}", "v2_rest", [f"text number {n} " + "x" * 40], {"label": np.array(["pos"], dtype=object)}, [], 1.0)
    close_all()
    rotated = sorted(p.name for p in tmp_path.glob("small.jsonl*"))
    assert rotated == ["small.jsonl", "small.jsonl.1", "small.jsonl.2"]
    assert all(p.stat().st_size <= 1100 for p in tmp_path.glob("small.jsonl*"))  # 1 KB, plus at most one line
    assert lines(path)[-1]["request_id"] == "r39"  # the newest lines are in the file itself


def test_a_full_disk_never_fails_the_request_and_is_counted_and_logged_once(tmp_path, caplog):
    config, head = model(tmp_path, "full-disk", "prediction_log: {sample: 1, path: /dev/full}\n")
    log = PredictionLog.for_model(config, head)
    before = count("full-disk", "failed")
    with caplog.at_level(logging.WARNING, logger="kserve.predictors"):
        for n in range(5):
            log.offer(f"r{n}", "v2_rest", ["text"], {"label": np.array(["pos"], dtype=object)}, [], 1.0)  # returns at once
        wait_for(lambda: count("full-disk", "failed") - before == 5)
    warnings = [r.getMessage() for r in caplog.records if "cannot write" in r.getMessage()]
    assert len(warnings) == 1 and "/dev/full" in warnings[0] and "No space left" in warnings[0]
    close_all()


def test_lines_are_dropped_and_counted_when_the_writer_falls_behind(tmp_path, monkeypatch):
    monkeypatch.setattr(prediction_log, "QUEUE_LINES", 1)
    config, head = model(tmp_path, "behind", f"prediction_log: {{sample: 1, path: {tmp_path / 'behind.jsonl'}}}\n")
    log = PredictionLog.for_model(config, head)
    log.writer.listener.stop()  # nothing takes lines off the queue now
    before = count("behind", "dropped")
    for n in range(3):
        log.offer(f"r{n}", "v2_rest", ["text"], {"label": np.array(["pos"], dtype=object)}, [], 1.0)
    assert count("behind", "dropped") - before == 2
    log.writer.listener.start()
    close_all()
    assert len(lines(tmp_path / "behind.jsonl")) == 1


def test_a_sample_logs_about_that_share_of_requests(tmp_path):
    path = tmp_path / "sampled.jsonl"
    config, head = model(tmp_path, "sampled", f"prediction_log: {{sample: 0.1, path: {path}}}\n")
    log = PredictionLog.for_model(config, head)
    for n in range(2000):
        log.offer(f"r{n}", "v2_rest", ["t"], {"label": np.array(["pos"], dtype=object)}, [], 1.0)
    close_all()
    assert 120 <= len(lines(path)) <= 280  # 200 expected; outside this the sampling is wrong (p < 1e-6)
