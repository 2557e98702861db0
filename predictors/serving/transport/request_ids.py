"""Request ids and per-request accounting at the transport: an ASGI middleware for REST and an
interceptor for gRPC.

Each begins the request's context (serving/request_context.py) from the client's `x-request-id`
header (gRPC: metadata), echoes the id in the `x-request-id` response header (gRPC: trailing
metadata), and counts the request in metrics (protocol, outcome, whole-request latency, in-flight).
"""

from __future__ import annotations

import time
from typing import Any, Callable

from grpc_interceptor import AsyncServerInterceptor

from ..observability import metrics
from ..request_context import HEADER, begin
from .paths import infer_route

GRPC_INFER = "/inference.GRPCInferenceService/ModelInfer"


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
        route = infer_route(scope.get("path", ""))
        protocol = route.protocol if route else None
        key = metrics.tracked(route.model, route.version) if route else None
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
                context.served_by or key, protocol, metrics.outcome_for_status(status), time.perf_counter() - started,
                context.texts,
            )


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
                request_context.served_by or key, "v2_grpc", metrics.outcome_for_exception(error),
                time.perf_counter() - started, request_context.texts,
            )
