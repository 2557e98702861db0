"""The browsable API: Swagger UI at /docs and ReDoc at /redoc with their scripts and styles served by
this server (fastapi-offline bundles them; FastAPI's own pages load them from a public CDN and
render blank in an air-gapped cluster), and an OpenAPI document at /openapi.json that describes
the routes that really answer and the bodies they really take.

FastAPI's generated document would describe kserve's shadowed routes instead of ours (a later route
with the same path replaces an earlier one in the document, although the earlier one answers), the
V2 infer body as "an InferenceRequest or any string", and a 422 no route ever returns. Here: each
path and method once, as the route that answers it; V2 infer with the `text` input, JSON or the
binary tensor extension; the errors as they are answered (400 and the others, `{"error": ...}`, or
OpenAI's shape on the OpenAI routes); and examples naming a model that is being served now, so
"Try it out" works as it stands.
"""

from __future__ import annotations

import copy
import warnings
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from fastapi.responses import ORJSONResponse
from fastapi.routing import APIRoute
from fastapi_offline import FastAPIOffline
from kserve.protocol.rest.v2_datamodels import InferenceRequest, InferenceResponse
from pydantic import BaseModel

from .. import codec
from ..repository import PredictorRepository
from .openai_api import OpenAIError, embedding_models, is_openai_path

DESCRIPTION = """Text models served over the KServe V2 / Open Inference Protocol, KServe V1 and an
OpenAI-compatible embeddings API. Every model takes one input, `text` (BYTES, shape [N]).
Every answer carries `x-request-id` and a `Server-Timing` header (queue, tokenize, backend,
postprocess, total)."""
EXAMPLE_TEXTS = ["Great coffee, rich and smooth. Will buy again.", "The bag arrived torn and the chips were stale."]
#: What a classification model answers to the example body (an embedding model answers `embedding`
#: FP32 [N, D]; a token classifier `entities`: README "Outputs").
V2_ANSWER = {
    "model_name": "review-sentiment", "model_version": "1", "id": "4f0c7e1d9b2a4c6e8f1a3b5c7d9e0f12",
    "parameters": {"latency_ms": 4.87},
    "outputs": [
        {"name": "label", "shape": [2], "datatype": "BYTES", "parameters": None, "data": ["great", "other"]},
        {"name": "score", "shape": [2], "datatype": "FP32", "parameters": None, "data": [0.9253, 0.9243]},
        {"name": "probabilities", "shape": [2, 2], "datatype": "FP32", "parameters": None,
         "data": [0.9253, 0.0747, 0.0757, 0.9243]},
    ],
}
#: Path prefix -> the tag its operations are listed under, first match wins.
TAGS = (
    ("/v2/repository", "Repository"),
    ("/v2/models/", "V2 inference and model metadata"),
    ("/v2", "V2 server health and metadata"),
    ("/v1/embeddings", "OpenAI (bare /v1)"),
    ("/v1/models/", "KServe V1"),
    ("/v1/models", "KServe V1 and OpenAI model list"),
    ("/openai/", "OpenAI"),
    ("/metrics", "Monitoring"),
)


DOC_PAGES = ("/docs", "/redoc")
#: The doc pages may load from this server only. ReDoc's side menu would fetch Redocly's logo from
#: its CDN (it hides the image when that fails); with this policy the browser does not ask at all.
#: The pages' own scripts are inline, and ReDoc runs its search in a blob: worker.
DOCS_POLICY = ("default-src 'self'; script-src 'self' 'unsafe-inline' blob:; style-src 'self' 'unsafe-inline'; "
               "img-src 'self' data:; font-src 'self' data:; worker-src 'self' blob:; connect-src 'self'")


