"""Fuzzing the real server (one shared server, bounded): hypothesis-generated bodies and headers over
REST, messages built from kserve's proto over gRPC, and schemathesis over the server's own OpenAPI
document for the V2 routes. Whatever arrives, the answer is a correct one or a client error
(4xx with JSON {"error": "..."}, or a gRPC status naming the mistake), never a 5xx / INTERNAL /
UNKNOWN, and the server answers a correct request afterwards."""

from __future__ import annotations

import json

import grpc
import pytest
import requests
import schemathesis
from schemathesis import GenerationMode
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from kserve.protocol.grpc import grpc_predict_v2_pb2 as pb
from kserve.protocol.grpc import grpc_predict_v2_pb2_grpc as pb_grpc

from tests.unit.serving.test_codec_fuzz import binary_bodies, grpc_messages, json_values, v2_documents

MODELS = ["sentence-embedding", "review-sentiment", "pii-ner"]
# A few hundred requests in all; `database=None` keeps no example store in the work tree.
FUZZ = settings(max_examples=250, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
CLIENT_GRPC_CODES = {
    grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND, grpc.StatusCode.RESOURCE_EXHAUSTED,
    grpc.StatusCode.FAILED_PRECONDITION, grpc.StatusCode.UNAVAILABLE,
}
# What an HTTP client can send as a header value (visible ASCII; requests refuses the rest itself).
header_text = st.text(st.characters(min_codepoint=33, max_codepoint=126), max_size=30)


def assert_answered_or_client_error(reply: requests.Response) -> None:
    assert reply.status_code < 500, f"{reply.status_code}: {reply.text[:500]}"
    if reply.status_code >= 400:
        body = reply.json()
        assert isinstance(body.get("error"), str) and body["error"], body
    elif reply.headers.get("inference-header-content-length") is None:
        body = reply.json()
        assert "outputs" in body or "predictions" in body, body


@st.composite
def rest_requests(draw) -> tuple[str, bytes, dict[str, str]]:
    """(path, body, headers): V2 JSON documents, binary-extension bodies, V1 documents or any bytes,
    under right, wrong or missing Content-Type and Content-Encoding headers."""
    model = draw(st.sampled_from(MODELS + ["no-such-model"]))
    kind = draw(st.sampled_from(["v2-json", "v2-binary", "v1", "bytes"]))
    headers: dict[str, str] = {}
    if kind == "v2-json":
        body, path = json.dumps(draw(v2_documents())).encode(), f"/v2/models/{model}/infer"
    elif kind == "v2-binary":
        body, binary_headers, _ = draw(binary_bodies())
        path = f"/v2/models/{model}/infer"
        headers.update({k: v if v.isascii() and v.isprintable() and v.strip() == v else draw(header_text)
                        for k, v in binary_headers.items()})
    elif kind == "v1":
        document = draw(st.fixed_dictionaries({"instances": st.lists(st.text(max_size=30), max_size=4) | json_values},
                                              optional={"id": json_values}))
        body, path = json.dumps(document).encode(), f"/v1/models/{model}:predict"
    else:
        body = draw(st.binary(max_size=300))
        path = draw(st.sampled_from([f"/v2/models/{model}/infer", f"/v1/models/{model}:predict"]))
    content_type = draw(st.sampled_from(["application/json", None, "text/plain", "application/octet-stream"]) | header_text)
    if content_type is not None:
        headers["Content-Type"] = content_type
    if draw(st.integers(0, 5)) == 0:
        headers["Content-Encoding"] = draw(st.sampled_from(["gzip", "identity", "br"]) | header_text)
    if draw(st.integers(0, 7)) == 0:
        headers["Inference-Header-Content-Length"] = draw(header_text)
    return path, body, headers


def test_rest_fuzz_never_5xx(server):
    session = requests.Session()

    @FUZZ
    @given(rest_requests())
    def fuzz(case):
        path, body, headers = case
        assert_answered_or_client_error(session.post(f"{server.url}{path}", data=body, headers=headers, timeout=60))

    fuzz()
    assert_still_serving(server)


def test_grpc_fuzz_never_internal(server):
    with grpc.insecure_channel(server.grpc_url) as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)

        @FUZZ
        @given(grpc_messages(), st.sampled_from(MODELS + ["no-such-model"]))
        def fuzz(message, model):
            message.model_name = model
            try:
                answer = stub.ModelInfer(message, timeout=60)
            except grpc.RpcError as error:
                assert error.code() in CLIENT_GRPC_CODES, f"{error.code()}: {error.details()}"
                assert error.details()
            else:
                assert answer.model_name == model and answer.outputs

        fuzz()
        correct = pb.ModelInferRequest(model_name=MODELS[0], id="after-fuzz")
        correct.inputs.add(name="text", datatype="BYTES", shape=[1]).contents.bytes_contents.append(b"still here")
        assert stub.ModelInfer(correct, timeout=60).id == "after-fuzz"


