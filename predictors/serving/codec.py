"""Wire formats <-> a list of texts, and typed outputs <-> V2 / V1 responses.

V2 arrives from three transports: REST JSON (strings), REST with the binary tensor extension
(`decode_rest_v2` reads both bodies into a kserve InferRequest), and gRPC (bytes, in `contents` or
raw). V1 arrives as a dict `{"instances": [...]}`. Everything a client can get wrong is reported as
kserve's InvalidInput, which both transports turn into a client error (HTTP 400, gRPC
INVALID_ARGUMENT), with a message about the request, never Python internals. A client's own strings
appear in messages only through `shown` (repr-escaped and shortened), so a lone surrogate or a
megabyte-long name cannot break the error response itself.
"""

from __future__ import annotations

import json
import re
import struct
from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np
import orjson
from kserve.errors import InvalidInput
from kserve.protocol.infer_type import InferInput, InferOutput, InferRequest, InferResponse, RequestedOutput
from kserve.protocol.rest.v2_datamodels import InferenceRequest, RequestInput
from pydantic import ValidationError

from ..tasks import OutputSpec
from .seams import raw_bytes, set_raw_bytes

INPUT_NAME = "text"
INPUT_DATATYPE = "BYTES"
BINARY_HEADER = "inference-header-content-length"
# The input is 1-D; nesting beyond a few levels is a mistake, and unbounded nesting must not recurse.
MAX_DATA_DEPTH = 8
_SURROGATE = re.compile("[\ud800-\udfff]")
_JSON_CONTENT_TYPE = re.compile(r"^application/([\w.+-]*\+)?json\b", re.IGNORECASE)


def shown(value: Any, limit: int = 60) -> str:
    """A client-supplied value for an error message: repr-escaped (lone surrogates, control
    characters) and shortened."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"


def _check_unicode(value: str, where: str) -> str:
    """JSON allows `\\ud800`, but a lone surrogate is no text: it cannot be tokenized or sent back as UTF-8."""
    found = _SURROGATE.search(value)
    if found:
        raise InvalidInput(
            f"{where} holds a lone surrogate escape \\u{ord(found.group()):04x} at character {found.start()}: "
            "text must be valid Unicode (a surrogate pair or the character itself)"
        )
    return value


@dataclass
class TextRequest:
    """A decoded request: the texts plus what the response must echo or honour."""

    texts: list[str]
    protocol: str  # "v2" or "v1"
    request_id: str | None = None
    requested_outputs: list[RequestedOutput] | None = None
    binary_outputs: bool = False
    from_grpc: bool = False


def input_metadata() -> list[dict[str, Any]]:
    return [{"name": INPUT_NAME, "datatype": INPUT_DATATYPE, "shape": [-1]}]


def decode_request(payload: InferRequest | dict, specs: list[OutputSpec], max_batch: int) -> TextRequest:
    if isinstance(payload, InferRequest):
        return _decode_v2(payload, specs, max_batch)
    if isinstance(payload, (bytes, str)):  # a V1 body sent without a JSON content type
        try:
            payload = orjson.loads(payload)  # depth-bounded; rejects lone surrogates and bad UTF-8
        except orjson.JSONDecodeError as exc:
            raise InvalidInput(f"request body is not JSON: {exc}") from None
    if isinstance(payload, dict):
        return _decode_v1(payload, max_batch)
    raise InvalidInput(f"unsupported request body of type {type(payload).__name__}")


def _too_many(where: str, count: int | str, max_batch: int) -> InvalidInput:
    return InvalidInput(f"{where} has {count} texts; this model accepts at most {max_batch} per request (max_batch)")


class _BinaryRequestInput(RequestInput):
    data: list | None = None  # absent when the tensor follows the JSON as binary_data_size bytes


class _BinaryInferenceRequest(InferenceRequest):
    """The JSON header of a binary-extension body: kserve's InferenceRequest, `data` optional."""

    inputs: list[_BinaryRequestInput]


def describe_validation_errors(error: ValidationError) -> str:
    """pydantic's errors as `location: message`, without echoing the (possibly huge) input."""
    return "; ".join(
        f"{'.'.join(str(p) for p in item['loc']) or 'body'}: {item['msg']}" for item in error.errors(include_input=False)
    )


