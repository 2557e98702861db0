"""Wire formats <-> a list of texts, and typed outputs <-> V2 / V1 responses.

V2 arrives as a kserve InferRequest from three transports: REST JSON (strings), REST with the binary
tensor extension (strings, decoded by kserve), and gRPC (bytes, in `contents` or raw). V1 arrives as
a dict `{"instances": [...]}`. Everything a client can get wrong is reported as kserve's InvalidInput,
which both transports turn into a client error (HTTP 400, gRPC INVALID_ARGUMENT).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import numpy as np
from kserve.errors import InvalidInput
from kserve.protocol.infer_type import InferInput, InferOutput, InferRequest, InferResponse, RequestedOutput

from ..tasks import OutputSpec

INPUT_NAME = "text"
INPUT_DATATYPE = "BYTES"


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
            payload = json.loads(payload)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise InvalidInput(f"request body is not JSON: {exc}") from None
    if isinstance(payload, dict):
        return _decode_v1(payload, max_batch)
    raise InvalidInput(f"unsupported request body of type {type(payload).__name__}")


def _check_texts(texts: list[Any], max_batch: int, where: str) -> list[str]:
    if len(texts) == 0:
        raise InvalidInput(f"{where} is empty: send at least one text")
    if len(texts) > max_batch:
        raise InvalidInput(f"{where} has {len(texts)} texts; this model accepts at most {max_batch} per request")
    decoded = []
    for i, value in enumerate(texts):
        if isinstance(value, bytes):
            try:
                value = value.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise InvalidInput(f"{where}[{i}] is not valid UTF-8: {exc}") from None
        if not isinstance(value, str):
            raise InvalidInput(f"{where}[{i}] is {type(value).__name__}, expected a string")
        decoded.append(value)
    return decoded


def _flatten(data: Any) -> list[Any]:
    if isinstance(data, (list, tuple)):
        return [item for element in data for item in _flatten(element)]
    return [data]


def _decode_v2(request: InferRequest, specs: list[OutputSpec], max_batch: int) -> TextRequest:
    if len(request.inputs) != 1:
        names = [i.name for i in request.inputs]
        raise InvalidInput(f"expected exactly one input named '{INPUT_NAME}', got {len(names)}: {names}")
    tensor: InferInput = request.inputs[0]
    if tensor.name != INPUT_NAME:
        raise InvalidInput(f"unexpected input '{tensor.name}': this model takes one input named '{INPUT_NAME}'")
    if tensor.datatype != INPUT_DATATYPE:
        raise InvalidInput(f"input '{INPUT_NAME}' must have datatype BYTES, got {tensor.datatype}")
    shape = list(tensor.shape or [])
    if len(shape) != 1 or not isinstance(shape[0], int) or isinstance(shape[0], bool):
        raise InvalidInput(f"input '{INPUT_NAME}' must be 1-D with shape [N], got shape {shape}")
    if tensor._raw_data is not None:  # gRPC raw_input_contents: length-prefixed bytes
        try:
            elements = list(tensor.as_numpy().reshape(-1))
        except Exception as exc:  # malformed length prefixes or a count that disagrees with the shape
            raise InvalidInput(f"input '{INPUT_NAME}': raw contents do not decode as {shape[0]} BYTES elements: {exc}") from None
    else:
        elements = _flatten(tensor.data if tensor.data is not None else [])
    if shape[0] != len(elements):
        raise InvalidInput(f"input '{INPUT_NAME}' has shape [{shape[0]}] but {len(elements)} elements of data")
    texts = _check_texts(elements, max_batch, f"input '{INPUT_NAME}'")

    known = [s.name for s in specs]
    requested = request.request_outputs or None
    binary = bool(request.use_binary_outputs)
    if requested:
        for output in requested:
            if output.name not in known:
                raise InvalidInput(f"unknown output '{output.name}'; this model's outputs are {known}")
            if output.binary_data is None and binary:  # request-level default applies to each output
                output.parameters = {**(output.parameters or {}), "binary_data": True}
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
    return TextRequest(texts=texts, protocol="v1", request_id=str(request_id) if request_id is not None else None)


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
) -> InferResponse | dict[str, Any]:
    if request.protocol == "v1":
        return _encode_v1(request, outputs, specs, truncated)
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
    parameters = {"truncated_indices": ",".join(map(str, truncated))} if truncated else None
    return InferResponse(
        response_id=request.request_id or "",
        model_name=model_name,
        model_version=model_version,
        infer_outputs=infer_outputs,
        parameters=parameters,
        use_binary_outputs=request.binary_outputs,
        requested_outputs=request.requested_outputs,
        from_grpc=request.from_grpc,
    )


def _encode_v1(
    request: TextRequest, outputs: dict[str, np.ndarray], specs: list[OutputSpec], truncated: list[int]
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
    return response


def _scalar(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value
