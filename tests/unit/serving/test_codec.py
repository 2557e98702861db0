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
