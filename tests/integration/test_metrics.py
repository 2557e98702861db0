"""Metrics, request ids, request-tagged logs and drift on the real server after a mixed load of good
and bad requests over V2 REST, V2 gRPC and V1 (the session server: all demo models)."""

from __future__ import annotations

import asyncio
import json
import os
import random
import urllib.error
import urllib.request
from pathlib import Path

import grpc
import numpy as np
import pytest
from kserve import InferenceGRPCClient, InferInput, InferRequest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import DEMO_MODELS, MODELS_DIR, start_server

TEXTS = {
    "review-sentiment": ["Delicious, my kids love these snacks.", "Arrived broken and tasted awful."],
    "review-sentiment-tfidf": ["Delicious, my kids love these snacks.", "Arrived broken and tasted awful."],
    "news-topic": ["Shares fell as the company reported weaker profits.", "The striker scored twice in the final."],
    "pii-ner": ["Mail ann@example.com or call 415-555-0132.", "Nothing personal in this sentence."],
    "sentence-embedding": ["A cat sits on the mat.", "Stock markets rallied today."],
}
TASK_METRICS = {  # metric families that exist only for some tasks
    "predictors_predicted_labels_total": {"review-sentiment", "review-sentiment-tfidf", "news-topic"},
    "predictors_top_score_bucket": {"review-sentiment", "review-sentiment-tfidf", "news-topic"},
    "predictors_entities_per_text_bucket": {"pii-ner"},
}
EVERY_MODEL_METRICS = [
    "predictors_requests_total", "predictors_texts_total", "predictors_request_duration_seconds_bucket",
    "predictors_stage_duration_seconds_bucket", "predictors_request_texts_bucket", "predictors_request_chunks_bucket",
    "predictors_text_tokens_bucket", "predictors_truncated_texts_total", "predictors_chunk_padding_ratio_bucket",
    "predictors_requests_in_flight", "predictors_queued_texts", "predictors_model_ready",
    "predictors_model_load_seconds", "predictors_model_info", "predictors_drift_psi",
    "predictors_drift_window_texts",
]


def post(url: str, body: dict, headers: dict[str, str] | None = None) -> tuple[int, dict, dict]:
    request = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json", **(headers or {})}
    )
    try:
        with urllib.request.urlopen(request, timeout=120) as reply:
            return reply.status, dict(reply.headers), json.loads(reply.read())
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), json.loads(exc.read() or b"{}")


def v2(texts: list[str], **extra) -> dict:
    return {"inputs": [{"name": "text", "datatype": "BYTES", "shape": [len(texts)], "data": texts}], **extra}


def grpc_infer(server, model: str, texts: list[bytes], request_id: str = "", metadata=None):
    async def call():
        tensor = InferInput("text", [len(texts)], "BYTES")
        tensor.set_data_from_numpy(np.array(texts, dtype=object), binary_data=True)
        client = InferenceGRPCClient(server.grpc_url, timeout=60)
        try:  # the generated stub: kserve's client gives no access to trailing metadata
            request = InferRequest(model, [tensor], request_id=request_id or None).to_grpc()
            call = client._client_stub.ModelInfer(request, metadata=metadata or ())
            response = await call
            return response, dict(await call.trailing_metadata())
        finally:
            await client.close()

    return asyncio.run(call())


def mixed_load(server) -> None:
    """Good and bad requests to every model over the three protocols."""
    for model, texts in TEXTS.items():
        assert post(f"{server.url}/v2/models/{model}/infer", v2(texts))[0] == 200
        assert post(f"{server.url}/v2/models/{model}/infer", {"inputs": [{"name": "text", "datatype": "FP32",
                                                                           "shape": [1], "data": [1.0]}]})[0] == 400
        assert post(f"{server.url}/v1/models/{model}:predict", {"instances": texts})[0] == 200
        assert post(f"{server.url}/v1/models/{model}:predict", {"instances": []})[0] == 400
        grpc_infer(server, model, [t.encode() for t in texts])
        with pytest.raises(grpc.aio.AioRpcError):
            grpc_infer(server, model, [b"\xff\xfe"])


