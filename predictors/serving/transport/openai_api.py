"""The OpenAI-compatible embeddings API: `POST /openai/v1/embeddings` (KServe's path) and
`/v1/embeddings`, `GET /openai/v1/models[/<id>]` and `/v1/models`, for the applications and
frameworks that speak it (the `openai` client, LangChain's and LlamaIndex's OpenAI embeddings).

kserve 0.21 has such routes, but they import vllm when the module loads; these are our own. A
request becomes a V2 inference request for its texts and goes through the same dataplane and model
as a V2 one -- the model's door (once the body names the model), scheduler, deadline, response cache
and metrics (protocol "openai") -- so its vectors are the V2 answer's. Every model whose task head
names an `embedding_output` answers here.

- `input`: a string, a list of strings, or token ids (a list of ints, or a list of such lists) in
  the model's own vocabulary. Token ids are decoded to text with the model's tokenizer (special
  tokens dropped) and then run as that text, so they share the cache and the batches of text
  requests; a text's ids and the text itself get the same vector. (Clients that count tokens with
  OpenAI's tiktoken vocabulary, such as LangChain's default, send ids that mean nothing to another
  model: send strings, e.g. LangChain's `check_embedding_ctx_length=False`.)
- `encoding_format`: `float` (JSON numbers: each float32 written as the double it is, as the V2
  answer writes it) or `base64` (the float32 values, little-endian).
- `dimensions`: a shorter vector, only from a model trained for it (`matryoshka_dimensions` in its
  predictor.yaml); any other model refuses it with a 400 saying why (TaskHead.shorten).
- `usage.prompt_tokens` / `total_tokens`: the tokens the model ran, counted by its tokenizer
  (special tokens included, after truncation at max_length), cached texts included.
- `user`: accepted (a string) and not used.

Every error on these paths, the ones raised before the route too (body size, timeouts, unknown
paths), is in OpenAI's shape `{"error": {"message", "type", "param", "code"}}` with the status a V2
request gets for the same mistake (OpenAIErrorShape).
"""

from __future__ import annotations

import base64
import logging
from typing import Annotated, Any, Awaitable, Callable, Literal, Union

import numpy as np
import orjson
from fastapi import FastAPI, Request, Response
from kserve.protocol.infer_type import InferInput, InferRequest, RequestedOutput
from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr, ValidationError

from .. import codec, request_context
from ..errors import ServingError, UnknownModel, classify
from ..observability import metrics
from ..repository import PredictorRepository
from ..scheduling import DOOR_TICKET
from .connection import door_admission
from .paths import OPENAI_EMBEDDINGS, OPENAI_MODELS, OPENAI_PREFIXES, openai_action

logger = logging.getLogger("kserve.predictors")

OWNED_BY = "predictors"
#: OpenAI's object type of one vector in the response list (its API's word, not a task name).
EMBEDDING_OBJECT = "embedding"


# ---- the wire format ----------------------------------------------------------------------------
TokenIds = list[StrictInt]


