"""REST answers to every error a request can end in: JSON `{"error": "..."}` (plus `request_id` when
the request has one), with the status errors.classify gives.

kserve 0.21's own handlers log every client mistake as ERROR with a traceback and turn unknown
exceptions into `"TypeName : text"` 500s; these replace them.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from kserve.errors import InferenceError, InvalidInput, ModelNotFound, ModelNotReady, ServerNotReady, UnsupportedProtocol
from starlette.exceptions import HTTPException as StarletteHTTPException

from ..errors import ServingError, classify
from ..request_context import current_request_id

logger = logging.getLogger("kserve.predictors")


def error_response(request: Request | None, status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    body: dict[str, Any] = {"error": message}
    request_id = current_request_id()
    if request_id:
        body["request_id"] = request_id
    return JSONResponse(status_code=status, content=body, headers=headers)


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


class ErrorBoundary:
    """ASGI middleware outside the connection guards (inside the request-id, CORS and OpenAI error
    shape middlewares): an exception that no route handler answered (a body that stalled, a bug)
    gets its JSON answer here (408, 413..., 500 for a bug) and goes no further. Starlette's
    outermost error middleware would answer it too, but then re-raise it, and uvicorn closes the
    client's kept-alive connection after any exception, so the client's next request would fail as
    well."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracked_send(message: dict) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, tracked_send)
        except Exception as exc:
            if started:  # half an answer is out: nothing better than closing the connection
                raise
            await rest_error(exc)(scope, receive, send)
