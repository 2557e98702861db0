"""The real server over HTTP: tritonclient (JSON and binary), kserve's InferenceRESTClient, V1, curl-style
raw requests, metadata and the error paths."""

from __future__ import annotations

import asyncio
import http.client
import json
import re
import urllib.request

import numpy as np
import pytest
import tritonclient.http as triton_http
from tritonclient.utils import InferenceServerException

from tests.conftest import DEMO_MODELS, http_status

JSON = {"Content-Type": "application/json"}
SAMPLES = {
    "review-sentiment": ["This coffee is wonderful, I buy it every month.", "Stale and tasteless, a waste of money."],
    "review-sentiment-tfidf": ["Great coffee, rich and smooth. Will buy again!", "Stale and tasteless, a waste of money."],
    "news-topic": ["The central bank raised interest rates as inflation hit markets.",
                   "The striker scored twice as the club won the cup final."],
    "sentence-embedding": ["A man is playing a guitar.", "Someone plays an instrument."],
    "pii-ner": ["Contact Maria Garcia at maria.garcia@example.org or (212) 555-0198."],
}


def post(server, path, body, headers=JSON):
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    request = urllib.request.Request(f"{server.url}{path}", data=data, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=60) as reply:
            return reply.status, json.loads(reply.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")


def v2_body(texts, **extra):
    return {"inputs": [{"name": "text", "datatype": "BYTES", "shape": [len(texts)], "data": texts}], **extra}


@pytest.fixture(scope="module")
def triton(server):
    return triton_http.InferenceServerClient(f"127.0.0.1:{server.http_port}")


def test_health_and_server_metadata(server, triton):
    assert triton.is_server_live() and triton.is_server_ready()
    assert sorted(json.loads(urllib.request.urlopen(f"{server.url}/v2/models").read())["models"]) == sorted(DEMO_MODELS)
    for name in DEMO_MODELS:
        assert triton.is_model_ready(name)


@pytest.mark.parametrize("name, outputs", [
    ("review-sentiment", [("label", "BYTES", [-1]), ("score", "FP32", [-1]), ("probabilities", "FP32", [-1, 2])]),
    ("news-topic", [("label", "BYTES", [-1]), ("score", "FP32", [-1]), ("probabilities", "FP32", [-1, 5])]),
    ("review-sentiment-tfidf", [("label", "BYTES", [-1]), ("score", "FP32", [-1]), ("probabilities", "FP32", [-1, 2])]),
    ("sentence-embedding", [("embedding", "FP32", [-1, 384])]),
    ("pii-ner", [("entities", "BYTES", [-1])]),
])
def test_model_metadata(triton, name, outputs):
    metadata = triton.get_model_metadata(name)
    assert metadata["inputs"] == [{"name": "text", "datatype": "BYTES", "shape": [-1]}]
    assert [(o["name"], o["datatype"], o["shape"]) for o in metadata["outputs"]] == outputs
    assert metadata["platform"] in ("onnxruntime_onnx", "pytorch_transformers")


def test_labels_are_discoverable(server):
    config = json.loads(urllib.request.urlopen(f"{server.url}/v2/models/news-topic/config").read())
    assert config["labels"] == ["business", "entertainment", "politics", "sports", "tech"]
    assert config["task"] == "classification" and config["batch_size"] >= 1 and config["backend"] in ("onnx", "hf")


@pytest.mark.parametrize("binary", [False, True])
@pytest.mark.parametrize("name", DEMO_MODELS)
def test_tritonclient_infer_every_model(triton, name, binary):
    texts = SAMPLES[name]
    tensor = triton_http.InferInput("text", [len(texts)], "BYTES")
    tensor.set_data_from_numpy(np.array(texts, dtype=object), binary_data=binary)
    result = triton.infer(name, [tensor], request_id="abc", headers=None if binary else JSON)
    response = result.get_response()
    assert response["id"] == "abc"
    if name == "sentence-embedding":
        vectors = result.as_numpy("embedding")
        assert vectors.shape == (2, 384)
        np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, rtol=1e-4)
    elif name == "pii-ner":
        entities = json.loads(result.as_numpy("entities")[0])
        assert {"GIVEN_NAME", "EMAIL", "PHONE"} <= {e["entity"] for e in entities}
    else:
        labels = [label.decode() for label in result.as_numpy("label")]
        probabilities = result.as_numpy("probabilities")
        np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-4)
        np.testing.assert_allclose(result.as_numpy("score"), probabilities.max(axis=1), rtol=1e-5)
        assert labels == {"review-sentiment": ["great", "other"], "review-sentiment-tfidf": ["great", "other"],
                          "news-topic": ["business", "sports"]}[name]