class EmbeddingsRequest(BaseModel):
    """OpenAI's create-embeddings body (https://platform.openai.com/docs/api-reference/embeddings)."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"example": {
        "model": "sentence-embedding", "input": ["A man is playing a guitar.", "Someone plays an instrument."],
    }})

    input: Union[StrictStr, list[StrictStr], TokenIds, list[TokenIds]] = Field(
        description="A text, a list of texts, or token ids of the model's own tokenizer (a list of ints, or a list "
        "of such lists). At most the model's max_batch items.")
    model: StrictStr = Field(description="The name of an embedding model served here (GET /openai/v1/models).")
    encoding_format: Literal["float", "base64"] = Field(
        "float", description="float: JSON numbers; base64: the float32 values, little-endian, base64-encoded.")
    dimensions: Annotated[StrictInt, Field(ge=1)] | None = Field(
        None, description="A shorter vector; only models trained for it (matryoshka_dimensions) accept a size "
        "below their own.")
    user: StrictStr | None = Field(None, description="Accepted for compatibility; not used.")


class EmbeddingObject(BaseModel):
    object: Literal["embedding"] = EMBEDDING_OBJECT
    embedding: Union[list[float], str] = Field(description="The vector, or its base64 float32 bytes.")
    index: int


class Usage(BaseModel):
    prompt_tokens: int
    total_tokens: int


class EmbeddingsResponse(BaseModel):
    object: Literal["list"] = "list"
    data: list[EmbeddingObject]
    model: str
    usage: Usage


class ModelObject(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int = Field(description="When the serving version of the model was loaded (Unix seconds).")
    owned_by: str = OWNED_BY


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelObject]
    models: list[str] | None = Field(
        None, description="GET /v1/models only: every model served, as KServe V1's model list (its `data` holds "
        "the embedding models the OpenAI API serves).")


class OpenAIErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class OpenAIError(BaseModel):
    error: OpenAIErrorDetail


# ---- errors ---------------------------------------------------------------------------------------
#: HTTP status -> (OpenAI error `type`, default `code`).
ERROR_KINDS: dict[int, tuple[str, str | None]] = {
    400: ("invalid_request_error", None),
    404: ("invalid_request_error", "not_found"),
    405: ("invalid_request_error", "method_not_allowed"),
    408: ("timeout_error", "request_timeout"),
    413: ("invalid_request_error", "request_too_large"),
    415: ("invalid_request_error", "unsupported_media_type"),
    429: ("rate_limit_error", "rate_limit_exceeded"),
    431: ("invalid_request_error", "headers_too_large"),
    503: ("service_unavailable_error", "model_not_ready"),
    504: ("timeout_error", "deadline_exceeded"),
}


def error_body(status: int, message: str, param: str | None = None, code: str | None = None) -> dict[str, Any]:
    kind, default_code = ERROR_KINDS.get(status, ("server_error" if status >= 500 else "invalid_request_error", None))
    return {"error": {"message": message, "type": kind, "param": param, "code": code or default_code}}


def openai_error(status: int, message: str, param: str | None = None, code: str | None = None,
                 headers: dict[str, str] | None = None) -> Response:
    logger.info("request refused (%d): %s", status, message)
    return Response(orjson.dumps(error_body(status, message, param, code)), status_code=status,
                    headers=headers, media_type="application/json")


def error_for(exc: BaseException, param: str | None = None) -> Response:
    """The OpenAI answer to an exception a request ended in, with the status a V2 request gets;
    `param` names the field a client mistake (4xx) is about."""
    status, _, message, headers = classify(exc)
    if status == 500:
        logger.error("request failed: %s", message, exc_info=exc)
    code = "model_not_found" if isinstance(exc, UnknownModel) else None
    return openai_error(status, message, param if 400 <= status < 500 and status != 429 else None, code, headers)


class OpenAIErrorShape:
    """ASGI middleware: on the OpenAI paths, an error answered in the server's own shape
    (`{"error": "...", "request_id": ...}`: body limits, timeouts, unknown routes, failures)
    is rewritten into OpenAI's; answers already in OpenAI's shape pass untouched."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict, receive: Callable[[], Awaitable[dict]], send: Callable[[dict], Awaitable[None]]) -> None:
        if scope["type"] != "http" or not is_openai_path(scope.get("path", "")):
            await self.app(scope, receive, send)
            return
        start: dict | None = None
        chunks: list[bytes] = []

        async def reshape(message: dict) -> None:
            nonlocal start
            if message["type"] == "http.response.start" and message["status"] >= 400:
                start = message
                return
            if start is None or message["type"] != "http.response.body":
                await send(message)
                return
            chunks.append(message.get("body", b""))
            if message.get("more_body", False):
                return
            body = b"".join(chunks)
            try:
                document = orjson.loads(body)
            except orjson.JSONDecodeError:
                document = None
            if isinstance(document, dict) and isinstance(document.get("error"), str):
                body = orjson.dumps(error_body(start["status"], document["error"]))
            headers = [(k, v) for k, v in start.get("headers", []) if k.lower() != b"content-length"]
            await send({**start, "headers": [*headers, (b"content-length", str(len(body)).encode())]})
            await send({"type": "http.response.body", "body": body})

        await self.app(scope, receive, reshape)


def is_openai_path(path: str) -> bool:
    """Paths only the OpenAI API answers: /openai/v1/... and /v1/embeddings (the rest of /v1 is KServe V1's)."""
    return path.startswith(OPENAI_PREFIXES[0] + "/") or openai_action(path) == OPENAI_EMBEDDINGS


# ---- the routes -----------------------------------------------------------------------------------
class RequestError(Exception):
    """A mistake in an OpenAI request body: the status, message and the field it is about."""

    def __init__(self, message: str, param: str | None = None, status: int = 400) -> None:
        super().__init__(message)
        self.message, self.param, self.status = message, param, status


