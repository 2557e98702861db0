from __future__ import annotations

import json

import numpy as np
import pytest
from kserve.errors import InvalidInput
from kserve.protocol.grpc import grpc_predict_v2_pb2 as pb
from kserve.protocol.infer_type import InferInput, InferRequest, RequestedOutput, serialize_byte_tensor

from predictors.serving import codec
from predictors.tasks import OutputSpec

SPECS = [OutputSpec("label", "BYTES"), OutputSpec("score", "FP32"), OutputSpec("probabilities", "FP32", (2,))]


def v2(data, shape=None, name="text", datatype="BYTES", outputs=None, parameters=None):
    tensor = InferInput(name, [len(data)] if shape is None else shape, datatype, data)
    return InferRequest("m", [tensor], request_id="req-1", request_outputs=outputs, parameters=parameters)


def test_rest_json_strings():
    request = codec.decode_request(v2(["a", "b"]), SPECS, 8)
    assert (request.texts, request.protocol, request.request_id) == (["a", "b"], "v2", "req-1")


def test_nested_data_is_flattened():
    assert codec.decode_request(v2([["a"], ["b"]], shape=[2]), SPECS, 8).texts == ["a", "b"]


def test_grpc_bytes_contents_and_raw():
    message = pb.ModelInferRequest(model_name="m", id="g")
    tensor = message.inputs.add(name="text", datatype="BYTES", shape=[2])
    tensor.contents.bytes_contents.extend(["héllo".encode(), b"x"])
    assert codec.decode_request(InferRequest.from_grpc(message), SPECS, 8).texts == ["héllo", "x"]

    raw = pb.ModelInferRequest(model_name="m")
    raw.inputs.add(name="text", datatype="BYTES", shape=[2])
    raw.raw_input_contents.append(serialize_byte_tensor(np.array([b"one", "twö".encode()], dtype=object)).item())
    decoded = codec.decode_request(InferRequest.from_grpc(raw), SPECS, 8)
    assert decoded.texts == ["one", "twö"] and decoded.from_grpc


def test_rest_binary_extension():
    payload = serialize_byte_tensor(np.array([b"first", b"second"], dtype=object)).item()
    header = json.dumps({"inputs": [{"name": "text", "datatype": "BYTES", "shape": [2],
                                     "parameters": {"binary_data_size": len(payload)}}]}).encode()
    request = InferRequest.from_bytes(header + payload, len(header), "m")
    assert codec.decode_request(request, SPECS, 8).texts == ["first", "second"]


@pytest.mark.parametrize(
    "request_, message",
    [
        (InferRequest("m", []), "expected exactly one input"),
        (InferRequest("m", [InferInput("text", [1], "BYTES", ["a"]), InferInput("x", [1], "BYTES", ["b"])]), "exactly one input"),
        (v2(["a"], name="sentence"), "unexpected input 'sentence'"),
        (v2([1.0], datatype="FP32"), "must have datatype BYTES"),
        (v2(["a", "b"], shape=[1, 2]), "must be 1-D"),
        (v2(["a", "b"], shape=[3]), "has shape [3] but 2 elements"),
        (v2([], shape=[0]), "is empty"),
        (v2(["a", 3]), "input 'text'[1] is int, expected a string"),
        (v2([b"\xff"]), "not valid UTF-8"),
        (v2(["a"] * 9), "at most 8 per request"),
        (v2(["a"], outputs=[RequestedOutput("logits")]), "unknown output 'logits'"),
    ],
)
def test_v2_violations_are_client_errors(request_, message):
    with pytest.raises(InvalidInput) as error:
        codec.decode_request(request_, SPECS, 8)
    assert message in str(error.value)


def test_v1_instances_and_errors():
    assert codec.decode_request({"instances": ["a"], "id": 7}, SPECS, 8).request_id == "7"
    assert codec.decode_request(b'{"instances": ["a"]}', SPECS, 8).texts == ["a"]
    for body, message in [({"inputs": []}, "V1 request must be"), ({"instances": "a"}, "must be a list"),
                          ({"instances": [None]}, "is NoneType"), (b"{not json", "not JSON")]:
        with pytest.raises(InvalidInput, match=message):
            codec.decode_request(body, SPECS, 8)


OUTPUTS = {"label": np.array(["great", "other"], dtype=object), "score": np.array([0.9, 0.8], dtype=np.float32),
           "probabilities": np.array([[0.9, 0.1], [0.2, 0.8]], dtype=np.float32)}


