"""The OpenAI-compatible API as the server builds it (transport/openai_api.py inside build_app), in
process with Starlette's test client, over stand-in predictors: an embedding model `e`, a
classification model `m`. The official `openai` client and LangChain against the real server and
model: tests/integration/test_openai_api.py."""

from __future__ import annotations

import asyncio
import base64

import numpy as np
import pytest
from prometheus_client import REGISTRY
from starlette.testclient import TestClient

from predictors.model.environment import ServerEnvironment
from predictors.serving.transport.dataplane import HonestDataPlane
from predictors.serving.transport.server import ServerOptions, build_app

from ..stand_ins import stand_in_repository

TEXTS = ["A man is playing a guitar.", "Hi", "Someone plays an instrument on the stage tonight."]


@pytest.fixture
def served(tmp_path):
    repository = stand_in_repository(tmp_path, ("m",), embedders=("e",),
                                     predictor_yaml="cache: {enabled: true}\nmax_batch: 4\n")
    asyncio.run(repository.load_all())
    app = build_app(repository, HonestDataPlane(repository), ServerOptions(), ServerEnvironment(), lambda: False)
    with TestClient(app) as client:
        yield client, repository
    for name in list(repository.entries):
        repository.unload(name)


def v2_vectors(client, texts):
    reply = client.post("/v2/models/e/infer", json={"inputs": [
        {"name": "text", "datatype": "BYTES", "shape": [len(texts)], "data": texts}]})
    assert reply.status_code == 200, reply.text
    output = reply.json()["outputs"][0]
    return np.array(output["data"]).reshape(output["shape"])


def assert_openai_error(reply, status, param=None, code=None, says=""):
    assert reply.status_code == status, reply.text
    error = reply.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}, error
    assert error["param"] == param and (code is None or error["code"] == code), error
    assert says in error["message"], error
    return error


@pytest.mark.parametrize("prefix", ["/openai/v1", "/v1"])
def test_vectors_equal_the_v2_answer_as_floats_and_base64(served, prefix):
    client, _ = served
    expected = v2_vectors(client, TEXTS)
    floats = client.post(f"{prefix}/embeddings", json={"model": "e", "input": TEXTS})
    assert floats.status_code == 200, floats.text
    body = floats.json()
    assert body["object"] == "list" and body["model"] == "e"
    assert [d["index"] for d in body["data"]] == [0, 1, 2] and {d["object"] for d in body["data"]} == {"embedding"}
    assert [d["embedding"] for d in body["data"]] == expected.tolist()  # the same doubles, not float32 reprs
    packed = client.post(f"{prefix}/embeddings", json={"model": "e", "input": TEXTS, "encoding_format": "base64"}).json()
    decoded = np.array([np.frombuffer(base64.b64decode(d["embedding"]), "<f4") for d in packed["data"]])
    assert decoded.astype(np.float64).tolist() == expected.tolist()
    # the stand-in runs words + 2 tokens per text; a cached text counts as well
    assert body["usage"] == packed["usage"] == {"prompt_tokens": sum(len(t.split()) + 2 for t in TEXTS),
                                                "total_tokens": sum(len(t.split()) + 2 for t in TEXTS)}
    assert "server-timing" in floats.headers and floats.headers["x-request-id"]


def test_a_single_string_and_token_ids(served):
    client, _ = served
    one = client.post("/v1/embeddings", json={"model": "e", "input": "w5 w7"}).json()
    ids = client.post("/v1/embeddings", json={"model": "e", "input": [0, 5, 7, 1]}).json()  # special tokens dropped
    many = client.post("/v1/embeddings", json={"model": "e", "input": [[5, 7], [9]]}).json()
    assert one["data"][0]["embedding"] == ids["data"][0]["embedding"] == many["data"][0]["embedding"]
    assert many["data"][1]["embedding"] == v2_vectors(client, ["w9"])[0].tolist()