class DocPagesPolicy:
    """ASGI middleware: a Content-Security-Policy on the doc pages that keeps them on this server."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope.get("path") not in DOC_PAGES:
            await self.app(scope, receive, send)
            return

        async def with_policy(message: dict) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []),
                                                  (b"content-security-policy", DOCS_POLICY.encode())]}
            await send(message)

        await self.app(scope, receive, with_policy)


class ErrorBody(BaseModel):
    """Every error outside the OpenAI routes."""

    error: str
    request_id: str | None = None


def new_app(title: str, version: str, enable_docs: bool) -> FastAPI:
    """The FastAPI app, with /docs and /redoc served offline when `enable_docs` (--enable_docs_url)."""
    settings: dict[str, Any] = {"title": title, "version": version, "description": DESCRIPTION,
                                "default_response_class": ORJSONResponse}
    if not enable_docs:
        return FastAPI(docs_url=None, redoc_url=None, **settings)
    # No validator badge (it would call validator.swagger.io) and "Try it out" open, so a request
    # runs with one click on Execute.
    return FastAPIOffline(swagger_ui_parameters={"validatorUrl": None, "tryItOutEnabled": True}, **settings)


def describe_api(app: FastAPI, repository: PredictorRepository) -> None:
    """Make /openapi.json describe the routes that answer (see the module's doc)."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = _document(app)
        document = copy.deepcopy(app.openapi_schema)
        _name_served_models(document, repository)
        return document

    app.openapi = openapi  # type: ignore[method-assign]


def _answering_routes_document(app: FastAPI) -> dict[str, Any]:
    """FastAPI's document of every route, each path and method described by the route that answers
    it: the app's own routes are registered before kserve's included routers and answer first, but
    in FastAPI's document a later route of the same path and method replaces the earlier one."""
    # kserve's shadowed routes share their operation ids with ours (and one route of two methods has
    # one id for both: _document makes them unique)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        document = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
        own = get_openapi(title=app.title, version=app.version, routes=[r for r in app.routes if isinstance(r, APIRoute)])
    for path, operations in own["paths"].items():
        document["paths"].setdefault(path, {}).update(operations)
    schemas = document.setdefault("components", {}).setdefault("schemas", {})
    schemas.update(own.get("components", {}).get("schemas", {}))
    return document


def _document(app: FastAPI) -> dict[str, Any]:
    document = _answering_routes_document(app)
    components = document["components"]["schemas"]
    for model in (InferenceRequest, InferenceResponse, ErrorBody, OpenAIError):
        _add_schema(components, model)
    for name in ("HTTPValidationError", "ValidationError"):  # FastAPI's 422, which no route answers
        components.pop(name, None)
    v2_body = {
        "required": True,
        "content": {
            "application/json": {
                "schema": {"$ref": "#/components/schemas/InferenceRequest"},
                "example": {"inputs": [{"name": codec.INPUT_NAME, "datatype": codec.INPUT_DATATYPE,
                                        "shape": [len(EXAMPLE_TEXTS)], "data": EXAMPLE_TEXTS}]},
            },
            "application/octet-stream": {
                "schema": {"type": "string", "format": "binary"},
                "description": "The binary tensor extension: a JSON header of Inference-Header-Content-Length "
                "bytes, then each input's bytes (4-byte little-endian length before each text).",
            },
        },
    }
    v1_body = {"required": True, "content": {"application/json": {
        "schema": {"type": "object", "required": ["instances"], "properties": {
            "instances": {"type": "array", "items": {"type": "string"}}, "id": {"type": "string"}}},
        "example": {"instances": EXAMPLE_TEXTS}}}}
    operation_ids: set[str] = set()
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            if operation.get("operationId") in operation_ids:  # one route for two methods gets one id from FastAPI
                operation["operationId"] = f"{operation['operationId']}_{method}"
            operation_ids.add(operation.get("operationId"))
            operation["tags"] = [next((tag for prefix, tag in TAGS if path.startswith(prefix)), "Other")]
            responses = operation.setdefault("responses", {})
            error = "OpenAIError" if is_openai_path(path) else "ErrorBody"
            if responses.pop("422", None) is not None:  # a route with parameters or a body: its mistakes are 400s
                responses.setdefault("400", {"description": "A mistake in the request, named in the message"})
            for answer in responses.values():
                if answer.get("description") != "Successful Response" and "content" not in answer:
                    answer["content"] = {"application/json": {"schema": {"$ref": f"#/components/schemas/{error}"}}}
            if method == "post" and path.endswith("/infer"):
                operation["requestBody"] = copy.deepcopy(v2_body)
                responses["200"] = {"description": "The outputs; `parameters.latency_ms` is the time in the server",
                                    "content": {"application/json": {"schema": {
                                        "$ref": "#/components/schemas/InferenceResponse"}, "example": V2_ANSWER}}}
                _error_responses(responses, error)
            elif method == "post" and path.endswith(":predict"):
                operation["requestBody"] = copy.deepcopy(v1_body)
                _error_responses(responses, error)
    return document


def _error_responses(responses: dict[str, Any], error: str) -> None:
    for status, why in (("404", "No such model or version"), ("413", "Body over the model's max_body_bytes"),
                        ("429", "The model's queue is full (Retry-After)"), ("503", "The model is not ready"),
                        ("504", "The work did not start before the deadline (timeout_ms)")):
        responses.setdefault(status, {"description": why, "content": {"application/json": {
            "schema": {"$ref": f"#/components/schemas/{error}"}}}})


def _add_schema(components: dict[str, Any], model: type[BaseModel]) -> None:
    schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
    for name, definition in schema.pop("$defs", {}).items():
        components.setdefault(name, definition)
    components[model.__name__] = schema


def _name_served_models(document: dict[str, Any], repository: PredictorRepository) -> None:
    """Examples that name models served now: the first ready model for `model_name`, the first
    embedding model in the OpenAI body (the document is otherwise the same for every request)."""
    served = sorted(repository.get_models())
    embedders = list(embedding_models(repository))
    for path, operations in document["paths"].items():
        for operation in operations.values():
            for parameter in operation.get("parameters", []):
                if parameter.get("name") in ("model_name", "model_id") and served:
                    parameter["example"] = embedders[0] if parameter["name"] == "model_id" and embedders else served[0]
                if parameter.get("name") == "model_version" and parameter.get("in") == "path":
                    parameter["example"] = "1"
            body = operation.get("requestBody", {}).get("content", {}).get("application/json")
            if body is not None and is_openai_path(path) and embedders:
                body["example"] = {"model": embedders[0], "input": EXAMPLE_TEXTS}
