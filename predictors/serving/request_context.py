"""The request being served in this task: its id, model and texts, in a context variable.

Each inference request gets an id: the client's `x-request-id` header (gRPC: metadata), else the
V2 body's `id`, else a generated one. The transport's wrappers (transport/request_ids.py) begin the
context; the model adopts the body's id once it is decoded; error bodies and every log line written
while the request runs read it from here.
"""

from __future__ import annotations

import contextvars
import time
import uuid
from dataclasses import dataclass, field

HEADER = "x-request-id"
MAX_ID_LENGTH = 128  # a longer client id is replaced, so logs and headers stay bounded


@dataclass
class RequestContext:
    """Mutable, shared by reference: the transport wrapper creates it, the model fills it in."""

    request_id: str
    from_client: bool  # the id came from the x-request-id header / metadata
    model: str | None = None
    texts: int = 0
    served_by: tuple[str, str] | None = None  # (model, version) of the instance that served it
    protocol: str | None = None  # the metrics' protocol label of an inference request (v2_rest, v1, openai...)
    started: float = field(default_factory=time.perf_counter)  # when the transport began the request
    # Filled in by the model once its texts have run: seconds per inference stage (queue, tokenize,
    # backend, postprocess), the tokens the model ran, and the texts answered from the response cache.
    stages: dict[str, float] = field(default_factory=dict)
    tokens: int = 0
    cached_texts: int = 0

    def elapsed_seconds(self) -> float:
        return time.perf_counter() - self.started


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


def begin(header_id: str | None, model: str | None = None, protocol: str | None = None) -> RequestContext:
    client = _client_id(header_id)
    context = RequestContext(client or new_request_id(), client is not None, model, protocol=protocol)
    _current.set(context)
    return context


def adopt(body_id: str | None, texts: int, served_by: tuple[str, str] | None = None) -> str:
    """Called by the model once the body is decoded: the id the response body carries. A V2 body
    `id` becomes the request's id when no header named one; otherwise the header's (or generated)
    id is used, so a client always gets an id back. `served_by` names the model version serving it."""
    context = _current.get()
    if context is None:  # outside a transport wrapper (warm-up, build steps)
        return body_id or new_request_id()
    context.texts = texts
    context.served_by = served_by
    body = _client_id(body_id)
    if body is not None and not context.from_client:
        context.request_id = body
    return body_id if body_id else context.request_id  # V2 echoes the body's id as sent


def record_run(stages: dict[str, float], tokens: int, cached_texts: int) -> None:
    """Called by the model once a request's texts have run: what the transport reports in its answer
    (Server-Timing, the OpenAI `usage`). Outside a request (warm-up) it does nothing."""
    context = _current.get()
    if context is not None:
        context.stages = stages
        context.tokens = tokens
        context.cached_texts = cached_texts


def latency_ms() -> float | None:
    """Milliseconds since the current request arrived (None outside a request), as answers carry it."""
    context = _current.get()
    return None if context is None else round(1000 * context.elapsed_seconds(), 2)
