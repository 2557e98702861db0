"""The common V2 REST request -- a JSON body to /v2/models/<name>[/versions/<v>]/infer -- served
without FastAPI's machinery in between.

Under many small requests the event loop is the bottleneck beside the inference threads: routing,
dependency solving, validating the body into pydantic models, then validating and re-encoding the
answer cost more loop time per one-text request than reading it and writing the answer. Here the body
is parsed once from its bytes (pydantic-core), goes through the same dataplane and model as the full
route, and the answer is written with orjson, field for field as the full route writes it.

Anything else goes to the full route untouched, with the body it already read: binary-extension and
CloudEvents bodies, other content types, and every body this path does not parse (the route answers
those with its own, identical error). Errors past parsing (unknown or unloaded model, 429, 503, 504,
...) get the same JSON answers as the route's exception handlers give (errors.rest_error).
"""

from __future__ import annotations

from typing import Any, Awaitable, Callable

import orjson

from .. import codec
from ..repository import versioned_key
from .error_handlers import rest_error
from .limits import replay_body
from .paths import infer_route

Receive = Callable[[], Awaitable[dict]]
Send = Callable[[dict], Awaitable[None]]

_JSON_HEADERS = [(b"content-type", b"application/json")]


class V2JsonInference:
    """ASGI middleware, inside BodyLimit (so the body it reads is already size-checked and decoded)."""

    def __init__(self, app: Any, dataplane: Any) -> None:
        self.app = app
        self.dataplane = dataplane

    async def __call__(self, scope: dict, receive: Receive, send: Send) -> None:
        plain = scope["type"] == "http" and scope.get("method") == "POST" and not scope.get("query_string")
        route = infer_route(scope.get("path", "")) if plain else None
        if route is None or route.protocol != "v2_rest":  # ?model_version= and everything else: the route's
            await self.app(scope, receive, send)
            return
        headers: dict[str, str] = {}
        for key, value in scope.get("headers", ()):
            headers.setdefault(key.decode("latin-1").lower(), value.decode("latin-1"))  # first wins, as Starlette's
        if not _plain_json(headers):
            await self.app(scope, receive, send)
            return
        body, complete = await _read_body(receive)
        if not complete:  # the client hung up mid-body: nobody to answer
            return
        key = versioned_key(route.model, route.version) if route.version else route.model
        try:
            request = codec.decode_rest_v2_json(body, key)
        except Exception:  # the route parses it its own way and gives its own answer
            await self.app(scope, replay_body(body, receive), send)
            return
        try:  # an unknown, loading or unloaded model too: the dataplane's lookup raises what the route's would
            response, response_headers = await self.dataplane.infer(model_name=key, request=request, headers=headers)
            encoded, encode_headers = self.dataplane.encode(model_name=key, response=response, headers=headers, req_attributes={})
        except Exception as exc:  # noqa: BLE001 -- every error is answered as the route's handlers answer it
            await rest_error(exc)(scope, receive, send)
            return
        extra = [
            (k.lower().encode("latin-1"), str(v).encode("latin-1"))
            for k, v in {**response_headers, **encode_headers}.items()
            if k.lower() not in ("content-length", "content-type")
        ]
        if isinstance(encoded, bytes):  # binary outputs: as the route sends them, without a content type
            payload, start_headers = encoded, extra
        else:
            payload, start_headers = orjson.dumps(_as_route_writes_it(encoded)), [*_JSON_HEADERS, *extra]
        start_headers.append((b"content-length", str(len(payload)).encode()))
        await send({"type": "http.response.start", "status": 200, "headers": start_headers})
        await send({"type": "http.response.body", "body": payload})


def _plain_json(headers: dict[str, str]) -> bool:
    """A JSON body (or one with no Content-Type, as tritonclient.http sends) that is not a
    binary-extension or CloudEvents request."""
    if codec.BINARY_HEADER in headers or "ce-specversion" in headers:
        return False
    content_type = headers.get("content-type")
    if content_type is None:
        return True
    return content_type.split(";")[0].strip().lower() == "application/json"


async def _read_body(receive: Receive) -> tuple[bytes, bool]:
    chunks: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return b"", False
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return chunks[0] if len(chunks) == 1 else b"".join(chunks), True


def _as_route_writes_it(response: dict[str, Any]) -> dict[str, Any]:
    """kserve's route returns an InferenceResponse model, so its JSON has every field in the model's
    order, absent ones as null; the same here."""
    return {
        "model_name": response["model_name"],
        "model_version": response.get("model_version"),
        "id": response["id"],
        "parameters": response.get("parameters"),
        "outputs": [
            {
                "name": output["name"],
                "shape": output["shape"],
                "datatype": output["datatype"],
                "parameters": output.get("parameters"),
                "data": output.get("data"),
            }
            for output in response["outputs"]
        ],
    }
