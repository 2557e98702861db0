"""The V2 JSON fast path (serving/v2_json.py), driven with raw ASGI messages: which requests it answers
itself (a stand-in dataplane whose model echoes the texts) and which it hands to the route with their
body intact (a stand-in route that records what it read). The real server's answers on both paths are
compared byte for byte in tests/integration/test_server_http.py."""

from __future__ import annotations

import asyncio
import json

import numpy as np
from kserve.protocol.infer_type import InferOutput, InferRequest, InferResponse

from predictors.serving.errors import QueueFull, UnknownModel
from predictors.serving.transport.fast_path import V2JsonInference


class StandInDataPlane:
    """infer() answers model "m" with the texts upper-cased, or raises `fail` (UnknownModel for any
    other model, as the real lookup); encode() as kserve's."""

    def __init__(self, fail: Exception | None = None) -> None:
        self.fail = fail
        self.seen: list[tuple[str, InferRequest, dict]] = []

    async def infer(self, model_name, request, headers=None):
        self.seen.append((model_name, request, headers))
        if model_name.partition("/")[0] != "m":
            raise UnknownModel(f"model '{model_name}' is not in the repository")
        if self.fail:
            raise self.fail
        texts = [t.upper() for t in request.inputs[0].data]
        output = InferOutput("upper", [len(texts)], "BYTES", data=np.array(texts, dtype=object))
        return InferResponse(request.id or "x", model_name, [output], model_version="1",
                             use_binary_outputs=request.use_binary_outputs), {}

    def encode(self, model_name, response, headers, req_attributes):
        body, json_size = response.to_rest()
        return body, ({"inference-header-content-length": str(json_size)} if json_size is not None else {})


def body_of(texts, **extra) -> bytes:
    return json.dumps({"inputs": [{"name": "text", "datatype": "BYTES", "shape": [len(texts)], "data": texts}], **extra}).encode()


def call(body: bytes, headers: dict[str, str] | None = None, path: str = "/v2/models/m/infer", query: bytes = b"",
         dataplane: StandInDataPlane | None = None):
    """(status, headers, body, what the stand-in route read or None when it was not called)."""
    dataplane = dataplane or StandInDataPlane()
    route_read: list[bytes] = []

    async def route_stand_in(scope, receive, send):
        message = await receive()
        route_read.append(message["body"])
        await send({"type": "http.response.start", "status": 299, "headers": []})
        await send({"type": "http.response.body", "body": b"route"})

    scope = {"type": "http", "method": "POST", "path": path, "query_string": query,
             "headers": [(k.lower().encode(), v.encode()) for k, v in (headers or {"content-type": "application/json"}).items()]}
    messages = iter([{"type": "http.request", "body": body, "more_body": False}])
    sent: list[dict] = []

    async def receive():
        return next(messages, {"type": "http.disconnect"})

    async def send(message):
        sent.append(message)

    asyncio.run(V2JsonInference(route_stand_in, dataplane)(scope, receive, send))
    start = next(m for m in sent if m["type"] == "http.response.start")
    answer = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return start["status"], dict(start["headers"]), answer, (route_read[0] if route_read else None)


def test_a_plain_json_request_is_answered_without_the_route_stand_in_dataplane():
    status, headers, answer, route = call(body_of(["a", "b"], id="r1"))
    assert route is None and status == 200
    assert headers[b"content-type"] == b"application/json" and int(headers[b"content-length"]) == len(answer)
    # Every field, in the order and with the nulls the route's InferenceResponse model writes.
    assert answer == (b'{"model_name":"m","model_version":"1","id":"r1","parameters":null,"outputs":'
                      b'[{"name":"upper","shape":[2],"datatype":"BYTES","parameters":null,"data":["A","B"]}]}')


def test_a_request_without_content_type_takes_the_fast_path_as_tritonclient_sends_it_stand_in_dataplane():
    status, _, _, route = call(body_of(["a"]), headers={})
    assert status == 200 and route is None


def test_versioned_path_reaches_the_versioned_model_stand_in_dataplane():
    dataplane = StandInDataPlane()
    status, _, _, route = call(body_of(["a"]), path="/v2/models/m/versions/7/infer", dataplane=dataplane)
    assert status == 200 and route is None and dataplane.seen[0][0] == "m/versions/7"


def test_binary_outputs_carry_the_json_length_header_stand_in_dataplane():
    status, headers, answer, route = call(body_of(["ab"], parameters={"binary_data_output": True}))
    json_length = int(headers[b"inference-header-content-length"])
    assert route is None and status == 200 and b"content-type" not in headers
    assert json.loads(answer[:json_length])["outputs"][0]["parameters"]["binary_data_size"] == 6
    assert answer[json_length:] == b"\x02\x00\x00\x00AB"


def test_requests_the_fast_path_does_not_take_reach_the_route_with_their_body_stand_in_route():
    body = body_of(["a"])
    cases = [
        dict(headers={"content-type": "text/plain"}),
        dict(headers={"content-type": "application/json", "inference-header-content-length": "10"}),
        dict(headers={"content-type": "application/json", "ce-specversion": "1.0"}),
        dict(query=b"model_version=2"),
    ]
    for case in cases:
        status, _, answer, route = call(body, **case)
        assert (status, answer, route) == (299, b"route", body), case


def test_bodies_it_does_not_parse_reach_the_route_for_its_own_error_stand_in_route():
    for bad in (b"{", b'{"inputs": [{"name": "text", "datatype": "BYTES", "shape": [1]}]}', b'"\\ud800"',
                "{\"inputs\": []}".encode("utf-16")):
        status, _, _, route = call(bad)
        assert status == 299 and route == bad


def test_model_errors_are_answered_as_the_route_answers_them_stand_in_dataplane():
    status, headers, answer, route = call(body_of(["a"]), dataplane=StandInDataPlane(QueueFull("queue is full", 3.0)))
    assert route is None and status == 429 and headers[b"retry-after"] == b"3"
    assert json.loads(answer) == {"error": "queue is full"}


def test_an_unknown_model_is_answered_404_as_the_route_answers_it_stand_in_dataplane():
    status, _, answer, route = call(body_of(["a"]), path="/v2/models/unknown/infer")
    assert route is None and status == 404
    assert json.loads(answer) == {"error": "model 'unknown' is not in the repository"}