def test_requested_outputs_and_binary_flags(triton):
    tensor = triton_http.InferInput("text", [2], "BYTES")
    tensor.set_data_from_numpy(np.array(SAMPLES["review-sentiment"], dtype=object), binary_data=True)
    wanted = [triton_http.InferRequestedOutput("score", binary_data=True),
              triton_http.InferRequestedOutput("label", binary_data=False)]
    result = triton.infer("review-sentiment", [tensor], outputs=wanted)
    outputs = result.get_response()["outputs"]
    assert [o["name"] for o in outputs] == ["score", "label"]
    assert "data" not in outputs[0] and outputs[0]["parameters"]["binary_data_size"] == 8
    assert outputs[1]["data"] == ["great", "other"]


def test_kserve_rest_client_v2(server):
    from kserve import InferenceRESTClient, InferInput, InferRequest, RESTConfig

    async def call():
        client = InferenceRESTClient(RESTConfig(protocol="v2", timeout=60))
        tensor = InferInput("text", [1], "BYTES", ["A man is playing a guitar."])
        try:
            return await client.infer(server.url, InferRequest("sentence-embedding", [tensor], request_id="k1"),
                                      model_name="sentence-embedding")
        finally:
            await client.close()

    response = asyncio.run(call())
    assert response.id == "k1"
    assert response.outputs[0].name == "embedding" and response.outputs[0].shape == [1, 384]


def test_v1_instances(server):
    status, body = post(server, "/v1/models/review-sentiment:predict", {"instances": SAMPLES["review-sentiment"]})
    assert status == 200
    assert [p["label"] for p in body["predictions"]] == ["great", "other"]
    assert abs(sum(body["predictions"][0]["probabilities"]) - 1) < 1e-4
    status, body = post(server, "/v1/models/pii-ner:predict", {"instances": ["write to ann@example.com"]})
    assert status == 200 and body["predictions"][0]["entities"][0]["text"] == "ann@example.com"


def test_truncation_is_reported(server):
    long_text = "word " * 2000
    status, body = post(server, "/v2/models/review-sentiment/infer", v2_body(["short", long_text]))
    assert status == 200 and body["parameters"]["truncated_indices"] == "1"


BAD_BODIES = [
    (v2_body([]) | {"inputs": [{"name": "text", "datatype": "BYTES", "shape": [0], "data": []}]}, "is empty"),
    ({"inputs": [{"name": "text", "datatype": "FP32", "shape": [1], "data": [1.0]}]}, "datatype BYTES"),
    ({"inputs": [{"name": "text", "datatype": "BYTES", "shape": [2], "data": ["a"]}]}, "shape [2] but 1 elements"),
    ({"inputs": [{"name": "text", "datatype": "BYTES", "shape": [1, 1], "data": ["a"]}]}, "1-D"),
    ({"inputs": [{"name": "text", "datatype": "BYTES", "shape": [1], "data": [5]}]}, "expected a string"),
    ({"inputs": [{"name": "txt", "datatype": "BYTES", "shape": [1], "data": ["a"]}]}, "unexpected input 'txt'"),
    (v2_body(["a"]) | {"inputs": v2_body(["a"])["inputs"] * 2}, "exactly one input"),
    (v2_body(["a"], outputs=[{"name": "nope"}]), "unknown output 'nope'"),
    (v2_body(["a"] * 1025), "at most 1024"),
    ({"inputs": "text"}, "error"),
    ({"no_inputs": []}, "error"),
    (b"{not json", "error"),
    (b"", "error"),
]


@pytest.mark.parametrize("body, message", BAD_BODIES)
def test_bad_v2_requests_are_400_with_error_body(server, body, message):
    status, reply = post(server, "/v2/models/review-sentiment/infer", body)
    assert status == 400, reply
    assert message in reply["error"] or message == "error" and reply["error"]


def test_bad_binary_extension_body_is_400(server):
    header = json.dumps({"inputs": [{"name": "text", "datatype": "BYTES", "shape": [1],
                                     "parameters": {"binary_data_size": 50}}]}).encode()
    for payload in (b"\x05\x00\x00\x00ab", b"\x02\x00\x00\x00\xff\xfe"):
        status, reply = post(server, "/v2/models/review-sentiment/infer", header + payload,
                             {"Content-Type": "application/octet-stream", "Inference-Header-Content-Length": str(len(header))})
        assert status == 400 and reply["error"], reply


def test_bad_v1_requests_are_400(server):
    for body in ({"instances": "text"}, {"instances": []}, {"instances": [1]}, {"text": "a"}, b"not json"):
        status, reply = post(server, "/v1/models/review-sentiment:predict", body)
        assert status == 400 and reply["error"], (body, reply)


def test_unknown_model_is_404(server, triton):
    status, reply = post(server, "/v2/models/nope/infer", v2_body(["a"]))
    assert status == 404 and "nope" in reply["error"]
    assert http_status(f"{server.url}/v2/models/nope") == 404
    assert http_status(f"{server.url}/v2/models/nope/ready") == 404
    with pytest.raises(InferenceServerException):
        triton.get_model_metadata("nope")