def test_v2_response_honours_requested_outputs_and_echoes_id():
    request = codec.decode_request(v2(["a", "b"], outputs=[RequestedOutput("score")]), SPECS, 8)
    response = codec.encode_response(request, OUTPUTS, SPECS, "m", "1", truncated=[1])
    body, _ = response.to_rest()
    assert body["id"] == "req-1" and [o["name"] for o in body["outputs"]] == ["score"]
    assert body["parameters"] == {"truncated_indices": "1"}
    np.testing.assert_allclose(body["outputs"][0]["data"], [0.9, 0.8], rtol=1e-6)


def test_request_level_binary_flag_applies_to_requested_outputs():
    request = codec.decode_request(
        v2(["a", "b"], outputs=[RequestedOutput("label")], parameters={"binary_data_output": True}), SPECS, 8)
    body, json_length = codec.encode_response(request, OUTPUTS, SPECS, "m", "1", []).to_rest()
    assert isinstance(body, bytes) and json_length is not None


def test_v1_response():
    request = codec.decode_request({"instances": ["a", "b"]}, SPECS, 8)
    body = codec.encode_response(request, OUTPUTS, SPECS, "m", "1", truncated=[0])
    assert body["predictions"][0] == {"label": "great", "score": pytest.approx(0.9), "probabilities": pytest.approx([0.9, 0.1]),
                                      "truncated": True}
    assert "truncated" not in body["predictions"][1]


def test_json_outputs_are_strings_in_v2_and_objects_in_v1():
    specs = [OutputSpec("entities", "BYTES", json=True)]
    entities = np.empty(1, dtype=object)
    entities[0] = [{"entity": "EMAIL", "start": 0, "end": 3}]
    outputs = {"entities": entities}
    v2_body, _ = codec.encode_response(codec.decode_request(v2(["a@b"]), specs, 8), outputs, specs, "m", "1", []).to_rest()
    assert json.loads(v2_body["outputs"][0]["data"][0]) == [{"entity": "EMAIL", "start": 0, "end": 3}]
    v1_body = codec.encode_response(codec.decode_request({"instances": ["a@b"]}, specs, 8), outputs, specs, "m", "1", [])
    assert v1_body["predictions"][0]["entities"] == [{"entity": "EMAIL", "start": 0, "end": 3}]


# ---- client mistakes that used to be 500s or leak Python internals (issue 12) --------------------------
def rest_json(document: dict | str, content_type: str | None = None, model: str = "m"):
    body = document.encode() if isinstance(document, str) else json.dumps(document).encode()
    headers = {"content-type": content_type} if content_type else {}
    return codec.decode_rest_v2(body, headers, model)


def binary_body(payload: bytes, size: int | None = None, header: str | None = None, extra: dict | None = None):
    tensor = {"name": "text", "datatype": "BYTES", "shape": [2],
              "parameters": {"binary_data_size": len(payload) if size is None else size}}
    document = json.dumps({"inputs": [tensor], **(extra or {})}).encode()
    headers = {"Inference-Header-Content-Length": header or str(len(document)), "Content-Type": "application/octet-stream"}
    return codec.decode_rest_v2(document + payload, headers, "m")


def assert_client_error(call, *fragments: str) -> str:
    with pytest.raises(InvalidInput) as error:
        call()
    message = str(error.value)
    for fragment in fragments:
        assert fragment in message, message
    message.encode("utf-8")  # the error answer itself must be sendable
    for internal in ("unpack_from", "Traceback", "invalid literal for int", "KeyError", "TypeError"):
        assert internal not in message, message
    return message


def test_lone_surrogate_in_a_text_or_the_request_id_is_a_client_error():
    assert_client_error(lambda: codec.decode_request(v2(["ok", "a\ud800b"]), SPECS, 8), "input 'text'[1]", "\\ud800", "character 1")
    request = v2(["fine"])
    request.id = "id-\udfff"
    assert_client_error(lambda: codec.decode_request(request, SPECS, 8), "request id", "\\udfff")
    assert_client_error(lambda: codec.decode_request({"instances": ["x"], "id": "\ud800"}, SPECS, 8), "request id")
    assert_client_error(lambda: codec.decode_request({"instances": ["\ud83d"]}, SPECS, 8), '"instances"[0]')
    # A surrogate pair is a real character and stays fine.
    assert codec.decode_request(v2(["smile \U0001F600"]), SPECS, 8).texts == ["smile \U0001F600"]


def test_names_echoed_in_errors_are_escaped_and_short():
    message = assert_client_error(lambda: codec.decode_request(v2(["a"], name="\ud800" + "n" * 5000), SPECS, 8), "unexpected input")
    assert len(message) < 300
    assert_client_error(lambda: codec.decode_request(v2(["a"], outputs=[RequestedOutput("\udc00")]), SPECS, 8), "unknown output")