@pytest.mark.parametrize("body, status, param, says", [
    ({"input": "x"}, 400, "model", "model"),
    ({"model": "e"}, 400, "input", "input"),
    ({"model": "e", "input": 3}, 400, "input", "a string, a list of strings, or token ids"),
    ({"model": "e", "input": ["a", 1]}, 400, "input", "a string, a list of strings, or token ids"),
    ({"model": "e", "input": []}, 400, "input", "input is empty"),
    ({"model": "e", "input": [[]]}, 400, "input", "empty list of token ids"),
    ({"model": "e", "input": [5, 100]}, 400, "input", "outside the vocabulary"),
    ({"model": "e", "input": ["a"] * 5}, 400, "input", "at most 4 per request (max_batch)"),
    ({"model": "e", "input": "x", "encoding_format": "hex"}, 400, "encoding_format", "encoding_format"),
    ({"model": "e", "input": "x", "dimensions": 4}, 400, "dimensions", "not trained with Matryoshka"),
    ({"model": "e", "input": "x", "dimensions": 0}, 400, "dimensions", "dimensions"),
    ({"model": "e", "input": "x", "tools": []}, 400, "tools", "unrecognized request argument supplied: tools"),
    ({"model": "nope", "input": "x"}, 404, "model", "not in the repository"),
    ({"model": "m", "input": "x"}, 404, "model", "does not embed texts"),
])
def test_mistakes_are_openai_errors_naming_the_field(served, body, status, param, says):
    client, _ = served
    error = assert_openai_error(client.post("/openai/v1/embeddings", json=body), status, param, says=says)
    assert error["type"] == "invalid_request_error"
    if status == 404:
        assert error["code"] == "model_not_found"


def test_the_full_dimension_is_accepted(served):
    client, _ = served
    reply = client.post("/v1/embeddings", json={"model": "e", "input": "x", "dimensions": 8})
    assert reply.status_code == 200 and len(reply.json()["data"][0]["embedding"]) == 8


def test_errors_before_the_route_are_in_openai_shape_with_the_v2_status(served):
    client, _ = served
    assert_openai_error(client.post("/openai/v1/embeddings", content=b"{not json"), 400, says="not valid JSON")
    assert_openai_error(client.get("/v1/embeddings"), 405, code="method_not_allowed")
    assert_openai_error(client.post("/openai/v1/completions", json={}), 404, code="not_found")
    big = b'{"model": "e", "input": "' + b"x" * (9 * 1024 * 1024) + b'"}'
    error = assert_openai_error(client.post("/v1/embeddings", content=big), 413, says="max_body_bytes")
    assert error["type"] == "invalid_request_error"
    # KServe V1 under /v1 keeps its own shape
    assert isinstance(client.post("/v1/models/nope:predict", json={"instances": ["x"]}).json()["error"], str)


def test_a_full_queue_is_refused_at_the_models_door_with_429(served):
    client, repository = served
    door = repository.get_model("e").scheduler.door
    door.arriving_texts += 10**9  # as many texts of requests let in and not yet queued
    try:
        reply = client.post("/v1/embeddings", json={"model": "e", "input": "x"})
    finally:
        door.arriving_texts -= 10**9
    error = assert_openai_error(reply, 429, code="rate_limit_exceeded", says="overloaded")
    assert error["type"] == "rate_limit_error" and int(reply.headers["retry-after"]) >= 1


def test_model_lists(served):
    client, _ = served
    openai = client.get("/openai/v1/models").json()
    assert openai["object"] == "list" and [m["id"] for m in openai["data"]] == ["e"]
    assert set(openai["data"][0]) == {"id", "object", "created", "owned_by"} and openai["data"][0]["created"] > 0
    assert "models" not in openai
    both = client.get("/v1/models").json()  # KServe V1's list and OpenAI's in one body
    assert sorted(both["models"]) == ["e", "m"] and [m["id"] for m in both["data"]] == ["e"]
    assert client.get("/openai/v1/models/e").json()["id"] == "e"
    assert_openai_error(client.get("/openai/v1/models/m"), 404, "model", "model_not_found")


def test_openai_requests_are_counted_under_their_model_and_protocol(served):
    client, _ = served

    def counts():
        labels = {"model": "e", "version": "1", "protocol": "openai"}
        return (REGISTRY.get_sample_value("predictors_requests_total", {**labels, "outcome": "success"}),
                REGISTRY.get_sample_value("predictors_requests_total", {**labels, "outcome": "client_error"}),
                REGISTRY.get_sample_value("predictors_texts_total", {**labels, "outcome": "success"}))

    before = counts()
    client.post("/v1/embeddings", json={"model": "e", "input": ["x", "y"]})
    client.post("/v1/embeddings", json={"model": "e", "input": "x", "dimensions": 3})
    assert [after - earlier for after, earlier in zip(counts(), before)] == [1, 1, 2]
    assert REGISTRY.get_sample_value("predictors_requests_in_flight", {"model": "e", "version": "1"}) == 0


def test_a_request_the_cache_answers_says_so_in_its_timings(served):
    client, _ = served
    first = client.post("/v1/embeddings", json={"model": "e", "input": ["fresh text", "other"]})
    assert "queue;dur=" in first.headers["server-timing"]
    again = client.post("/v1/embeddings", json={"model": "e", "input": ["fresh text"]})
    assert again.headers["server-timing"].startswith('cache;desc="1 of 1 texts", total;dur=')
    assert again.json()["usage"]["prompt_tokens"] == 4  # counted from the cached entry