def test_still_serving_after_bad_requests(server, triton):
    for body, _ in BAD_BODIES:
        post(server, "/v2/models/news-topic/infer", body)
    assert triton.is_server_ready()
    status, body = post(server, "/v2/models/news-topic/infer", v2_body(SAMPLES["news-topic"]))
    assert status == 200 and body["outputs"][0]["data"] == ["business", "sports"]


def test_metrics_endpoint(server):
    text = urllib.request.urlopen(f"{server.url}/metrics").read().decode()
    assert "request_predict_seconds" in text


#: What differs between two answers to the same request: the durations.
DURATIONS = (re.compile(rb'"latency_ms":[0-9.]+'), re.compile(r"dur=[0-9.]+"))


def raw_post(server, path, body: bytes, headers=JSON):
    """(headers but date, request id and framing, body) of a 200 answer, with the measured durations
    (`latency_ms` in the body, `dur=` in Server-Timing) masked; http.client adds no Content-Type of its
    own. Framing: the route sends binary answers chunked, the fast path with a Content-Length."""
    connection = http.client.HTTPConnection("127.0.0.1", server.http_port, timeout=60)
    try:
        connection.request("POST", path, body=body, headers=headers)
        reply = connection.getresponse()
        assert reply.status == 200, reply.read()
        # the binary answer's JSON part is as long as its latency's digits
        answer = {k.lower(): DURATIONS[1].sub("dur=#", v) for k, v in reply.getheaders() if k.lower() not in (
            "date", "x-request-id", "content-length", "transfer-encoding", "inference-header-content-length")}
        assert "total;dur=#" in answer["server-timing"]
        return answer, DURATIONS[0].sub(b'"latency_ms":#', reply.read())
    finally:
        connection.close()


@pytest.mark.parametrize("extra", [
    {}, {"outputs": [{"name": "score"}]}, {"parameters": {"binary_data_output": True}},
    {"outputs": [{"name": "label", "parameters": {"binary_data": True}}, {"name": "score"}]},
], ids=["all-outputs", "requested-output", "binary-outputs", "mixed-outputs"])
@pytest.mark.parametrize("name", DEMO_MODELS)
def test_json_fast_path_answers_byte_for_byte_as_the_full_route(server, name, extra):
    """A plain V2 JSON request is answered by serving/v2_json.py; the same request with
    `?model_version=` goes through kserve's FastAPI route. Same headers, same bytes."""
    if name != "review-sentiment" and extra.get("outputs"):
        extra = {"outputs": [{**o, "name": SPECS_FIRST_OUTPUT[name]} for o in extra["outputs"][:1]]}
    version = json.loads(urllib.request.urlopen(f"{server.url}/v2/models/{name}").read())["versions"][0]
    body = json.dumps(v2_body(SAMPLES[name], id="same-id", **extra)).encode()
    raw_post(server, f"/v2/models/{name}/infer", body)  # cached from now on (where the model caches): the same stages below
    fast = raw_post(server, f"/v2/models/{name}/infer", body)
    route = raw_post(server, f"/v2/models/{name}/infer?model_version={version}", body)
    assert fast == route
    assert raw_post(server, f"/v2/models/{name}/versions/{version}/infer", body) == route
    assert raw_post(server, f"/v2/models/{name}/infer", body, headers={}) == route  # tritonclient sends no Content-Type


SPECS_FIRST_OUTPUT = {"news-topic": "label", "review-sentiment-tfidf": "label", "sentence-embedding": "embedding",
                      "pii-ner": "entities"}


def test_v2_and_v1_answers_carry_their_latency_and_stage_timings(server):
    texts = SAMPLES["review-sentiment"] + [f"a text no request sent before {id(server)}"]
    status, body = post(server, "/v2/models/review-sentiment/infer", v2_body(texts))
    assert status == 200 and body["parameters"]["latency_ms"] > 0
    request = urllib.request.Request(f"{server.url}/v1/models/news-topic:predict", headers=JSON,
                                     data=json.dumps({"instances": [f"Markets rallied {id(server)}"]}).encode())
    with urllib.request.urlopen(request, timeout=60) as reply:
        assert json.loads(reply.read())["latency_ms"] > 0
        timings = dict(part.strip().split(";dur=") for part in reply.headers["server-timing"].split(","))
    # a text that was not cached ran through every stage
    assert list(timings) == ["queue", "tokenize", "backend", "postprocess", "total"]
    assert all(float(v) >= 0 for v in timings.values())
    assert float(timings["tokenize"]) + float(timings["backend"]) + float(timings["postprocess"]) <= float(timings["total"])
