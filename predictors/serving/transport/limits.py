"""Request size limits enforced before any parsing: an ASGI middleware for REST bodies.

`BodyLimit` reads a request's body itself, counting bytes, before the app sees any of it: a
Content-Length over the limit is refused without reading, and a body that streams past the limit
(no or a lying Content-Length) is refused as soon as it does, so no request makes the server hold
more than the limit. The limit is the model's `max_body_bytes` (predictor.yaml) for its routes and
the server-wide default elsewhere. gRPC has its own limit (kserve's 8 MiB message length).

`Content-Encoding: gzip` / `deflate` (which tritonclient.http's request compression sends) is
decoded here with the same cap on the decoded size, so a small compressed body cannot expand into
gigabytes; any other encoding is a 415. Every refusal is JSON `{"error": "..."}` naming the limit.

A refused body is still read to its end (and dropped, up to DRAIN_MAX_BYTES) before the answer: a
client that sends its whole body before reading (urllib, most HTTP/1.1 clients without `Expect:
100-continue`) would otherwise see a reset connection instead of the 413. A client that asked for
`100-continue` is answered at once, before it sends the body.
"""

from __future__ import annotations

import asyncio
import zlib
from typing import Any, Awaitable, Callable

from starlette.responses import JSONResponse

from ...model.settings import DEFAULT_MAX_BODY_BYTES
from ..memory import trim_heap
from .paths import model_route

Receive = Callable[[], Awaitable[dict]]
Send = Callable[[dict], Awaitable[None]]

TRIM_AFTER_BYTES = 1024 * 1024  # after a body this large, free heap pages are returned to the OS
DRAIN_MAX_BYTES = 256 * 1024 * 1024  # past this, a refused body is not read further: answer and close
# HTTP content codings zlib can undo, and the wbits that select each container (RFC 9110 8.4.1).
_DECODABLE = {"gzip": 16 + zlib.MAX_WBITS, "x-gzip": 16 + zlib.MAX_WBITS, "deflate": zlib.MAX_WBITS}


class RequestRefused(Exception):
    """A body the server will not read further; the status and message are the answer."""

    def __init__(self, status: int, message: str, unread_body: bool = False) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.unread_body = unread_body  # the client may still be sending the rest of the body


def decode_content(body: bytes, encoding: str, limit: int) -> bytes:
    """The body with its Content-Encoding undone, refusing to produce more than `limit` bytes."""
    coding = encoding.strip().lower()
    if coding in ("", "identity"):
        return body
    if coding not in _DECODABLE:
        raise RequestRefused(
            415, f"Content-Encoding {coding!r} is not supported; send the body uncompressed or as gzip or deflate"
        )
    decompressor = zlib.decompressobj(_DECODABLE[coding])
    try:
        decoded = decompressor.decompress(body, limit + 1)
    except zlib.error as exc:
        raise RequestRefused(400, f"the body is not valid {coding} data ({exc})") from None
    if len(decoded) > limit:
        raise RequestRefused(
            413, f"request body decompresses to more than the limit of {limit} bytes (max_body_bytes)"
        )
    if not decompressor.eof:
        raise RequestRefused(400, f"the {coding} body is truncated: its compressed stream does not end")
    return decoded


class BodyLimit:
    """ASGI middleware: refuse a REST body over the limit before the app reads it (see module doc).

    `models.body_limit(name)` gives a route's limit: its model's `max_body_bytes`, also for a lazy
    model not loaded yet."""

    def __init__(self, app: Any, models: Any, default_limit: int = DEFAULT_MAX_BODY_BYTES) -> None:
        self.app = app
        self.models = models
        self.default_limit = default_limit

    def limit_for(self, path: str) -> int:
        route = model_route(path)
        # An OpenAI body names its model: the default limit here, the model's own once parsed (openai_api.py)
        return (self.models.body_limit(route.model) if route and route.model else None) or self.default_limit

    async def __call__(self, scope: dict, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.limit_for(scope.get("path", ""))
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", ())}
        try:
            body = await self._read(receive, headers.get("content-length"), limit)
            encoding = headers.get("content-encoding", "")
            decoded = decode_content(body, encoding, limit)
        except RequestRefused as refused:
            if refused.unread_body and headers.get("expect", "").lower() != "100-continue":
                await _discard_body(receive, DRAIN_MAX_BYTES)
            await JSONResponse({"error": refused.message}, status_code=refused.status)(scope, receive, send)
            return
        if decoded is not body:  # the app sees the decoded body, described as such
            scope = dict(scope)
            scope["headers"] = [
                (k, v) for k, v in scope["headers"] if k.lower() not in (b"content-encoding", b"content-length")
            ] + [(b"content-length", str(len(decoded)).encode())]
        large = len(decoded) >= TRIM_AFTER_BYTES
        del body
        try:
            await self.app(scope, replay_body(decoded, receive), send)
        finally:
            if large:  # give the parsed copies' heap pages back, so the pod's RSS returns to where it was
                del decoded
                await asyncio.to_thread(trim_heap)

    @staticmethod
    async def _read(receive: Receive, content_length: str | None, limit: int) -> bytes:
        if content_length is not None and content_length.strip().isdigit() and int(content_length) > limit:
            raise RequestRefused(
                413, f"request body of {int(content_length)} bytes is over the limit of {limit} bytes (max_body_bytes)",
                unread_body=True,
            )
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":  # the client hung up mid-body: nothing to answer
                raise RequestRefused(400, "the client disconnected before sending the whole body")
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                raise RequestRefused(
                    413, f"request body is over the limit of {limit} bytes (max_body_bytes)",
                    unread_body=message.get("more_body", False),
                )
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)


async def _discard_body(receive: Receive, max_bytes: int) -> None:
    """Read the rest of a refused body without keeping it, up to `max_bytes`."""
    read = 0
    while read <= max_bytes:
        message = await receive()
        if message["type"] != "http.request" or not message.get("more_body", False):
            return
        read += len(message.get("body", b""))


def replay_body(body: bytes, receive: Receive) -> Receive:
    """A receive that hands the buffered body over once, then waits on the client (for disconnects).
    It lets go of the body once handed over, so only the app's own references keep it alive."""
    pending = [body]

    async def replay() -> dict:
        if not pending:
            return await receive()
        return {"type": "http.request", "body": pending.pop(), "more_body": False}

    return replay