def scrape(url: str) -> dict[str, list]:
    """Sample name -> [(labels, value)] of one /metrics scrape."""
    with urllib.request.urlopen(f"{url}/metrics", timeout=30) as reply:
        text = reply.read().decode()
    samples: dict[str, list] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples.setdefault(sample.name, []).append((sample.labels, sample.value))
    return samples


def test_every_metric_for_every_model_after_a_mixed_load(server):
    mixed_load(server)
    samples = scrape(server.url)
    for name in EVERY_MODEL_METRICS + list(TASK_METRICS):
        models = {labels.get("model") for labels, _ in samples.get(name, [])}
        expected = TASK_METRICS.get(name, set(DEMO_MODELS))
        assert expected <= models, f"{name}: no series for {sorted(expected - models)}"
    requests = {(l["model"], l["protocol"], l["outcome"]): v for l, v in samples["predictors_requests_total"]}
    for model in DEMO_MODELS:
        for protocol in ("v2_rest", "v2_grpc", "v1"):
            assert requests[(model, protocol, "success")] >= 1, (model, protocol)
            assert requests[(model, protocol, "client_error")] >= 1, (model, protocol)
    stages = {(l["model"], l["stage"]) for l, v in samples["predictors_stage_duration_seconds_count"] if v > 0}
    assert {(m, s) for m in DEMO_MODELS for s in ("queue", "tokenize", "backend", "postprocess")} <= stages
    info = [l for l, _ in samples["predictors_model_info"] if l["model"] == "pii-ner"]
    assert info and info[0]["task"] == "token_classification" and info[0]["weights"].endswith(".onnx")
    ready = {l["model"]: v for l, v in samples["predictors_model_ready"]}
    assert all(ready[m] == 1 for m in DEMO_MODELS)
    assert not any("request_id" in l or "text" in l for name in samples for l, _ in samples[name])


def test_request_ids_in_headers_bodies_errors_and_logs(server):
    url = f"{server.url}/v2/models/sentence-embedding/infer"
    status, headers, body = post(url, v2(["Nice."]), {"x-request-id": "client-id-1"})
    assert status == 200 and headers["x-request-id"] == "client-id-1" and body["id"] == "client-id-1"
    status, headers, body = post(url, v2(["Nice."], id="body-id-2"))
    assert headers["x-request-id"] == "body-id-2" and body["id"] == "body-id-2"
    status, headers, body = post(url, v2(["Nice."]))
    generated = headers["x-request-id"]
    assert len(generated) == 32 and body["id"] == generated
    status, headers, body = post(f"{server.url}/v1/models/sentence-embedding:predict", {"instances": ["Nice."]},
                                 {"x-request-id": "v1-id-3"})
    assert headers["x-request-id"] == "v1-id-3" and body["id"] == "v1-id-3"
    status, headers, body = post(url, {"inputs": []}, {"x-request-id": "bad-id-4"})
    assert status == 400 and headers["x-request-id"] == "bad-id-4" and body.get("request_id") == "bad-id-4", body
    response, trailers = grpc_infer(server, "sentence-embedding", [b"Nice."], metadata=(("x-request-id", "grpc-id-5"),))
    assert trailers["x-request-id"] == "grpc-id-5"
    response, trailers = grpc_infer(server, "sentence-embedding", [b"Nice."], request_id="grpc-body-6")
    assert response.id == "grpc-body-6" and trailers["x-request-id"] == "grpc-body-6"
    log = server.log.read_text()
    for request_id in ("client-id-1", "body-id-2", generated, "v1-id-3", "bad-id-4", "grpc-id-5"):
        assert f"request_id={request_id}]" in log, request_id


