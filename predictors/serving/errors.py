"""Errors a request can end in, and their one mapping to HTTP and gRPC.

Every error answer is JSON `{"error": "..."}` (plus `request_id` when the request has one), with a
message about the client's mistake or the model's state, never Python internals. kserve 0.21's own
handlers log every client mistake as ERROR with a traceback and turn unknown exceptions into
`"TypeName : text"` 500s; these replace them.
"""

from __future__ import annotations

import logging
from http import HTTPStatus
from typing import Any

import grpc
from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from kserve.errors import InferenceError, InvalidInput, ModelNotFound, ModelNotReady, ServerNotReady, UnsupportedProtocol
from starlette.exceptions import HTTPException as StarletteHTTPException

from .request_ids import current_request_id

logger = logging.getLogger("kserve.predictors")


class ServingError(Exception):
    """A request that cannot be served, with its HTTP status and gRPC code."""

    http_status: HTTPStatus = HTTPStatus.INTERNAL_SERVER_ERROR
    grpc_code: grpc.StatusCode = grpc.StatusCode.INTERNAL

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def headers(self) -> dict[str, str]:
        return {}


class BadModelName(ServingError):
    """A model name that is no folder directly under the models folder."""

    http_status = HTTPStatus.BAD_REQUEST
    grpc_code = grpc.StatusCode.INVALID_ARGUMENT


class UnknownModel(ServingError):
    http_status = HTTPStatus.NOT_FOUND
    grpc_code = grpc.StatusCode.NOT_FOUND


class UnknownVersion(ServingError):
    http_status = HTTPStatus.NOT_FOUND
    grpc_code = grpc.StatusCode.NOT_FOUND


class ModelUnavailable(ServingError):
    """Loading, unloaded, failed to load, or draining: retry later (503 / UNAVAILABLE)."""

    http_status = HTTPStatus.SERVICE_UNAVAILABLE
    grpc_code = grpc.StatusCode.UNAVAILABLE


class LoadFailed(ServingError):
    """A repository load whose new version did not load; the serving one is untouched."""

    http_status = HTTPStatus.BAD_REQUEST
    grpc_code = grpc.StatusCode.FAILED_PRECONDITION


class QueueFull(ServingError):
    """Admission control: the model's queue has no room for the request."""

    http_status = HTTPStatus.TOO_MANY_REQUESTS
    grpc_code = grpc.StatusCode.RESOURCE_EXHAUSTED

    def __init__(self, message: str, retry_after_seconds: float = 1.0) -> None:
        super().__init__(message)
        self.retry_after_seconds = retry_after_seconds

    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(max(1, round(self.retry_after_seconds)))}


class DeadlineExceeded(ServingError):
    http_status = HTTPStatus.GATEWAY_TIMEOUT
    grpc_code = grpc.StatusCode.DEADLINE_EXCEEDED


def error_response(request: Request | None, status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    body: dict[str, Any] = {"error": message}
    request_id = current_request_id()
    if request_id:
        body["request_id"] = request_id
    return JSONResponse(status_code=status, content=body, headers=headers)


def classify(exc: BaseException) -> tuple[int, grpc.StatusCode, str, dict[str, str]]:
    """(HTTP status, gRPC code, message, extra headers) for any exception a request can end in."""
    if isinstance(exc, ServingError):
        return exc.http_status, exc.grpc_code, exc.message, exc.headers()
    if isinstance(exc, (InvalidInput, UnsupportedProtocol)):
        return 400, grpc.StatusCode.INVALID_ARGUMENT, str(getattr(exc, "reason", exc)), {}
    if isinstance(exc, ModelNotFound):
        return 404, grpc.StatusCode.NOT_FOUND, str(exc), {}
    if isinstance(exc, (ModelNotReady, ServerNotReady)):
        return 503, grpc.StatusCode.UNAVAILABLE, str(exc), {}
    if isinstance(exc, InferenceError):
        return 500, grpc.StatusCode.INTERNAL, f"inference failed: {exc}", {}
    return 500, grpc.StatusCode.INTERNAL, "internal error; the server log has the details", {}


def rest_error(exc: BaseException) -> JSONResponse:
    """The JSON answer to a request that ended in `exc`, logged as a refusal or (500) a failure."""
    status, _, message, headers = classify(exc)
    if status == 500:
        logger.error("request failed: %s", message, exc_info=exc)
    else:
        logger.info("request refused (%d): %s", status, message)
    return error_response(None, status, message, headers)


async def _serving_error(request: Request, exc: Exception) -> JSONResponse:
    return rest_error(exc)


async def _http_exception(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    messages = {404: f"no route {request.method} {request.url.path}", 405: f"method {request.method} is not allowed on {request.url.path}"}
    detail = exc.detail if isinstance(exc.detail, str) else str(exc.detail)
    message = messages.get(exc.status_code, detail)
    return error_response(request, exc.status_code, message, getattr(exc, "headers", None))


async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
    problems = "; ".join(
        f"{'.'.join(str(p) for p in err.get('loc', ()) if p != 'body') or 'body'}: {err.get('msg')}" for err in exc.errors()
    )
    return error_response(request, 400, f"invalid request body: {problems}")


#: Exception class -> handler, installed after kserve's own so these win.
REST_HANDLERS = {
    ServingError: _serving_error,
    InvalidInput: _serving_error,
    UnsupportedProtocol: _serving_error,
    InferenceError: _serving_error,
    ModelNotFound: _serving_error,
    ModelNotReady: _serving_error,
    ServerNotReady: _serving_error,
    StarletteHTTPException: _http_exception,
    RequestValidationError: _validation_error,
    Exception: _serving_error,
}
