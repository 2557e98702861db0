"""The HTTP app as the server builds it (transport/server.py build_app: routes, kserve's V1/V2 routes,
error handlers, middlewares), in process with Starlette's test client, over a repository of
stand-in predictors (tests/unit/serving/stand_ins.py). The real server is tested end to end in
tests/integration/test_server_http.py."""

from __future__ import annotations

import asyncio
import logging

import pytest
from starlette.testclient import TestClient

from predictors.model.environment import ServerEnvironment
from predictors.serving.transport.dataplane import HonestDataPlane
from predictors.serving.transport.server import ServerOptions, ServerStartError, build_app

from ..stand_ins import stand_in_repository


def infer_body(texts, **extra):
    return {"inputs": [{"name": "text", "datatype": "BYTES", "shape": [len(texts)], "data": texts}], **extra}


@pytest.fixture
def served(tmp_path):
    """(client, repository): model `m` loaded and serving, model `broken` failed to load."""
    repository = stand_in_repository(tmp_path, ("m",))
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "config.json").write_text("{not json")
    repository.scan()
    asyncio.run(repository.load_all())
    stopping = []
    app = build_app(repository, HonestDataPlane(repository), ServerOptions(), ServerEnvironment(), lambda: bool(stopping))
    with TestClient(app) as client:
        yield client, repository, stopping
    for name in list(repository.entries):
        repository.unload(name)


def test_v2_infer_answers_with_the_model_and_a_request_id(served):
    client, _, _ = served
    reply = client.post("/v2/models/m/infer", json=infer_body(["hello", "hi"], id="r1"))
    assert reply.status_code == 200, reply.text
    body = reply.json()
    assert body["id"] == "r1" and body["model_name"] == "m"
    assert next(o for o in body["outputs"] if o["name"] == "label")["data"] == ["hello", "hi"]
    assert reply.headers["x-request-id"] == "r1"


def test_versioned_and_v1_routes_reach_the_same_model(served):
    client, _, _ = served
    assert client.post("/v2/models/m/versions/1/infer", json=infer_body(["a"])).status_code == 200
    assert client.post("/v1/models/m:predict", json={"instances": ["a", "b"]}).json()["predictions"][0]["label"] == "a"
    reply = client.post("/v2/models/m/versions/7/infer", json=infer_body(["a"]))
    assert reply.status_code == 404 and "no version 7 loaded" in reply.json()["error"]


def test_readiness_names_the_model_that_failed_only_in_the_index(served):
    client, _, stopping = served
    assert client.get("/v2/health/ready").json() == {"ready": True}  # a failed model does not hold readiness
    index = {row["name"]: row for row in client.get("/v2/repository/index").json()}
    assert index["broken"]["state"] == "UNAVAILABLE" and "config.json" in index["broken"]["reason"]
    stopping.append(True)
    reply = client.get("/v2/health/ready")
    assert reply.status_code == 503 and reply.json()["error"] == "shutting down"


def test_explain_on_a_model_without_an_explainer_is_a_404_without_a_traceback(served, caplog):
    client, _, _ = served
    with caplog.at_level(logging.INFO, logger="kserve"):
        reply = client.post("/v1/models/m:explain", json={"instances": ["a"]})
    assert reply.status_code == 404 and reply.json()["error"] == "model 'm' has no explainer; it answers :predict only"
    assert not [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR]
    assert client.post("/v1/models/nope:explain", json={"instances": ["a"]}).status_code == 404


def test_a_model_name_too_long_for_a_folder_is_a_400(served):
    client, _, _ = served
    reply = client.post(f"/v2/repository/models/{'x' * 300}/load")
    assert reply.status_code == 400 and "at most 255 bytes" in reply.json()["error"]


def test_bad_requests_are_json_4xx_naming_the_mistake(served):
    client, _, _ = served
    cases = {
        "duplicate output": (infer_body(["a"], outputs=[{"name": "score"}, {"name": "score"}]), 400, "requested twice"),
        "lower-case datatype": ({"inputs": [{"name": "text", "datatype": "bytes", "shape": [1], "data": ["a"]}]}, 400,
                                "upper case"),
        "unknown output": (infer_body(["a"], outputs=[{"name": "nope"}]), 400, "unknown output 'nope'"),
    }
    for what, (body, status, fragment) in cases.items():
        reply = client.post("/v2/models/m/infer", json=body)
        assert reply.status_code == status and fragment in reply.json()["error"], (what, reply.text)
    assert client.post("/v2/models/broken/infer", json=infer_body(["a"])).status_code == 503
    assert client.post("/v2/models/nope/infer", json=infer_body(["a"])).status_code == 404


def test_an_unexpected_error_is_a_json_500_from_the_boundary(served, monkeypatch):
    client, repository, _ = served

    monkeypatch.setattr(repository, "index", lambda: (_ for _ in ()).throw(OSError("stand-in failure")))
    reply = client.get("/v2/repository/index")
    assert reply.status_code == 500 and reply.json()["error"] == "internal error; the server log has the details"


def test_config_reports_the_model_and_its_scheduler(served):
    client, _, _ = served
    config = client.get("/v2/models/m/config").json()
    assert config["name"] == "m" and config["state"] == "READY" and config["scheduler"]["workers"] >= 1
    assert config["backend"] == "stand-in"


def test_several_server_processes_are_refused_with_the_reason():
    ServerOptions(workers=1).check()
    with pytest.raises(ServerStartError, match="--workers 2: this server runs one process"):
        ServerOptions(workers=2).check()


def server_timing(header: str) -> dict[str, float | None]:
    """W3C Server-Timing entries as {name: dur or None}."""
    entries = {}
    for entry in header.split(","):
        name, *params = [part.strip() for part in entry.split(";")]
        durations = [float(p[4:]) for p in params if p.startswith("dur=")]
        entries[name] = durations[0] if durations else None
    return entries


def test_every_answer_carries_its_timings(served):
    client, _, _ = served
    v2 = client.post("/v2/models/m/infer", json=infer_body(["a b", "c"]))
    timings = server_timing(v2.headers["server-timing"])
    assert list(timings)[0] == "queue" and list(timings)[-1] == "total"
    assert 0 <= timings["queue"] <= timings["total"]
    latency = v2.json()["parameters"]["latency_ms"]
    assert 0 < latency <= timings["total"]  # measured before the answer is encoded, the total as it is sent
    v1 = client.post("/v1/models/m:predict", json={"instances": ["a"]})
    assert v1.json()["latency_ms"] > 0 and "total" in server_timing(v1.headers["server-timing"])
    for reply in (client.get("/v2/models/m"), client.post("/v2/models/m/infer", json={}), client.get("/nowhere")):
        assert list(server_timing(reply.headers["server-timing"])) == ["total"]
