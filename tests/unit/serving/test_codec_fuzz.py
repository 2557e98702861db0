"""Property-based fuzzing of the real codec functions: whatever a client sends (any JSON value, any
bytes for the binary extension, any gRPC message built from the proto), decoding either gives the
texts that were sent or raises InvalidInput (a 400 / INVALID_ARGUMENT) with a message that can be
sent back as JSON; never any other exception. Bounded: a few hundred examples per property."""

from __future__ import annotations

import json
import struct

import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from kserve.errors import InvalidInput
from kserve.protocol.grpc import grpc_predict_v2_pb2 as pb
from kserve.protocol.grpc.servicer import InferenceServicer
from kserve.protocol.infer_type import InferRequest

from predictors.serving import codec
from predictors.tasks import OutputSpec

SPECS = [OutputSpec("label", "BYTES"), OutputSpec("score", "FP32")]
MAX_BATCH = 16
# database=None: no .hypothesis/ folder in the work tree; every run explores afresh within its bound.
FUZZ = settings(max_examples=300, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])

# Any JSON value, including lone surrogates in strings and nesting a few levels deep.
json_text = st.text(alphabet=st.characters(exclude_categories=()), max_size=20)  # lone surrogates too
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | json_text,
    lambda children: st.lists(children, max_size=5) | st.dictionaries(json_text, children, max_size=5),
    max_leaves=30,
)
names = st.sampled_from(["text", "label", "score", "other"]) | json_text
datatypes = st.sampled_from(["BYTES", "FP32", "INT64", "BOOL", "FP16", "UINT8"]) | json_text
parameter_values = st.none() | st.booleans() | st.integers() | json_text | st.floats(allow_nan=False)
parameters = st.none() | st.dictionaries(
    st.sampled_from(["binary_data", "binary_data_output", "binary_data_size", "x"]), parameter_values, max_size=3
)
texts = st.lists(st.text(max_size=30), min_size=1, max_size=MAX_BATCH)


@st.composite
def v2_documents(draw) -> dict:
    """Near-valid V2 request documents: each field is usually right and sometimes anything."""

    def field(good, bad=json_values):
        return draw(st.one_of(good, bad) if draw(st.integers(0, 9)) == 0 else good)

    data = draw(texts)
    tensor = {
        "name": field(st.just("text"), names),
        "datatype": field(st.just("BYTES"), datatypes),
        "shape": field(st.just([len(data)]), st.lists(st.integers(-2, MAX_BATCH * 2), max_size=3)),
        "data": field(st.just(data), st.lists(json_values, max_size=4)),
    }
    if draw(st.booleans()):
        tensor["parameters"] = field(st.just({}), parameters)
    document = {"inputs": field(st.just([tensor]), st.lists(st.just(tensor), max_size=3))}
    outputs = st.lists(st.fixed_dictionaries({"name": st.sampled_from(["label", "score"])}), max_size=2)
    for key, good, bad in [("id", st.text(max_size=10), json_text), ("parameters", st.just({}), parameters),
                           ("outputs", outputs, st.lists(st.fixed_dictionaries({"name": names}, optional={"parameters": parameters}), max_size=3))]:
        if draw(st.booleans()):
            document[key] = field(good, bad)
    return document


def decode_or_client_error(call):
    """The decoded TextRequest, or None after a client error whose message is sendable JSON."""
    try:
        decoded = call()
    except InvalidInput as error:
        json.dumps({"error": str(error)}, ensure_ascii=False).encode("utf-8")
        event("client error")  # `pytest --hypothesis-show-statistics` shows the mix
        return None
    event("decoded")
    return decoded


def assert_answerable(request: codec.TextRequest) -> None:
    """A decoded request holds real text and its answer can be encoded on its transport."""
    assert 1 <= len(request.texts) <= MAX_BATCH
    for text in request.texts:
        text.encode("utf-8")
    n = len(request.texts)
    outputs = {"label": np.array(["x"] * n, dtype=object), "score": np.zeros(n, dtype=np.float32)}
    response = codec.encode_response(request, outputs, SPECS, "m", "1", truncated=[])
    if request.protocol == "v1":
        json.dumps(response, ensure_ascii=False).encode("utf-8")
    elif request.from_grpc:
        response.to_grpc()
    else:
        body, _ = response.to_rest()
        if isinstance(body, dict):
            json.dumps(body, ensure_ascii=False, default=str).encode("utf-8")


