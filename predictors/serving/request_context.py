"""Request ids and per-request accounting, for REST (an ASGI middleware) and gRPC (an interceptor).

Each inference request gets an id: the client's `x-request-id` header (gRPC: metadata), else the
V2 body's `id`, else a generated one. It is echoed in the `x-request-id` response header (gRPC:
trailing metadata), in the response body's `id`, in error bodies (`request_id`, see errors.py) and
in every log line written while the request runs (logs.py). The same wrappers count the request in
metrics (protocol, outcome, whole-request latency, in-flight).
"""

from __future__ import annotations

import contextvars
import re
import time
import uuid
from dataclasses import dataclass
from typing import Any, Callable

from grpc_interceptor import AsyncServerInterceptor

from . import metrics

HEADER = "x-request-id"
MAX_ID_LENGTH = 128  # a longer client id is replaced, so logs and headers stay bounded
_INFER_PATHS = (
    (re.compile(r"^/v2/models/(?P<model>[^/]+)(?:/versions/(?P<version>[^/]+))?/infer$"), "v2_rest"),
    (re.compile(r"^/v1/models/(?P<model>[^/:]+)(?::predict)$"), "v1"),
)
GRPC_INFER = "/inference.GRPCInferenceService/ModelInfer"


@dataclass
class RequestContext:
    """Mutable, shared by reference: the transport wrapper creates it, the model fills it in."""

    request_id: str
    from_client: bool  # the id came from the x-request-id header / metadata
    model: str | None = None
    texts: int = 0


_current: contextvars.ContextVar[RequestContext | None] = contextvars.ContextVar("predictors_request", default=None)


def current() -> RequestContext | None:
    return _current.get()


def current_request_id() -> str | None:
    """The id of the request being served in this task, or None outside a request."""
    context = _current.get()
    return context.request_id if context is not None else None


def new_request_id() -> str:
    return uuid.uuid4().hex


def _client_id(value: str | None) -> str | None:
    value = (value or "").strip()
    # It travels in an HTTP header and gRPC metadata, which carry printable ASCII only.
    return value if value and len(value) <= MAX_ID_LENGTH and value.isascii() and value.isprintable() else None


def begin(header_id: str | None, model: str | None = None) -> RequestContext:
    client = _client_id(header_id)
    context = RequestContext(client or new_request_id(), client is not None, model)
    _current.set(context)
    return context


def adopt(body_id: str | None, texts: int) -> str:
    """Called by the model once the body is decoded: the id the response body carries. A V2 body
    `id` becomes the request's id when no header named one; otherwise the header's (or generated)
    id is used, so a client always gets an id back."""
    context = _current.get()
    if context is None:  # outside a transport wrapper (warm-up, build steps)
        return body_id or new_request_id()
    context.texts = texts
    body = _client_id(body_id)
    if body is not None and not context.from_client:
        context.request_id = body
    return body_id if body_id else context.request_id  # V2 echoes the body's id as sent


# ---- REST ---------------------------------------------------------------------------------------
class RequestIdMiddleware:
    """Pure ASGI (no BaseHTTPMiddleware): the context variable set here is the one the endpoint and
    the exception handlers see."""

    def __init__(self, app: Callable) -> None:
        self.app = app

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        header = next((v.decode("latin-1") for k, v in scope.get("headers", []) if k == HEADER.encode()), None)
        protocol, key = _infer_route(scope.get("path", ""))
        context = begin(header, key[0] if key else None)
        status = 499  # stays so when no answer was sent: the client hung up (nginx's "client closed request")
        started = time.perf_counter()

        async def send_with_id(message: dict) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = [(k, v) for k, v in message.get("headers", []) if k.lower() != HEADER.encode()]
                message = {**message, "headers": [*headers, (HEADER.encode(), context.request_id.encode("latin-1"))]}
            await send(message)

        if key is None:
            await self.app(scope, receive, send_with_id)
            return
        metrics.in_flight(key, 1)
        try:
            await self.app(scope, receive, send_with_id)
        finally:
            metrics.in_flight(key, -1)
            metrics.observe_request(
                key, protocol, metrics.outcome_for_status(status), time.perf_counter() - started, context.texts
            )


def _infer_route(path: str) -> tuple[str | None, tuple[str, str] | None]:
    for pattern, protocol in _INFER_PATHS:
        match = pattern.match(path)
        if match:
            return protocol, metrics.tracked(match["model"], match.groupdict().get("version"))
    return None, None


# ---- gRPC ---------------------------------------------------------------------------------------
class RequestIdInterceptor(AsyncServerInterceptor):
    """Innermost gRPC interceptor: sees the handler's own exception (before the status interceptor
    turns it into a status code), so the outcome is classified the same way as over REST."""

    async def intercept(self, method: Any, request: Any, context: Any, method_name: str) -> Any:
        metadata = {k.lower(): v for k, v in (context.invocation_metadata() or ()) if isinstance(v, str)}
        header = metadata.get(HEADER) or (getattr(request, "id", None) if method_name == GRPC_INFER else None)
        key = metrics.tracked(request.model_name, request.model_version or None) if method_name == GRPC_INFER else None
        request_context = begin(header, key[0] if key else None)
        request_context.from_client = request_context.from_client or bool(getattr(request, "id", None))
        context.set_trailing_metadata(((HEADER, request_context.request_id),))
        if key is None:
            return await method(request, context)
        metrics.in_flight(key, 1)
        started = time.perf_counter()
        error: BaseException | None = None
        try:
            return await method(request, context)
        except BaseException as exc:
            error = exc
            raise
        finally:
            metrics.in_flight(key, -1)
            metrics.observe_request(
                key, "v2_grpc", metrics.outcome_for_exception(error), time.perf_counter() - started,
                request_context.texts,
            )
