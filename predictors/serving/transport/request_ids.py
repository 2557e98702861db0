"""Request ids, timings and per-request accounting at the transport: an ASGI middleware for REST and
an interceptor for gRPC.

Each begins the request's context (serving/request_context.py) from the client's `x-request-id`
header (gRPC: metadata), echoes the id in the `x-request-id` response header (gRPC: trailing
metadata), answers with a W3C `Server-Timing` header (gRPC: a `server-timing` trailer) holding the
stages of inference the model recorded and the total, and counts the request in metrics (protocol,
outcome, whole-request latency, in-flight).
"""

from __future__ import annotations

from typing import Any, Callable

from grpc_interceptor import AsyncServerInterceptor

from ..observability import metrics
from ..request_context import HEADER, RequestContext, begin
from .paths import infer_route

GRPC_INFER = "/inference.GRPCInferenceService/ModelInfer"
SERVER_TIMING = "server-timing"


def server_timing(context: RequestContext) -> str:
    """The W3C Server-Timing value of a request: each stage of inference the model recorded (queue:
    waiting for its first batch; tokenize, backend, postprocess: summed over the batches that ran its
    texts), `cache` when the response cache answered some of its texts, and `total`, from its arrival
    until now (the answer being sent). Durations in milliseconds, as the header defines them."""
    parts = [f"{stage};dur={1000 * seconds:.2f}" for stage, seconds in context.stages.items()]
    if context.cached_texts:
        parts.append(f'cache;desc="{context.cached_texts} of {context.texts} texts"')
    parts.append(f"total;dur={1000 * context.elapsed_seconds():.2f}")
    return ", ".join(parts)


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
        # An OpenAI request names its model in the body: its route counts it in flight and sets
        # `served_by` once it knows the model.
        key = metrics.tracked(route.model, route.version) if route and route.model else None
        context = begin(header, key[0] if key else None, protocol)
        status = 499  # stays so when no answer was sent: the client hung up (nginx's "client closed request")

        async def send_with_id(message: dict) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                ours = (HEADER.encode(), SERVER_TIMING.encode())
                headers = [(k, v) for k, v in message.get("headers", []) if k.lower() not in ours]
                message = {**message, "headers": [
                    *headers, (HEADER.encode(), context.request_id.encode("latin-1")),
                    (SERVER_TIMING.encode(), server_timing(context).encode("latin-1")),
                ]}
            await send(message)

        if route is None:
            await self.app(scope, receive, send_with_id)
            return
        if key is not None:
            metrics.in_flight(key, 1)
        try:
            await self.app(scope, receive, send_with_id)
        finally:
            if key is not None:
                metrics.in_flight(key, -1)
            counted = context.served_by or key
            if counted is not None:  # never a label from a model this server does not serve
                metrics.observe_request(
                    counted, protocol, metrics.outcome_for_status(status), context.elapsed_seconds(), context.texts,
                )


# ---- gRPC ---------------------------------------------------------------------------------------
class RequestIdInterceptor(AsyncServerInterceptor):
    """Innermost gRPC interceptor: sees the handler's own exception (before the status interceptor
    turns it into a status code), so the outcome is classified the same way as over REST."""

    async def intercept(self, method: Any, request: Any, context: Any, method_name: str) -> Any:
        metadata = {k.lower(): v for k, v in (context.invocation_metadata() or ()) if isinstance(v, str)}
        header = metadata.get(HEADER) or (getattr(request, "id", None) if method_name == GRPC_INFER else None)
        key = metrics.tracked(request.model_name, request.model_version or None) if method_name == GRPC_INFER else None
        request_context = begin(header, key[0] if key else None, "v2_grpc" if method_name == GRPC_INFER else None)
        request_context.from_client = request_context.from_client or bool(getattr(request, "id", None))
        context.set_trailing_metadata(((HEADER, request_context.request_id),))
        if key is None:
            return await method(request, context)
        metrics.in_flight(key, 1)
        error: BaseException | None = None
        try:
            return await method(request, context)
        except BaseException as exc:
            error = exc
            raise
        finally:
            metrics.in_flight(key, -1)
            # Trailers go out after the handler (and after an abort, which keeps the ones set here).
            context.set_trailing_metadata(((HEADER, request_context.request_id), (SERVER_TIMING, server_timing(request_context))))
            metrics.observe_request(
                request_context.served_by or key, "v2_grpc", metrics.outcome_for_exception(error),
                request_context.elapsed_seconds(), request_context.texts,
            )