def describe_validation(error: ValidationError) -> tuple[str, str | None]:
    """(message, param) for a body pydantic refused: the first problem's field and what is wanted."""
    messages, param = [], None
    for item in error.errors(include_input=False, include_url=False):
        loc = [str(part) for part in item["loc"]]
        field = loc[0] if loc else None
        param = param or field
        if item["type"] == "extra_forbidden":
            messages.append(f"unrecognized request argument supplied: {field}")
        elif item["type"] == "json_invalid":
            messages.append(f"the body is not valid JSON: {item['msg']}")
        elif item["type"] == "model_type":
            messages.append("the body must be a JSON object such as {\"model\": \"...\", \"input\": \"...\"}")
        elif field == "input":
            messages.append("input must be a string, a list of strings, or token ids (a list of integers, or a list "
                            "of lists of integers)")
        else:
            messages.append(f"{field}: {item['msg']}")
    # A union reports once per member; each message once, in order.
    return "; ".join(dict.fromkeys(messages)) or "invalid request body", param


def embedding_models(repository: PredictorRepository) -> dict[str, Any]:
    """The served models whose task head embeds texts, by name."""
    return {name: model for name, model in sorted(repository.get_models().items()) if model.head.embedding_output}


def model_object(name: str, model: Any) -> dict[str, Any]:
    return {"id": name, "object": "model", "created": int(model.loaded_at or 0), "owned_by": OWNED_BY}


def texts_of(request: EmbeddingsRequest, model: Any) -> list[str]:
    """The request's input as texts; token ids decoded with the model's tokenizer."""
    value = request.input
    if isinstance(value, str):
        return [value]
    if not value:
        raise RequestError("input is empty: send a text, a list of texts, or token ids", "input")
    rows = [value] if isinstance(value[0], int) else value  # one text's token ids, or one item per text
    if len(rows) > model.config.max_batch:
        raise RequestError(
            f"input has {len(rows)} items; model '{request.model}' embeds at most {model.config.max_batch} per "
            "request (max_batch)", "input")
    if isinstance(value[0], str):
        return list(value)  # type: ignore[arg-type]
    vocabulary = len(model.tokenizer)
    texts = []
    for row, ids in enumerate(rows):
        if not ids:
            raise RequestError(f"input[{row}] is an empty list of token ids", "input")
        bad = next((token for token in ids if not 0 <= token < vocabulary), None)  # type: ignore[union-attr]
        if bad is not None:
            raise RequestError(
                f"input[{row}] holds token id {bad}, outside the vocabulary of model '{request.model}' "
                f"(0..{vocabulary - 1}): token ids must come from this model's own tokenizer", "input")
        texts.append(model.tokenizer.decode(ids, skip_special_tokens=True))
    return texts


def encode_vectors(vectors: np.ndarray, encoding_format: str) -> list[Any]:
    if encoding_format == "base64":
        little_endian = np.ascontiguousarray(vectors, dtype="<f4")
        return [base64.b64encode(row.tobytes()).decode("ascii") for row in little_endian]
    # float32 values written as the doubles they are, as the V2 answer writes them (not float32's
    # shortest repr), so that a client reading either gets the same numbers.
    return list(vectors.astype(np.float64))