v1_documents = st.fixed_dictionaries(
    {"instances": texts | st.lists(json_values, max_size=4) | json_values}, optional={"id": json_values}
)


@FUZZ
@given(json_values | v1_documents)
def test_v1_any_json_value(value):
    request = decode_or_client_error(lambda: codec.decode_request(value, SPECS, MAX_BATCH))
    if request is not None:
        assert request.texts == value["instances"]
        assert_answerable(request)


@FUZZ
@given(st.binary(max_size=200) | json_values.map(lambda v: json.dumps(v).encode()))
def test_v1_any_body_bytes(body):
    request = decode_or_client_error(lambda: codec.decode_request(body, SPECS, MAX_BATCH))
    if request is not None:
        assert_answerable(request)


@FUZZ
@given(v2_documents(), st.sampled_from([None, "application/json", "text/plain"]))
def test_v2_rest_json_documents(document, content_type):
    body = json.dumps(document).encode()  # json.dumps writes lone surrogates as \\udxxx escapes
    headers = {"content-type": content_type} if content_type else {}

    def decode():
        return codec.decode_request(codec.decode_rest_v2(body, headers, "m"), SPECS, MAX_BATCH)

    request = decode_or_client_error(decode)
    if request is not None:
        assert content_type != "text/plain"
        assert request.texts == document["inputs"][0]["data"]
        assert_answerable(request)


@st.composite
def binary_bodies(draw) -> tuple[bytes, dict[str, str], list[str] | None]:
    """Binary-extension bodies: a JSON header, then length-prefixed texts, with sizes, header length
    and bytes usually right and sometimes anything."""
    data = draw(texts)
    payload = b"".join(struct.pack("<I", len(t.encode())) + t.encode() for t in data)
    if draw(st.integers(0, 3)) == 0:
        payload = draw(st.binary(max_size=100))
    size = draw(st.just(len(payload)) | st.just(len(payload)) | st.integers(-5, len(payload) + 5) | json_values)
    name, datatype = draw(st.just(("text", "BYTES")) | st.tuples(names, datatypes))
    tensor = {"name": name, "datatype": datatype, "shape": [len(data)], "parameters": {"binary_data_size": size}}
    header = json.dumps({"inputs": [tensor]}).encode()
    header_length = draw(st.just(str(len(header))) | st.just(str(len(header))) | st.integers(-3, len(header) + len(payload) + 3).map(str) | json_text)
    body = header + payload
    if draw(st.integers(0, 5)) == 0:
        body = draw(st.binary(max_size=300))
    return body, {"inference-header-content-length": header_length}, data


@FUZZ
@given(binary_bodies())
def test_v2_rest_binary_bodies(case):
    body, headers, _ = case

    def decode():
        return codec.decode_request(codec.decode_rest_v2(body, headers, "m"), SPECS, MAX_BATCH)

    request = decode_or_client_error(decode)
    if request is not None:
        assert_answerable(request)


@FUZZ
@given(st.binary(max_size=300), st.dictionaries(st.sampled_from(["content-type", "inference-header-content-length"]),
                                                st.text(max_size=12), max_size=2))
def test_v2_rest_any_bytes_any_headers(body, headers):
    request = decode_or_client_error(
        lambda: codec.decode_request(codec.decode_rest_v2(body, headers, "m"), SPECS, MAX_BATCH)
    )
    if request is not None:
        assert_answerable(request)


def test_binary_roundtrip_is_exact():
    """A correct binary body decodes to exactly its texts (the fuzzers' 'correct answer' baseline)."""
    data = ["a", "", "héllo \U0001F600", "x" * 300]
    payload = b"".join(struct.pack("<I", len(t.encode())) + t.encode() for t in data)
    header = json.dumps({"inputs": [{"name": "text", "datatype": "BYTES", "shape": [4],
                                     "parameters": {"binary_data_size": len(payload)}}]}).encode()
    request = codec.decode_rest_v2(header + payload, {"Inference-Header-Content-Length": str(len(header))}, "m")
    assert codec.decode_request(request, SPECS, MAX_BATCH).texts == data


