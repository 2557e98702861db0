"""Admission control's answers and a request's deadline.

The errors are serving.errors' QueueFull (HTTP 429 + Retry-After, gRPC RESOURCE_EXHAUSTED) and
DeadlineExceeded (504, DEADLINE_EXCEEDED); the messages say why and what the client can do.
"""

from __future__ import annotations

import math
from contextvars import ContextVar
from typing import Any, Mapping

from kserve.errors import InvalidInput
from kserve.protocol.infer_type import InferRequest, to_http_parameters

from ..errors import DeadlineExceeded, QueueFull

#: The request parameter (V2 `parameters`, V1 body `parameters`) and the headers that set a deadline.
TIMEOUT_PARAMETER = "timeout_ms"
TIMEOUT_HEADERS = ("timeout-ms", "x-timeout-ms")
#: The deadline of a model that sets no timeout_ms in predictor.yaml.
DEFAULT_TIMEOUT_MS = 30_000

#: The current request's deadline in seconds, set by preprocess (which sees the request's parameters)
#: and read by predict: kserve awaits both in the same task, so they share this context.
REQUEST_TIMEOUT: ContextVar[float | None] = ContextVar("request_timeout_seconds", default=None)
#: Seconds the current request already waited for its model to load (a lazy model's first request):
#: set by the transport's lookup, taken off the request's deadline by preprocess.
LOAD_WAITED: ContextVar[float] = ContextVar("load_waited_seconds", default=0.0)


def after_load_wait(timeout_seconds: float | None) -> float | None:
    """What is left of a deadline once the request's wait for its model's load is taken off."""
    if timeout_seconds is None:
        return None
    return max(0.001, timeout_seconds - LOAD_WAITED.get())


def queue_full(model: str, queued: int, requested: int, limit: int, retry_after_seconds: float) -> QueueFull:
    return QueueFull(
        f"model '{model}' is overloaded: {queued} texts are queued and this request adds {requested}, "
        f"over its limit of {limit} (max_queue_texts); retry after {math.ceil(retry_after_seconds)} s",
        retry_after_seconds,
    )


def queue_full_at_door(model: str, queued: int, arriving: int, estimate: int, limit: int, retry_after_seconds: float) -> QueueFull:
    return QueueFull(
        f"model '{model}' is overloaded: {queued} texts are queued and about {arriving} more are arriving in "
        f"requests already let in; this request (about {estimate} texts by its size) would go over its limit of "
        f"{limit} (max_queue_texts); retry after {math.ceil(retry_after_seconds)} s",
        retry_after_seconds,
    )


def deadline_unreachable(model: str, wait_seconds: float, timeout_seconds: float, retry_after_seconds: float) -> QueueFull:
    return QueueFull(
        f"model '{model}' is overloaded: the work queued ahead of this request needs about {wait_seconds:.1f} s, "
        f"longer than its {timeout_seconds * 1000:.0f} ms deadline (timeout_ms); retry after "
        f"{math.ceil(retry_after_seconds)} s or send fewer texts",
        retry_after_seconds,
    )


def deadline_exceeded(model: str, timeout_seconds: float | None, texts: int) -> DeadlineExceeded:
    within = f"within its {timeout_seconds * 1000:.0f} ms deadline" if timeout_seconds else "before its deadline"
    return DeadlineExceeded(
        f"model '{model}' could not start the work for all {texts} texts of this request {within} "
        f"(the timeout_ms request parameter or header; the default is in predictor.yaml); the queued work was dropped"
    )


def request_timeout_seconds(
    payload: InferRequest | Mapping[str, Any] | Any, headers: Mapping[str, str] | None, default_ms: int | None
) -> float | None:
    """The deadline a request asks for (request parameter first, then header), else the model's
    default; None means no deadline. A value that is not a positive number is a client error."""
    value: Any = None
    parameters: Any = None
    if isinstance(payload, InferRequest):
        parameters = to_http_parameters(payload.parameters) if payload.parameters else None
    elif isinstance(payload, Mapping):
        parameters = payload.get("parameters")
    if isinstance(parameters, Mapping):
        value = parameters.get(TIMEOUT_PARAMETER)
    if value is None and headers:
        lowered = {str(k).lower(): v for k, v in headers.items()}
        value = next((lowered[h] for h in TIMEOUT_HEADERS if h in lowered), None)
    if value is None:
        return None if default_ms is None else default_ms / 1000
    try:
        milliseconds = float(value)
    except (TypeError, ValueError):
        milliseconds = float("nan")
    if isinstance(value, bool) or not math.isfinite(milliseconds) or milliseconds <= 0:
        raise InvalidInput(f"{TIMEOUT_PARAMETER} must be a positive number of milliseconds, got {repr(value)[:60]}")
    return milliseconds / 1000
