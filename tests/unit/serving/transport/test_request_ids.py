"""Request ids through the real ASGI middleware on a small Starlette app, and the log formatters."""

from __future__ import annotations

import json
import logging
from pathlib import Path

from prometheus_client import REGISTRY
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from starlette.testclient import TestClient

from predictors.model import ModelConfig
from predictors.tasks import head_for
from predictors.serving import request_context as request_ids
from predictors.serving.observability import metrics
from predictors.serving.transport.request_ids import RequestIdMiddleware
from predictors.serving.observability.logs import JsonFormatter, RequestContextFilter, RequestTextFormatter

from ..observability.test_metrics import StandInModel

seen: dict[str, object] = {}


async def infer(request: Request) -> JSONResponse:
    seen["context_id"] = request_ids.current_request_id()
    body = await request.json()
    echoed = request_ids.adopt(body.get("id"), texts=len(body.get("texts", [])))
    status = 400 if body.get("fail") else 200
    return JSONResponse({"id": echoed}, status_code=status)


def client(tmp_path: Path) -> TestClient:
    config = ModelConfig(name="ids-stand-in", path=tmp_path, task="classification", labels=("a", "b"))
    model = StandInModel(name="ids-stand-in", config=config, head=head_for(config), ready=True, load_seconds=1.0, choice=None)
    metrics.track(model)
    metrics.serve_default(model.name, model.config.version)  # as the repository does when it serves
    seen["model"] = model  # tracked weakly: keep it alive for the test
    app = Starlette(routes=[Route("/v2/models/{name}/infer", infer, methods=["POST"])])
    app.add_middleware(RequestIdMiddleware)
    return TestClient(app)


def count(outcome: str) -> float:
    labels = {"model": "ids-stand-in", "version": "1", "protocol": "v2_rest", "outcome": outcome}
    return REGISTRY.get_sample_value("predictors_requests_total", labels) or 0.0


def test_header_id_is_honoured_and_echoed(tmp_path):
    http = client(tmp_path)
    reply = http.post("/v2/models/ids-stand-in/infer", json={"texts": ["x"]}, headers={"x-request-id": "abc-1"})
    assert reply.headers["x-request-id"] == "abc-1" and reply.json()["id"] == "abc-1"
    assert seen["context_id"] == "abc-1"


def test_body_id_used_when_no_header_and_generated_when_neither(tmp_path):
    http = client(tmp_path)
    reply = http.post("/v2/models/ids-stand-in/infer", json={"id": "body-7", "texts": ["x"]})
    assert reply.headers["x-request-id"] == "body-7" and reply.json()["id"] == "body-7"
    reply = http.post("/v2/models/ids-stand-in/infer", json={"texts": ["x"]})
    generated = reply.headers["x-request-id"]
    assert len(generated) == 32 and reply.json()["id"] == generated
    too_long = "x" * 500
    reply = http.post("/v2/models/ids-stand-in/infer", json={"texts": ["x"]}, headers={"x-request-id": too_long})
    assert reply.headers["x-request-id"] != too_long


def test_requests_counted_by_outcome_for_served_models_only(tmp_path):
    http = client(tmp_path)
    before_ok, before_bad = count("success"), count("client_error")
    http.post("/v2/models/ids-stand-in/infer", json={"texts": ["x", "y"]})
    http.post("/v2/models/ids-stand-in/infer", json={"texts": ["x"], "fail": True})
    http.post("/v2/models/unknown-name/infer", json={"texts": ["x"]})  # no series for client-chosen names
    assert count("success") == before_ok + 1 and count("client_error") == before_bad + 1
    assert REGISTRY.get_sample_value(
        "predictors_requests_total", {"model": "unknown-name", "version": "1", "protocol": "v2_rest", "outcome": "success"}
    ) is None
    assert REGISTRY.get_sample_value("predictors_requests_in_flight", {"model": "ids-stand-in", "version": "1"}) == 0


def test_log_formatters_carry_model_and_request_id():
    record = logging.LogRecord("kserve.predictors", logging.INFO, __file__, 1, "hello %s", ("world",), None)
    context = request_ids.begin("rid-9", "m1")
    try:
        RequestContextFilter().filter(record)
    finally:
        request_ids._current.set(None)
    line = json.loads(JsonFormatter().format(record))
    assert line["request_id"] == "rid-9" and line["model"] == "m1" and line["message"] == "hello world"
    assert line["level"] == "INFO" and line["timestamp"].endswith("+00:00")
    assert RequestTextFormatter(logging.Formatter("%(message)s")).format(record) == "hello world [model=m1 request_id=rid-9]"
    assert context.request_id == "rid-9"