@st.composite
def grpc_messages(draw) -> pb.ModelInferRequest:
    """ModelInferRequests from the proto: texts in `contents` or `raw_input_contents`, each field
    usually right and sometimes anything the proto allows (proto strings are UTF-8)."""
    message = pb.ModelInferRequest(model_name="m", id=draw(st.text(max_size=10)))
    if draw(st.booleans()):  # a correct request: its texts must come back exactly
        texts_sent = draw(texts)
        tensor = message.inputs.add(name="text", datatype="BYTES", shape=[len(texts_sent)])
        encoded = [t.encode() for t in texts_sent]
        if draw(st.booleans()):
            tensor.contents.bytes_contents.extend(encoded)
        else:
            message.raw_input_contents.append(b"".join(struct.pack("<I", len(e)) + e for e in encoded))
        return message
    for _ in range(draw(st.sampled_from([1, 1, 1, 0, 2]))):
        tensor = message.inputs.add(
            name=draw(st.sampled_from(["text"] * 4) | st.text(max_size=8)),
            datatype=draw(st.sampled_from(["BYTES"] * 4) | st.sampled_from(["FP32", "INT64", "FP16", "BOOL"]) | st.text(max_size=6)),
        )
        elements = draw(st.lists(st.text(max_size=20).map(str.encode), min_size=1, max_size=4)
                        | st.lists(st.binary(max_size=20), max_size=MAX_BATCH + 2))
        tensor.shape.extend(draw(st.sampled_from([[len(elements)]] * 3) | st.lists(st.integers(-2, 2**40), max_size=2)))
        how = draw(st.sampled_from(["contents", "contents", "raw", "raw-bytes", "none"]))
        if how == "contents":
            tensor.contents.bytes_contents.extend(elements)
        elif how == "raw":
            message.raw_input_contents.append(b"".join(struct.pack("<I", len(e)) + e for e in elements))
        elif how == "raw-bytes":
            message.raw_input_contents.append(draw(st.binary(max_size=80)))
        if draw(st.integers(0, 5)) == 0:
            tensor.contents.fp32_contents.extend(draw(st.lists(st.floats(width=32, allow_nan=False), max_size=3)))
    for _ in range(draw(st.integers(0, 2))):
        output = message.outputs.add(name=draw(st.sampled_from(["label", "score", "label", "nope"])))
        if draw(st.booleans()):
            output.parameters["binary_data"].bool_param = draw(st.booleans())
    if draw(st.integers(0, 4)) == 0:
        message.parameters["binary_data_output"].string_param = draw(st.text(max_size=5))
    return message


@FUZZ
@given(grpc_messages())
def test_grpc_messages_from_the_proto(message):
    # Round-trip through the wire format, as the gRPC server receives it.
    received = pb.ModelInferRequest.FromString(message.SerializeToString())

    def decode():
        InferenceServicer.validate_grpc_request(received)
        return codec.decode_request(InferRequest.from_grpc(received), SPECS, MAX_BATCH)

    request = decode_or_client_error(decode)
    if request is not None:
        assert request.from_grpc
        sent = received.raw_input_contents[0] if received.raw_input_contents else None
        if sent is None:
            assert [t.encode() for t in request.texts] == list(received.inputs[0].contents.bytes_contents)
        assert_answerable(request)


@FUZZ
@given(st.binary(max_size=400))
def test_grpc_any_wire_bytes(wire):
    try:
        received = pb.ModelInferRequest.FromString(wire)
    except Exception:  # not a message: grpc refuses it before any of our code runs
        return

    def decode():
        InferenceServicer.validate_grpc_request(received)
        return codec.decode_request(InferRequest.from_grpc(received), SPECS, MAX_BATCH)

    request = decode_or_client_error(decode)
    if request is not None:
        assert_answerable(request)


def test_proto_rejects_what_grpc_cannot_carry():
    """gRPC strings are UTF-8 on the wire, so lone surrogates never reach the codec over gRPC."""
    with pytest.raises(ValueError):
        pb.ModelInferRequest(id="\ud800").SerializeToString()