def assert_still_serving(server) -> None:
    document = {"id": "after-fuzz", "inputs": [{"name": "text", "datatype": "BYTES", "shape": [1], "data": ["still here"]}]}
    reply = requests.post(f"{server.url}/v2/models/{MODELS[0]}/infer", json=document, timeout=60)
    assert reply.status_code == 200 and reply.json()["id"] == "after-fuzz"


# ---- schemathesis over the server's OpenAPI document ------------------------------------------------
# schemathesis' own pytest integration does not run under pytest 9 (it sets `node._nodeid`), so its
# strategies drive a plain hypothesis test: schema-valid and schema-violating cases for every V2 route
# except loading and unloading models, which would change the shared server for the other tests (the
# repository API has its own tests).
def test_openapi_v2_routes_never_5xx(server):
    schema = schemathesis.openapi.from_url(f"{server.url}/openapi.json")
    routes = schema.include(path_regex=r"^/v2").exclude(path_regex=r"/repository/models/")
    cases = st.one_of(routes.as_strategy(GenerationMode.POSITIVE), routes.as_strategy(GenerationMode.NEGATIVE))
    session = requests.Session()
    seen: set[str] = set()

    @settings(max_examples=300, deadline=None, database=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.data_too_large])
    @given(cases)
    def fuzz(case):
        parameters = case.path_parameters or {}
        # Half the cases address a real model, so generated bodies reach the codec, not only the 404.
        if len(str(parameters.get("model_name", ""))) % 2 == 0 and "model_name" in parameters:
            parameters["model_name"] = MODELS[len(seen) % len(MODELS)]
        if "model_version" in parameters and len(str(parameters["model_version"])) % 2 == 0:
            parameters["model_version"] = "1"
        seen.add(f"{case.method} {case.operation.path}")
        reply = case.call(base_url=server.url, session=session, timeout=60)
        assert_answered_or_client_error_any_route(reply, f"{case.method} {case.formatted_path}")

    fuzz()
    assert len(seen) >= 10, sorted(seen)  # the V2 routes were all reached, not one over and over
    assert_still_serving(server)


def assert_answered_or_client_error_any_route(reply, what: str) -> None:
    assert reply.status_code < 500, f"{what}: {reply.status_code}: {reply.text[:500]}"
    if reply.status_code >= 400:
        body = reply.json()
        assert isinstance(body.get("error"), str) and body["error"], body


def test_openapi_openai_routes_never_5xx(server):
    """schemathesis over the OpenAI routes' documented bodies: every answer is a correct one or a 4xx
    in OpenAI's error shape."""
    schema = schemathesis.openapi.from_url(f"{server.url}/openapi.json")
    routes = schema.include(path_regex=r"^/openai/v1/|^/v1/embeddings$")
    cases = st.one_of(routes.as_strategy(GenerationMode.POSITIVE), routes.as_strategy(GenerationMode.NEGATIVE))
    session = requests.Session()

    @settings(max_examples=150, deadline=None, database=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.data_too_large])
    @given(cases)
    def fuzz(case):
        body = case.body if isinstance(case.body, dict) else None
        if body is not None and len(str(body.get("model", ""))) % 2 == 0:
            body["model"] = "sentence-embedding"  # half the bodies reach the model
        reply = case.call(base_url=server.url, session=session, timeout=60)
        what = f"{case.method} {case.formatted_path}"
        assert reply.status_code < 500, f"{what}: {reply.status_code}: {reply.text[:500]}"
        if reply.status_code >= 400:
            error = reply.json()["error"]
            assert set(error) == {"message", "type", "param", "code"} and error["message"], (what, error)

    fuzz()
    assert_still_serving(server)