def test_deep_nesting_is_a_client_error_not_a_recursion_error():
    data: list = ["a"]
    for _ in range(500):
        data = [data]
    assert_client_error(lambda: codec.decode_request(v2(data, shape=[1]), SPECS, 8), "nested more than", "flat list")
    assert codec.decode_request(v2([[["a"]], [["b"]]], shape=[2]), SPECS, 8).texts == ["a", "b"]


def test_v1_body_parsing_is_depth_bounded():
    assert_client_error(lambda: codec.decode_request(b'{"instances": ' + b"[" * 5000 + b"]" * 5000 + b"}", SPECS, 8), "not JSON")


def test_binary_output_flags_must_be_booleans():
    assert_client_error(lambda: codec.decode_request(v2(["a"], parameters={"binary_data_output": "no"}), SPECS, 8),
                        "binary_data_output", "true or false")
    output = RequestedOutput("label", parameters={"binary_data": 1})
    assert_client_error(lambda: codec.decode_request(v2(["a"], outputs=[output]), SPECS, 8), "binary_data")


def test_rest_json_without_content_type_is_read_as_json_and_wrong_content_type_is_named():
    document = {"id": "j", "inputs": [{"name": "text", "datatype": "BYTES", "shape": [1], "data": ["hi"]}]}
    assert codec.decode_request(rest_json(document), SPECS, 8).texts == ["hi"]
    assert codec.decode_request(rest_json(document, "application/json; charset=utf-8"), SPECS, 8).request_id == "j"
    assert_client_error(lambda: rest_json(document, "text/plain"), "Content-Type", "'text/plain'", "application/json")
    assert_client_error(lambda: rest_json('{"inputs": [{"name": "text"}]}'), "not a V2 inference request", "inputs.0.shape")
    assert_client_error(lambda: rest_json('{"id": "\\ud800", "inputs": []}'), "not a V2 inference request")
    assert_client_error(lambda: rest_json("[" * 1000 + "]" * 1000), "not a V2 inference request")


def test_rest_binary_extension_sizes_must_match_the_data():
    payload = serialize_byte_tensor(np.array([b"first", b"second"], dtype=object)).item()
    assert codec.decode_request(binary_body(payload), SPECS, 8).texts == ["first", "second"]
    assert_client_error(lambda: binary_body(payload, size=len(payload) + 50), "input 'text'", "binary_data_size is", "left")
    assert_client_error(lambda: binary_body(payload, size=len(payload) - 3), "binary_data_size must add up")
    assert_client_error(lambda: binary_body(payload, size=-1), "binary_data_size must be a byte count")
    assert_client_error(lambda: binary_body(payload, header="x"), "Inference-Header-Content-Length is 'x'")
    assert_client_error(lambda: binary_body(payload, header="999999"), "Inference-Header-Content-Length")
    assert_client_error(lambda: binary_body(payload, header="3"), "JSON header", "not a V2 inference request")


def test_malformed_length_prefixes_are_described_without_python_internals():
    bad_length = b"\x09\x00\x00\x00ab"
    assert_client_error(lambda: codec.decode_request(binary_body(bad_length), SPECS, 8), "element 0 says it is 9 bytes long")
    assert_client_error(lambda: codec.decode_request(binary_body(b"\x01\x00"), SPECS, 8), "4-byte length prefix")
    grpc_raw = pb.ModelInferRequest(model_name="m")
    grpc_raw.inputs.add(name="text", datatype="BYTES", shape=[2])
    grpc_raw.raw_input_contents.append(b"\x02\x00\x00\x00ok\xff\xff\xff\xff")
    assert_client_error(lambda: codec.decode_request(InferRequest.from_grpc(grpc_raw), SPECS, 8), "element 1 says")


def test_empty_binary_elements_cannot_build_more_than_max_batch_texts():
    assert_client_error(lambda: codec.decode_request(binary_body(b"\x00" * 4 * 100_000), SPECS, 8), "at most 8", "max_batch")


def test_an_output_requested_twice_is_a_client_error():
    assert_client_error(
        lambda: codec.decode_request(v2(["a"], outputs=[RequestedOutput("score"), RequestedOutput("score")]), SPECS, 8),
        "output 'score' is requested twice",
    )


@pytest.mark.parametrize("datatype", ["bytes", "Bytes"])
def test_datatypes_are_upper_case_as_the_protocol_spells_them(datatype):
    document = {"inputs": [{"name": "text", "datatype": datatype, "shape": [1], "data": ["hi"]}]}
    assert_client_error(lambda: codec.decode_rest_v2_json(json.dumps(document).encode(), "m"),
                        f"datatype '{datatype}'", "upper case")
    assert_client_error(lambda: rest_json(document), f"datatype '{datatype}'")