def test_json_log_format_has_one_object_per_line(demo_models, tmp_path):
    running = start_server(["--model_dir", str(demo_models / "sentence-embedding"), "--log-format", "json"],
                           tmp_path / "server.log")
    try:
        running.wait_ready()
        post(f"{running.url}/v2/models/sentence-embedding/infer", v2(["Nice."]), {"x-request-id": "json-id-1"})
        post(f"{running.url}/v2/models/sentence-embedding/infer", {"inputs": []}, {"x-request-id": "json-id-2"})
    finally:
        running.stop()
    lines = [line for line in running.log.read_text().splitlines() if line.startswith("{")]
    entries = [json.loads(line) for line in lines]
    assert entries and all({"timestamp", "level", "model", "request_id", "message"} <= set(e) for e in entries)
    for request_id in ("json-id-1", "json-id-2"):
        mine = [e for e in entries if e["request_id"] == request_id]
        assert mine and all(e["model"] == "sentence-embedding" for e in mine), request_id
    other = [line for line in running.log.read_text().splitlines() if not line.startswith("{") and "json-id" in line]
    assert other == []


def read_psi(server, model: str) -> dict[str, float]:
    samples = scrape(server.url)
    window = [v for l, v in samples["predictors_drift_window_texts"] if l["model"] == model]
    psi = {l["signal"]: v for l, v in samples["predictors_drift_psi"] if l["model"] == model}
    return {"window": window[0], **psi}


def send_texts(server, model: str, texts: list[str], per_request: int = 100) -> None:
    for start in range(0, len(texts), per_request):
        status, _, body = post(f"{server.url}/v2/models/{model}/infer", v2(texts[start : start + per_request]))
        assert status == 200, body


def test_drift_psi_low_for_the_heldout_mix_and_high_for_one_class(server):
    model = "review-sentiment"
    heldout = [json.loads(line) for line in (MODELS_DIR / model / "heldout.jsonl").read_text().splitlines() if line]
    window = int(os.environ.get("PREDICTORS_DRIFT_WINDOW", 1000))
    rng = random.Random(7)
    send_texts(server, model, [rng.choice(heldout)["text"] for _ in range(window)])  # a resample of the mix
    mixed = read_psi(server, model)
    assert mixed["window"] == window and mixed["label"] < 0.1 and mixed["score"] < 0.1, mixed
    labels = [row["label"] for row in heldout]
    rarest = min(set(labels), key=labels.count)  # the class whose share a one-class stream moves most
    one_class = [row["text"] for row in heldout if row["label"] == rarest]
    send_texts(server, model, [rng.choice(one_class) for _ in range(window)])
    skewed = read_psi(server, model)
    assert skewed["label"] > 0.25, skewed
    print(f"PSI held-out resample {mixed}; one class only {skewed}")


@pytest.fixture(scope="module", autouse=True)
def drift_references(demo_models: Path) -> None:
    missing = [m for m in DEMO_MODELS if not (demo_models / m / "drift_reference.json").is_file()]
    if missing:
        pytest.fail(f"no drift_reference.json in {missing}: the model build writes it (`make models`)")


def test_stats_prints_one_row_per_model(server):
    import subprocess
    import sys

    mixed_load(server)
    run = subprocess.run([sys.executable, "-m", "predictors", "stats", "--url", server.url, "--interval", "0.5"],
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    lines = run.stdout.splitlines()
    assert lines[0].split()[:5] == ["MODEL", "VERSION", "READY", "REQUESTS", "ERRORS"]
    rows = {line.split()[0]: line.split() for line in lines[1:]}
    assert set(DEMO_MODELS) <= set(rows)
    assert all(rows[m][2] == "yes" and float(rows[m][3]) >= 6 and float(rows[m][4]) >= 3 for m in DEMO_MODELS)
    assert all(float(rows[m][8]) > 0 for m in DEMO_MODELS)  # p99 ms