def decode_rest_v2(body: InferenceRequest | bytes, headers: Mapping[str, str], model_name: str) -> InferRequest:
    """A V2 REST body as FastAPI hands it over: an InferenceRequest when it parsed a JSON body, else
    the raw bytes (the binary tensor extension, or JSON under another or no Content-Type)."""
    if isinstance(body, InferenceRequest):
        return _infer_request(body, model_name)
    headers = {k.lower(): v for k, v in headers.items()}
    if BINARY_HEADER in headers:
        return _from_binary_body(body, headers[BINARY_HEADER], model_name)
    content_type = headers.get("content-type")
    if content_type and not _JSON_CONTENT_TYPE.match(content_type):
        raise InvalidInput(
            f"a V2 request body is JSON sent with Content-Type: application/json, got Content-Type "
            f"{shown(content_type)}; a binary-extension body sets the Inference-Header-Content-Length header"
        )
    # No Content-Type (tritonclient.http sends none for JSON requests; Triton reads such bodies as JSON),
    # or a JSON body that FastAPI read as a string.
    return _infer_request(_parse_json(body, _BinaryInferenceRequest, "the request body"), model_name)


def decode_rest_v2_json(body: bytes, model_name: str) -> InferRequest:
    """A V2 JSON body (every input with `data`) parsed straight from its bytes, as the fast path
    (v2_json.py) takes it. Stricter than FastAPI's JSON parsing (UTF-8 only, no lone surrogates):
    the fast path hands what this refuses to the full route, which gives the answer."""
    return _infer_request(_parse_json(body, InferenceRequest, "the request body"), model_name)


def _parse_json(data: bytes, model: type[InferenceRequest], what: str) -> InferenceRequest:
    try:  # pydantic's parser: depth-bounded, rejects lone surrogates and bad UTF-8
        return model.model_validate_json(data)
    except ValidationError as exc:
        raise InvalidInput(f"{what} is not a V2 inference request: {describe_validation_errors(exc)}") from None


def check_datatype(name: str, datatype: str) -> None:
    """The protocol's datatypes are upper case (BYTES, FP32...); kserve would upper-case any spelling."""
    if datatype != datatype.upper():
        raise InvalidInput(
            f"input {shown(name)} has datatype {shown(datatype)}; V2 datatypes are upper case (this model takes BYTES)"
        )


def _infer_request(body: InferenceRequest, model_name: str, raw: dict[int, bytes] | None = None) -> InferRequest:
    """kserve's InferRequest from a parsed body; `raw` holds binary-extension bytes by input index."""
    inputs = []
    for index, tensor in enumerate(body.inputs):
        check_datatype(tensor.name, tensor.datatype)
        infer_input = InferInput(
            name=tensor.name, shape=tensor.shape, datatype=tensor.datatype,
            data=tensor.data if tensor.data is not None else [], parameters=tensor.parameters or {},
        )
        if raw is not None and index in raw:
            set_raw_bytes(infer_input, raw[index])
        inputs.append(infer_input)
    outputs = [RequestedOutput(name=o.name, parameters=o.parameters or {}) for o in body.outputs or []]
    return InferRequest(
        model_name=model_name,
        infer_inputs=inputs,
        request_id=body.id,
        parameters=body.parameters,
        request_outputs=outputs or None,
    )


def _from_binary_body(body: bytes, header: str, model_name: str) -> InferRequest:
    """The binary tensor extension: a JSON header of `Inference-Header-Content-Length` bytes, then each
    input without `data` as exactly `parameters.binary_data_size` bytes, in input order, to the end."""
    try:
        json_length = int(header)
    except ValueError:
        json_length = -1
    if not 0 <= json_length <= len(body):
        raise InvalidInput(
            f"Inference-Header-Content-Length is {shown(header)}: it must be the byte length of the JSON "
            f"header at the start of the body, between 0 and the body's {len(body)} bytes"
        )
    request = _parse_json(body[:json_length], _BinaryInferenceRequest, "the JSON header of the binary body")
    raw: dict[int, bytes] = {}
    offset = json_length
    for index, tensor in enumerate(request.inputs):
        where = f"input {shown(tensor.name)}"
        size = (tensor.parameters or {}).get("binary_data_size")
        if tensor.data is not None:
            if size is not None:
                raise InvalidInput(f"{where} has both 'data' and 'binary_data_size'; send one of them")
            continue
        if size is None:
            raise InvalidInput(f"{where} has neither 'data' nor parameters.binary_data_size")
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise InvalidInput(f"{where}: binary_data_size must be a byte count, got {shown(size)}")
        if offset + size > len(body):
            raise InvalidInput(
                f"{where}: binary_data_size is {size} bytes but only {len(body) - offset} bytes of binary data "
                "are left in the body"
            )
        raw[index] = body[offset : offset + size]
        offset += size
    if offset != len(body):
        raise InvalidInput(
            f"the body has {len(body) - offset} bytes after the JSON header and the inputs' binary_data_size "
            "bytes; binary_data_size must add up to the binary data sent"
        )
    return _infer_request(request, model_name, raw)


