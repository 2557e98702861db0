"""Client mistakes and oversized requests against the real server (issue 12): each used to be a 500,
a misleading message or a pod taken down by memory; each is now a 4xx naming the mistake, a
truncated answer, or a correct answer, and the server keeps serving. Memory and time of large
inputs are measured by benchmarks/large_inputs.py, not here."""

from __future__ import annotations

import gzip
import http.client
import json
import struct
import zlib

import grpc
import numpy as np
import pytest
import requests
import tritonclient.http as triton_http
from kserve.protocol.grpc import grpc_predict_v2_pb2 as pb
from kserve.protocol.grpc import grpc_predict_v2_pb2_grpc as pb_grpc

MODEL = "sentence-embedding"
JSON = {"Content-Type": "application/json"}
PYTHON_INTERNALS = ("unpack_from", "Traceback", "invalid literal", "KeyError", "TypeError", "RecursionError")


def infer_url(server, model: str = MODEL) -> str:
    return f"{server.url}/v2/models/{model}/infer"


def v2_document(texts, **extra) -> dict:
    return {"inputs": [{"name": "text", "datatype": "BYTES", "shape": [len(texts)], "data": texts}], **extra}


def post(server, body: bytes | str, headers: dict[str, str], path: str | None = None) -> requests.Response:
    return requests.post(path or infer_url(server), data=body, headers=headers, timeout=120)


def assert_client_error(reply: requests.Response, status: int, *fragments: str) -> str:
    assert reply.status_code == status, reply.text[:500]
    message = reply.json()["error"]
    for fragment in fragments:
        assert fragment in message, message
    for internal in PYTHON_INTERNALS:
        assert internal not in message, message
    return message


def binary_request(payload: bytes, size: int) -> tuple[bytes, dict[str, str]]:
    tensor = {"name": "text", "datatype": "BYTES", "shape": [2], "parameters": {"binary_data_size": size}}
    header = json.dumps({"inputs": [tensor]}).encode()
    return header + payload, {"Inference-Header-Content-Length": str(len(header)), "Content-Type": "application/octet-stream"}


def length_prefixed(*texts: str) -> bytes:
    return b"".join(struct.pack("<I", len(t.encode())) + t.encode() for t in texts)


# ---- size limits --------------------------------------------------------------------------------
def test_a_10_mb_text_is_refused_before_parsing(server):
    body = json.dumps(v2_document(["word " * 2_000_000])).encode()
    message = assert_client_error(post(server, body, JSON), 413, "max_body_bytes", f"{len(body)} bytes")
    assert "8388608" in message


def test_a_client_that_sends_the_whole_body_before_reading_gets_the_413(server):
    """http.client (urllib) writes all of the body, then reads: it must see the 413, not a reset."""
    body = json.dumps(v2_document(["word " * 20_000_000])).encode()  # 100 MB
    connection = http.client.HTTPConnection("127.0.0.1", server.http_port, timeout=120)
    connection.request("POST", f"/v2/models/{MODEL}/infer", body=body, headers=JSON)
    reply = connection.getresponse()
    assert reply.status == 413 and "max_body_bytes" in json.loads(reply.read())["error"]
    connection.close()


def test_a_body_streamed_without_content_length_is_cut_off_at_the_limit(server):
    body = json.dumps(v2_document(["word " * 2_000_000])).encode()
    chunks = (body[i : i + 65536] for i in range(0, len(body), 65536))  # chunked transfer encoding
    assert_client_error(post(server, chunks, JSON), 413, "over the limit", "max_body_bytes")


def test_a_long_text_within_the_body_limit_is_cut_and_reported_truncated(server):
    long_text = "word " * 1_000_000  # 5 MB: under the body limit, far over max_length tokens
    reply = post(server, json.dumps(v2_document(["short", long_text])), JSON)
    assert reply.status_code == 200, reply.text[:300]
    parameters = reply.json()["parameters"]
    assert parameters["truncated_indices"] == "1" and set(parameters) == {"truncated_indices", "latency_ms"}
    v1 = requests.post(f"{server.url}/v1/models/{MODEL}:predict", json={"instances": [long_text]}, timeout=120)
    assert v1.status_code == 200 and v1.json()["predictions"][0]["truncated"] is True


def test_too_many_texts_names_the_limit(server):
    limit = requests.get(f"{server.url}/v2/models/{MODEL}/config", timeout=10).json()["max_batch"]
    assert_client_error(post(server, json.dumps(v2_document(["a"] * (limit + 1))), JSON), 400, f"at most {limit}", "max_batch")


def test_grpc_refuses_an_oversized_message_and_cuts_a_long_text(server):
    with grpc.insecure_channel(server.grpc_url, options=[("grpc.max_send_message_length", 64 << 20)]) as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)

        def request(text: str) -> pb.ModelInferRequest:
            message = pb.ModelInferRequest(model_name=MODEL)
            message.inputs.add(name="text", datatype="BYTES", shape=[1]).contents.bytes_contents.append(text.encode())
            return message

        with pytest.raises(grpc.RpcError) as refused:
            stub.ModelInfer(request("word " * 2_000_000), timeout=60)
        assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        answer = stub.ModelInfer(request("word " * 1_000_000), timeout=60)
        assert answer.parameters["truncated_indices"].string_param == "0"


