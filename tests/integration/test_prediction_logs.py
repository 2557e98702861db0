"""Sampled prediction logs on the real server: built models served from a folder of linked copies
whose predictor.yaml turns the log on (tests/helpers.py linked_model_folder). Every request is
sampled (sample: 1): review-sentiment and pii-ner share a small rotating file; news-topic writes
to /dev/full, a disk that is always full. Requests over V2, V1, gRPC and the OpenAI API are logged;
the PII model's texts only as keyed hashes; the full disk fails no request, and is counted and
logged once."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
import urllib.request

import grpc
import pytest
from kserve.protocol.grpc import grpc_predict_v2_pb2 as pb
from kserve.protocol.grpc import grpc_predict_v2_pb2_grpc as pb_grpc

from tests.conftest import MODELS_DIR, start_server
from tests.helpers import linked_model_folder

KEY = "a-test-key-of-32-characters-long"
PII_TEXT = "Contact Maria Garcia at maria.garcia@example.org or (212) 555-0198."


@pytest.fixture(scope="module")
def logged(demo_models, tmp_path_factory):
    root = tmp_path_factory.mktemp("prediction-logs")
    log = root / "logs" / "predictions.jsonl"
    shared = f"prediction_log: {{sample: 1, path: {log}, max_mb: 0.004, backups: 2}}\n"
    linked_model_folder(MODELS_DIR / "review-sentiment", root / "models" / "review-sentiment", shared)
    linked_model_folder(MODELS_DIR / "pii-ner", root / "models" / "pii-ner", shared)
    linked_model_folder(MODELS_DIR / "news-topic", root / "models" / "news-topic", "prediction_log: {sample: 1, path: /dev/full}\n")
    server = start_server(["--models-dir", str(root / "models")], root / "server.log", env={"PREDICTORS_PREDICTION_LOG_KEY": KEY})
    try:
        server.wait_ready()
        yield server, log
    finally:
        server.stop()


def post(server, path, document, headers=None):
    request = urllib.request.Request(f"{server.url}{path}", data=json.dumps(document).encode(),
                                     headers={"Content-Type": "application/json", **(headers or {})})
    with urllib.request.urlopen(request, timeout=60) as reply:
        return reply.status, json.loads(reply.read())


def v2(texts):
    return {"inputs": [{"name": "text", "datatype": "BYTES", "shape": [len(texts)], "data": texts}]}


def logged_lines(path):
    return [json.loads(line) for file in sorted(path.parent.glob(path.name + "*")) for line in file.read_text().splitlines()]


def wait_for(condition, seconds=30.0):
    deadline = time.monotonic() + seconds
    while not (result := condition()):
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.05)
    return result


def metric(server, outcome, model):
    text = urllib.request.urlopen(f"{server.url}/metrics", timeout=10).read().decode()
    prefix = f'predictors_prediction_log_lines_total{{model="{model}",outcome="{outcome}",version="1"}} '
    return float(next(line for line in text.splitlines() if line.startswith(prefix))[len(prefix):])


def test_every_protocol_writes_a_line_with_the_text_outputs_and_latency(logged):
    server, log = logged
    post(server, "/v2/models/review-sentiment/infer", v2(["Great coffee, will buy again."]), {"x-request-id": "log-v2"})
    post(server, "/v1/models/review-sentiment:predict", {"instances": ["Stale and bland."]}, {"x-request-id": "log-v1"})
    request = pb.ModelInferRequest(model_name="review-sentiment")
    request.inputs.add(name="text", datatype="BYTES", shape=[1]).contents.bytes_contents.append(b"Lovely tea.")
    with grpc.insecure_channel(server.grpc_url) as channel:
        pb_grpc.GRPCInferenceServiceStub(channel).ModelInfer(request, metadata=(("x-request-id", "log-grpc"),), timeout=60)
    lines = wait_for(lambda: {l["request_id"]: l for l in logged_lines(log)} if len(logged_lines(log)) >= 3 else None)
    v2_line, v1_line, grpc_line = lines["log-v2"], lines["log-v1"], lines["log-grpc"]
    assert (v2_line["protocol"], v1_line["protocol"], grpc_line["protocol"]) == ("v2_rest", "v1", "v2_grpc")
    assert v2_line["model"] == "review-sentiment" and v2_line["version"] == "1" and v2_line["latency_ms"] > 0
    assert v2_line["inputs"] == ["Great coffee, will buy again."] and v2_line["outputs"]["label"] in (["great"], ["other"])
    assert set(v2_line["outputs"]) == {"label", "score", "probabilities"} and v1_line["inputs"] == ["Stale and bland."]


def test_personal_data_is_hashed_with_the_key_and_its_spans_are_not_quoted(logged):
    server, log = logged
    status, answer = post(server, "/v2/models/pii-ner/infer", v2([PII_TEXT]), {"x-request-id": "log-pii"})
    assert status == 200 and "Maria" in answer["outputs"][0]["data"][0]  # the answer has them, the log must not
    line = wait_for(lambda: next((l for l in logged_lines(log) if l["request_id"] == "log-pii"), None))
    assert line["inputs_hmac_sha256"] == [hmac.new(KEY.encode(), PII_TEXT.encode(), hashlib.sha256).hexdigest()]
    assert "inputs" not in line and {e["entity"] for e in line["outputs"]["entities"][0]} >= {"GIVEN_NAME", "EMAIL"}
    assert all("text" not in entity for entity in line["outputs"]["entities"][0])
    assert not any("Maria" in file.read_text() or "555-0198" in file.read_text() for file in log.parent.iterdir())


def test_the_log_rotates_at_its_size(logged):
    server, log = logged
    for n in range(40):
        post(server, "/v2/models/review-sentiment/infer", v2([f"Review number {n}: " + "rich and smooth " * 8]))
    wait_for(lambda: (log.parent / (log.name + ".2")).is_file())
    files = sorted(log.parent.iterdir())
    assert [f.name for f in files] == [log.name, log.name + ".1", log.name + ".2"]
    assert all(f.stat().st_size <= 4200 + 1000 for f in files)  # 4 KB, plus at most one line


def test_a_full_disk_fails_no_request_and_is_counted_and_logged_once(logged):
    server, _ = logged
    before = metric(server, "failed", "news-topic")
    for n in range(5):
        status, answer = post(server, "/v2/models/news-topic/infer", v2([f"Shares rose {n} per cent."]))
        assert status == 200 and answer["outputs"]
    wait_for(lambda: metric(server, "failed", "news-topic") - before >= 5)
    warnings = [line for line in server.log.read_text().splitlines() if "prediction log /dev/full: cannot write" in line]
    assert len(warnings) == 1, warnings