def _check_texts(texts: list[Any], max_batch: int, where: str) -> list[str]:
    if len(texts) == 0:
        raise InvalidInput(f"{where} is empty: send at least one text")
    if len(texts) > max_batch:
        raise _too_many(where, len(texts), max_batch)
    decoded = []
    for i, value in enumerate(texts):
        if isinstance(value, bytes):
            try:
                value = value.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise InvalidInput(f"{where}[{i}] is not valid UTF-8: {exc}") from None
        if not isinstance(value, str):
            raise InvalidInput(f"{where}[{i}] is {type(value).__name__}, expected a string")
        decoded.append(_check_unicode(value, f"{where}[{i}]"))
    return decoded


def _flatten(data: Any, where: str) -> list[Any]:
    """Nested lists in row-major order, iteratively (no recursion), at most MAX_DATA_DEPTH deep."""
    if not isinstance(data, (list, tuple)):
        return [data]
    flat: list[Any] = []
    stack = [iter(data)]
    while stack:
        for element in stack[-1]:
            if isinstance(element, (list, tuple)):
                if len(stack) >= MAX_DATA_DEPTH:
                    raise InvalidInput(
                        f"{where}: data is nested more than {MAX_DATA_DEPTH} levels deep; "
                        "send the texts as a flat list"
                    )
                stack.append(iter(element))
                break
            flat.append(element)
        else:
            stack.pop()
    return flat


def split_bytes_tensor(raw: bytes, where: str, max_count: int) -> list[bytes]:
    """The V2 binary BYTES layout: each element is a 4-byte little-endian length, then that many bytes.
    Stops at `max_count` + 1 elements, so a body of empty elements cannot build millions of them."""
    elements: list[bytes] = []
    offset, size = 0, len(raw)
    while offset < size:
        if len(elements) > max_count:
            raise _too_many(where, f"more than {max_count}", max_count)
        if offset + 4 > size:
            raise InvalidInput(
                f"{where}: element {len(elements)} starts at byte {offset} but only {size - offset} of its "
                "4-byte length prefix are left; each element is a 4-byte little-endian length, then the bytes"
            )
        (length,) = struct.unpack_from("<I", raw, offset)
        offset += 4
        if offset + length > size:
            raise InvalidInput(
                f"{where}: element {len(elements)} says it is {length} bytes long but only {size - offset} "
                "bytes are left"
            )
        elements.append(bytes(raw[offset : offset + length]))
        offset += length
    return elements


def _decode_v2(request: InferRequest, specs: list[OutputSpec], max_batch: int) -> TextRequest:
    if len(request.inputs) != 1:
        names = [i.name for i in request.inputs]
        raise InvalidInput(f"expected exactly one input named '{INPUT_NAME}', got {len(names)}: {shown(names)}")
    tensor: InferInput = request.inputs[0]
    if tensor.name != INPUT_NAME:
        raise InvalidInput(f"unexpected input {shown(tensor.name)}: this model takes one input named '{INPUT_NAME}'")
    if tensor.datatype != INPUT_DATATYPE:
        raise InvalidInput(f"input '{INPUT_NAME}' must have datatype BYTES, got {shown(tensor.datatype)}")
    shape = list(tensor.shape or [])
    if len(shape) != 1 or not isinstance(shape[0], int) or isinstance(shape[0], bool):
        raise InvalidInput(f"input '{INPUT_NAME}' must be 1-D with shape [N], got shape {shown(shape)}")
    where = f"input '{INPUT_NAME}'"
    raw = raw_bytes(tensor)
    if raw is not None:  # gRPC raw_input_contents or the REST binary extension
        elements = split_bytes_tensor(raw, where, max_batch)
    else:
        elements = _flatten(tensor.data if tensor.data is not None else [], where)
    if shape[0] != len(elements):
        raise InvalidInput(f"input '{INPUT_NAME}' has shape [{shape[0]}] but {len(elements)} elements of data")
    texts = _check_texts(elements, max_batch, f"input '{INPUT_NAME}'")

    known = [s.name for s in specs]
    requested = request.request_outputs or None
    binary = _flag(request.use_binary_outputs, "parameter 'binary_data_output'")
    if requested:
        seen: set[str] = set()
        for output in requested:
            if output.name not in known:
                raise InvalidInput(f"unknown output {shown(output.name)}; this model's outputs are {known}")
            if output.name in seen:
                raise InvalidInput(f"output {shown(output.name)} is requested twice; name each output once")
            seen.add(output.name)
            _flag(output.binary_data, f"output '{output.name}' parameter 'binary_data'")
            if output.binary_data is None and binary:  # request-level default applies to each output
                output.parameters = {**(output.parameters or {}), "binary_data": True}
    if request.id is not None:
        _check_unicode(request.id, "the request id")
    return TextRequest(
        texts=texts,
        protocol="v2",
        request_id=request.id,
        requested_outputs=requested,
        binary_outputs=binary,
        from_grpc=bool(request.from_grpc),
    )