def register_openai_routes(app: FastAPI, repository: PredictorRepository, dataplane: Any) -> None:
    """The OpenAI routes under both prefixes; registered before kserve's, so `GET /v1/models`
    answers here (OpenAI's list and KServe V1's `models` in one body)."""

    async def create_embeddings(request: Request) -> Response:
        body = await request.body()
        try:
            parsed = EmbeddingsRequest.model_validate_json(body)
        except ValidationError as exc:
            message, param = describe_validation(exc)
            return openai_error(400, message, param)
        context = request_context.current()
        try:
            model = repository.resolve(parsed.model)
            key = metrics.labels(model)
            if context is not None:  # counted under this model from here on, refusals included
                context.model, context.served_by = parsed.model, key
            output = model.head.embedding_output
            if output is None:
                served = sorted(embedding_models(repository))
                raise RequestError(
                    f"model '{parsed.model}' does not embed texts (its task is {model.config.task}); the embedding "
                    f"models here: {served}", "model", 404)
            if len(body) > model.config.max_body_bytes:
                raise RequestError(f"request body of {len(body)} bytes is over model '{parsed.model}''s limit of "
                                   f"{model.config.max_body_bytes} bytes (max_body_bytes)", None, 413)
            texts = texts_of(parsed, model)
            if parsed.dimensions is not None:
                try:
                    model.head.shorten(np.zeros((0, parsed.dimensions), np.float32), parsed.dimensions)
                except ValueError as exc:
                    raise RequestError(str(exc), "dimensions") from None
        except RequestError as exc:
            return openai_error(exc.status, exc.message, exc.param, "model_not_found" if exc.status == 404 else None)
        except ServingError as exc:
            return error_for(exc, "model")
        admission = door_admission(model, len(body))
        if isinstance(admission, ServingError):
            return error_for(admission)
        metrics.in_flight(key, 1)
        DOOR_TICKET.set(admission)
        try:
            infer_request = InferRequest(
                model_name=parsed.model,
                infer_inputs=[InferInput(codec.INPUT_NAME, [len(texts)], codec.INPUT_DATATYPE, texts)],
                request_outputs=[RequestedOutput(output, {})],
            )
            response, _ = await dataplane.infer(model_name=parsed.model, request=infer_request, headers=dict(request.headers))
            vectors = response.outputs[0].as_numpy()
            if parsed.dimensions is not None:
                vectors = model.head.shorten(vectors, parsed.dimensions)
        except Exception as exc:  # noqa: BLE001 -- answered in OpenAI's shape with the V2 status
            return error_for(exc, "input")
        finally:
            metrics.in_flight(key, -1)
            if admission is not None:
                admission.release()  # if its texts never reached the queue (cache hits, errors)
        tokens = context.tokens if context is not None else 0
        answer = {
            "object": "list",
            "data": [{"object": EMBEDDING_OBJECT, "embedding": vector, "index": index}
                     for index, vector in enumerate(encode_vectors(vectors, parsed.encoding_format))],
            "model": parsed.model,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        }
        return Response(orjson.dumps(answer, option=orjson.OPT_SERIALIZE_NUMPY), media_type="application/json")

    async def list_models(request: Request) -> Response:
        answer: dict[str, Any] = {
            "object": "list", "data": [model_object(name, m) for name, m in embedding_models(repository).items()],
        }
        if not request.url.path.startswith(OPENAI_PREFIXES[0]):  # /v1/models is KServe V1's list as well
            answer["models"] = list(repository.get_models())
        return Response(orjson.dumps(answer), media_type="application/json")

    async def retrieve_model(model_id: str) -> Response:
        models = embedding_models(repository)
        if model_id not in models:
            return openai_error(404, f"model '{model_id}' is not an embedding model served here; models: "
                                f"{sorted(models)}", "model", "model_not_found")
        return Response(orjson.dumps(model_object(model_id, models[model_id])), media_type="application/json")

    errors = {status: {"model": OpenAIError, "description": description} for status, description in (
        (400, "A mistake in the body, named in `message` (`param`: the field)"),
        (404, "No such embedding model"), (413, "Body over the model's max_body_bytes"),
        (429, "The model's queue is full (Retry-After)"), (503, "The model is loading or unloading"),
        (504, "The work did not start before the deadline (timeout-ms header)"))}
    body_schema = EmbeddingsRequest.model_json_schema()
    for prefix in OPENAI_PREFIXES:
        tags = ["OpenAI"] if prefix == OPENAI_PREFIXES[0] else ["OpenAI (bare /v1)"]
        app.add_api_route(
            f"{prefix}/{OPENAI_EMBEDDINGS}", create_embeddings, methods=["POST"], tags=tags,
            summary="Create embeddings (OpenAI-compatible)", response_model=EmbeddingsResponse, responses=errors,
            description="The vectors of the texts for an embedding model, as OpenAI's API answers; the same "
            "vectors as a V2 request for the same texts. The `timeout-ms` header sets a deadline.",
            openapi_extra={"requestBody": {"required": True, "content": {"application/json": {"schema": body_schema}}}},
        )
        app.add_api_route(f"{prefix}/{OPENAI_MODELS}", list_models, methods=["GET"], tags=tags,
                          summary="List the embedding models (OpenAI-compatible)", response_model=ModelList)
    app.add_api_route(f"{OPENAI_PREFIXES[0]}/{OPENAI_MODELS}/{{model_id}}", retrieve_model, methods=["GET"],
                      tags=["OpenAI"], summary="Retrieve an embedding model (OpenAI-compatible)",
                      response_model=ModelObject, responses={404: {"model": OpenAIError}})