# ---- content encodings ----------------------------------------------------------------------------
def test_gzip_and_deflate_bodies_are_decoded(server):
    body = json.dumps(v2_document(["Compressed request body."])).encode()
    for encoding, compressed in [("gzip", gzip.compress(body)), ("deflate", zlib.compress(body))]:
        reply = post(server, compressed, {**JSON, "Content-Encoding": encoding})
        assert reply.status_code == 200, (encoding, reply.text[:300])


def test_a_gzip_bomb_and_unknown_encodings_are_refused(server):
    bomb = gzip.compress(b" " * 100_000_000)  # 100 kB that would expand to 100 MB
    assert_client_error(post(server, bomb, {**JSON, "Content-Encoding": "gzip"}), 413, "decompresses", "max_body_bytes")
    assert_client_error(post(server, b"xx", {**JSON, "Content-Encoding": "br"}), 415, "'br' is not supported")
    assert_client_error(post(server, b"not gzip", {**JSON, "Content-Encoding": "gzip"}), 400, "not valid gzip")


# ---- malformed requests that used to be 500s or misleading ----------------------------------------
def test_lone_surrogates_in_a_text_or_the_request_id(server):
    text = '{"inputs": [{"name": "text", "datatype": "BYTES", "shape": [1], "data": ["a\\ud800b"]}]}'
    assert_client_error(post(server, text, JSON), 400, "input 'text'[0]", "lone surrogate", "\\ud800")
    request_id = '{"id": "\\udfff", "inputs": [{"name": "text", "datatype": "BYTES", "shape": [1], "data": ["ok"]}]}'
    assert_client_error(post(server, request_id, JSON), 400, "request id", "lone surrogate")
    name = '{"inputs": [{"name": "\\ud800", "datatype": "BYTES", "shape": [1], "data": ["ok"]}]}'
    assert_client_error(post(server, name, JSON), 400, "unexpected input")
    v1 = '{"instances": ["\\ud800"]}'
    reply = post(server, v1, JSON, path=f"{server.url}/v1/models/{MODEL}:predict")
    assert reply.status_code == 400 and "error" in reply.json()


def test_deeply_nested_data(server):
    body = '{"inputs": [{"name": "text", "datatype": "BYTES", "shape": [1], "data": ' + "[" * 500 + '"a"' + "]" * 500 + "}]}"
    assert_client_error(post(server, body, JSON), 400, "nested more than", "flat list")


def test_json_under_a_wrong_content_type_is_told_about_the_content_type(server):
    body = json.dumps(v2_document(["hello"]))
    assert_client_error(post(server, body, {"Content-Type": "text/plain"}), 400, "Content-Type", "'text/plain'", "application/json")


def test_json_without_a_content_type_is_read_as_json_as_tritonclient_sends_it(server):
    client = triton_http.InferenceServerClient(server.url.removeprefix("http://"))
    tensor = triton_http.InferInput("text", [2], "BYTES")
    tensor.set_data_from_numpy(np.array([b"first text", b"second text"], dtype=object), binary_data=False)
    for compression in (None, "gzip", "deflate"):
        result = client.infer(MODEL, [tensor], request_compression_algorithm=compression)
        assert result.as_numpy(result.get_response()["outputs"][0]["name"]).shape[0] == 2


def test_binary_data_size_must_match_the_binary_data(server):
    payload = length_prefixed("first", "second")
    body, headers = binary_request(payload, len(payload))
    assert post(server, body, headers).status_code == 200
    body, headers = binary_request(payload, len(payload) + 100)
    assert_client_error(post(server, body, headers), 400, "input 'text'", "binary_data_size is", "left")
    body, headers = binary_request(payload + b"extra", len(payload))
    assert_client_error(post(server, body, headers), 400, "binary_data_size must add up")


def test_malformed_binary_data_is_described_without_python_internals(server):
    payload = b"\x09\x00\x00\x00ab"
    body, headers = binary_request(payload, len(payload))
    assert_client_error(post(server, body, headers), 400, "element 0 says it is 9 bytes long")
    headers["Inference-Header-Content-Length"] = "x"
    assert_client_error(post(server, body, headers), 400, "Inference-Header-Content-Length is 'x'")


def test_the_server_still_answers_after_every_mistake(server):
    reply = post(server, json.dumps(v2_document(["Still serving after bad requests."], id="after")), JSON)
    assert reply.status_code == 200 and reply.json()["id"] == "after"


def test_a_non_ascii_request_id(server):
    document = v2_document(["hello"], id="ā-€")
    reply = post(server, json.dumps(document), JSON)
    assert reply.status_code == 200 and reply.json()["id"] == "ā-€"
    v1 = requests.post(f"{server.url}/v1/models/{MODEL}:predict", json={"instances": ["hello"], "id": "ā"}, timeout=60)
    assert v1.status_code == 200
    with grpc.insecure_channel(server.grpc_url) as channel:
        message = pb.ModelInferRequest(model_name=MODEL, id="¡")
        message.inputs.add(name="text", datatype="BYTES", shape=[1]).contents.bytes_contents.append(b"hello")
        assert pb_grpc.GRPCInferenceServiceStub(channel).ModelInfer(message, timeout=60).id == "¡"


def test_model_version_query(server):
    metadata = requests.get(f"{server.url}/v2/models/{MODEL}", params={"model_version": "1"}, timeout=60)
    assert metadata.status_code < 500, metadata.text
    reply = requests.post(infer_url(server), params={"model_version": "1"}, json=v2_document(["hello"]), timeout=60)
    assert reply.status_code < 500, reply.text