def _decode_v1(body: dict, max_batch: int) -> TextRequest:
    if "instances" not in body:
        raise InvalidInput('V1 request must be {"instances": ["text", ...]}')
    instances = body["instances"]
    if not isinstance(instances, list):
        raise InvalidInput('"instances" must be a list of strings')
    texts = _check_texts(instances, max_batch, '"instances"')
    request_id = body.get("id")
    if request_id is not None:
        request_id = _check_unicode(str(request_id), "the request id")
    return TextRequest(texts=texts, protocol="v1", request_id=request_id)


def _flag(value: Any, where: str) -> bool:
    if value is None or isinstance(value, bool):
        return bool(value)
    raise InvalidInput(f"{where} must be true or false, got {shown(value)}")


def _wire_array(spec: OutputSpec, values: np.ndarray) -> np.ndarray:
    if spec.datatype == "BYTES":
        if spec.json:
            return np.array([json.dumps(v, ensure_ascii=False) for v in values], dtype=object)
        return np.asarray(values, dtype=object)
    return np.ascontiguousarray(values)


def encode_response(
    request: TextRequest,
    outputs: dict[str, np.ndarray],
    specs: list[OutputSpec],
    model_name: str,
    model_version: str,
    truncated: list[int],
    latency_ms: float | None = None,
) -> InferResponse | dict[str, Any]:
    """`latency_ms` (the request's time in the server so far) goes into the V2 REST response
    `parameters` and the V1 body, as the answer's own latency."""
    if request.protocol == "v1":
        return _encode_v1(request, outputs, specs, truncated, latency_ms)
    wanted = [o.name for o in request.requested_outputs] if request.requested_outputs else [s.name for s in specs]
    by_name = {s.name: s for s in specs}
    infer_outputs = []
    for name in wanted:
        spec = by_name[name]
        array = _wire_array(spec, outputs[name])
        output = InferOutput(name=name, shape=list(array.shape), datatype=spec.datatype, data=array)
        if request.from_grpc:
            # Serialize to raw_output_contents here: kserve 0.21's to_grpc() tests an ndarray's truth
            # value when the request came with raw inputs, which raises for any output of length > 1.
            output.set_data_from_numpy(array, binary_data=True)
        infer_outputs.append(output)
    parameters: dict[str, Any] = {"truncated_indices": ",".join(map(str, truncated))} if truncated else {}
    if latency_ms is not None and not request.from_grpc:
        # gRPC answers carry their timings in the server-timing trailer instead: kserve's
        # InferParameter has no floating-point field (bool, int64 and string only).
        parameters["latency_ms"] = latency_ms
    return InferResponse(
        response_id=request.request_id or "",
        model_name=model_name,
        model_version=model_version,
        infer_outputs=infer_outputs,
        parameters=parameters or None,
        use_binary_outputs=request.binary_outputs,
        requested_outputs=request.requested_outputs,
        from_grpc=request.from_grpc,
    )


def _encode_v1(
    request: TextRequest, outputs: dict[str, np.ndarray], specs: list[OutputSpec], truncated: list[int],
    latency_ms: float | None,
) -> dict[str, Any]:
    truncated_set = set(truncated)
    predictions = []
    for i in range(len(request.texts)):
        prediction: dict[str, Any] = {}
        for spec in specs:
            value = outputs[spec.name][i]
            prediction[spec.name] = value.tolist() if isinstance(value, np.ndarray) else _scalar(value)
        if i in truncated_set:
            prediction["truncated"] = True
        predictions.append(prediction)
    response: dict[str, Any] = {"predictions": predictions}
    if request.request_id is not None:
        response["id"] = request.request_id
    if latency_ms is not None:
        response["latency_ms"] = latency_ms
    return response


def _scalar(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value
