"""The HTTP side beyond kserve's routes: readiness that says what is missing, version routes, the
repository API (load / unload / index), per-model config, and connection hygiene (slow or lying
clients are cut off; a client that hangs up has its queued work cancelled)."""

from __future__ import annotations

import asyncio
import logging
import os
import re
from typing import Any, Union

from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse
from kserve.protocol.rest.v2_datamodels import InferenceRequest
from kserve.protocol.rest.v2_endpoints import V2Endpoints
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from .errors import QueueFull, ServingError, error_response, rest_error
from .repository import PredictorRepository, versioned_key
from .scheduler import DOOR_TICKET, DoorTicket

logger = logging.getLogger("kserve.predictors")

def _seconds(variable: str, default: float) -> float:
    try:
        return max(0.1, float(os.environ.get(variable, default)))
    except ValueError:
        raise SystemExit(f"error: {variable} must be a number of seconds") from None


# From connection (or the last response) to a request's complete headers, and between two chunks
# of a request body; a slow or lying client is cut off after these.
HEADER_TIMEOUT_SECONDS = _seconds("PREDICTORS_HEADER_TIMEOUT", 10.0)
BODY_TIMEOUT_SECONDS = _seconds("PREDICTORS_BODY_TIMEOUT", 30.0)


class BodyTimeout(ServingError):
    http_status = 408

    def __init__(self, seconds: float) -> None:
        super().__init__(f"the request body did not arrive within {seconds:.0f} s; send the whole body promptly")


class TimedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools (C parser) HTTP/1.1 protocol with a deadline for the request headers: an
    idle connection or one that dribbles its headers a byte at a time is closed (uvicorn has no such
    timeout). A request already begun gets a JSON 408 first."""

    header_timeout = HEADER_TIMEOUT_SECONDS

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._request_begun = False
        self._arm_header_deadline()

    def _arm_header_deadline(self) -> None:
        self._header_deadline: asyncio.TimerHandle | None = self.loop.call_later(self.header_timeout, self._headers_too_slow)

    def _waiting_for_headers(self) -> bool:
        return self.cycle is None or self.cycle.response_complete

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._request_begun = True

    def on_headers_complete(self) -> None:
        self._request_begun = False
        if self._header_deadline is not None:
            self._header_deadline.cancel()
            self._header_deadline = None
        super().on_headers_complete()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing() and self._header_deadline is None:
            self._arm_header_deadline()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._header_deadline is not None:
            self._header_deadline.cancel()
            self._header_deadline = None
        super().connection_lost(exc)

    def _headers_too_slow(self) -> None:
        self._header_deadline = None
        if self._waiting_for_headers() and not self.transport.is_closing():
            logger.info("closing a connection from %s: no complete request headers within %.0fs", self.client, self.header_timeout)
            if self._request_begun:
                body = b'{"error":"request headers did not arrive in time"}'
                self.transport.write(
                    b"HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\n"
                    b"content-length: " + str(len(body)).encode() + b"\r\nconnection: close\r\n\r\n" + body
                )
            self.transport.close()


LIVENESS_PATHS = ("/", "/v2/health/live", "/v1/health/live")
_INFER_PATH = re.compile(r"^/v2/models/(?P<v2>[^/]+)(?:/versions/[^/]+)?/infer$|^/v1/models/(?P<v1>[^/:]+):predict$")


class ConnectionGuard:
    """ASGI middleware, outermost. Liveness is answered here, so it never waits behind inference or
    body parsing; an inference request to a model whose queue is full gets its 429 before its body
    is read (requests let in but not yet queued count with their estimated texts: scheduler.py);
    a body that stalls longer than BODY_TIMEOUT_SECONDS gets 408; a client that disconnects
    before its answer has its request task cancelled, which drops its queued work."""

    def __init__(self, app: Any, repository: PredictorRepository | None = None, body_timeout: float = BODY_TIMEOUT_SECONDS) -> None:
        self.app = app
        self.repository = repository
        self.body_timeout = body_timeout

    def _admission(self, scope: dict) -> DoorTicket | QueueFull | None:
        match = _INFER_PATH.match(scope.get("path", "")) if scope.get("method") == "POST" else None
        if match is None or self.repository is None:
            return None
        model = self.repository.get_model(match.group("v2") or match.group("v1"))
        scheduler = getattr(model, "scheduler", None)
        return scheduler.admit_before_reading(_content_length(scope)) if scheduler is not None else None

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if scope.get("method") == "GET" and scope.get("path") in LIVENESS_PATHS:
            await JSONResponse({"status": "alive"} if scope["path"] == "/" else {"live": True})(scope, receive, send)
            return
        admission = self._admission(scope)
        if isinstance(admission, QueueFull):  # answered before its body is read
            await rest_error(admission)(scope, receive, send)
            return
        if admission is None:
            await self._guarded(scope, receive, send)
            return
        DOOR_TICKET.set(admission)  # the request's task (created in _guarded) inherits it
        try:
            await self._guarded(scope, receive, send)
        finally:
            admission.release()  # if its texts never reached the queue (bad body, cache hits, hang-up)

    async def _guarded(self, scope: dict, receive: Any, send: Any) -> None:
        body_done = asyncio.Event()
        disconnected: asyncio.Future = asyncio.get_running_loop().create_future()
        responded = False

        async def guarded_receive() -> dict:
            if body_done.is_set():
                return await asyncio.shield(disconnected)
            try:
                message = await asyncio.wait_for(receive(), timeout=self.body_timeout)
            except asyncio.TimeoutError:
                raise BodyTimeout(self.body_timeout) from None
            if message["type"] == "http.disconnect" or not message.get("more_body", False):
                body_done.set()
            if message["type"] == "http.disconnect" and not disconnected.done():
                disconnected.set_result(message)
            return message

        async def tracked_send(message: dict) -> None:
            nonlocal responded
            if message["type"] == "http.response.start":
                responded = True
            await send(message)

        task = asyncio.ensure_future(self.app(scope, guarded_receive, tracked_send))

        async def watch() -> None:
            await body_done.wait()
            if not disconnected.done():
                message = await receive()  # after the body, uvicorn answers only on disconnect
                if not disconnected.done():
                    disconnected.set_result(message)
            if message_is_disconnect(disconnected.result()) and not responded and not task.done():
                logger.info("client hung up before its answer (%s %s); its work is cancelled", scope.get("method"), scope.get("path"))
                task.cancel()

        watcher = asyncio.ensure_future(watch())
        try:
            await task
        except asyncio.CancelledError:
            if not (disconnected.done() and not responded):
                raise
        finally:
            watcher.cancel()


def _content_length(scope: dict) -> int | None:
    for key, value in scope.get("headers", ()):
        if key == b"content-length":
            return int(value) if value.isdigit() else None
    return None


def message_is_disconnect(message: dict) -> bool:
    return message.get("type") == "http.disconnect"


def register_routes(app: FastAPI, repository: PredictorRepository, dataplane: Any, is_stopping: Any) -> None:
    """Added before kserve registers its own routes, so these answer first."""
    v2 = V2Endpoints(dataplane=dataplane, model_repository_extension=None)

    async def server_ready(request: Request) -> JSONResponse:
        if is_stopping():
            return error_response(request, 503, "shutting down")
        missing = repository.not_ready()
        if not repository.ready():
            detail = "; ".join(f"{name}: {why}" for name, why in sorted(missing.items())) or "no model is loaded"
            return JSONResponse(status_code=503, content={"ready": False, "error": f"not ready: {detail}", "models": missing})
        return JSONResponse({"ready": True})

    async def model_metadata(model_name: str, model_version: str | None = None) -> dict[str, Any]:
        repository.resolve(model_name, model_version)
        return await dataplane.model_metadata(versioned_key(model_name, model_version) if model_version else model_name)

    async def infer(
        raw_request: Request, raw_response: Response, model_name: str,
        request_body: Union[InferenceRequest, bytes], model_version: str | None = None,
    ) -> Any:
        """kserve answers `?model_version=` with 501; here it reaches that version."""
        repository.resolve(model_name, model_version)
        key = versioned_key(model_name, model_version) if model_version else model_name
        return await v2.infer(raw_request, raw_response, key, request_body)

    async def model_ready(model_name: str, model_version: str | None = None) -> dict[str, Any]:
        repository.resolve(model_name, model_version)
        return {"name": model_name, "ready": True, **({"version": model_version} if model_version else {})}

    async def versioned_ready(model_name: str, model_version: str) -> dict[str, Any]:
        return await model_ready(model_name, model_version)

    async def versioned_metadata(model_name: str, model_version: str) -> dict[str, Any]:
        repository.resolve(model_name, model_version)
        return await dataplane.model_metadata(versioned_key(model_name, model_version))

    async def versioned_infer(
        raw_request: Request, raw_response: Response, model_name: str, model_version: str,
        request_body: Union[InferenceRequest, bytes],
    ) -> Any:
        repository.resolve(model_name, model_version)
        return await v2.infer(raw_request, raw_response, versioned_key(model_name, model_version), request_body)

    async def model_config(model_name: str, model_version: str | None = None) -> dict[str, Any]:
        entry = repository.entries.get(model_name)
        if entry is None:
            repository.resolve(model_name)  # raises the 404 naming the models
        model = repository.get_model(versioned_key(model_name, model_version) if model_version else model_name)
        described = model.describe() if model is not None else {"name": model_name, "ready": False}
        return {**described, "state": repository.state(entry), "reason": repository.reason(entry),
                "versions": [row for row in repository.index() if row["name"] == model_name]}

    async def versioned_config(model_name: str, model_version: str) -> dict[str, Any]:
        return await model_config(model_name, model_version)

    async def repository_index() -> list[dict[str, str]]:
        return repository.index()

    async def repository_load(model_name: str) -> dict[str, Any]:
        result = await repository.load(model_name)
        return {"name": model_name, "load": True, **result}

    async def repository_unload(model_name: str) -> dict[str, Any]:
        result = await repository.unload_model(model_name)
        return {"name": model_name, "unload": True, **result}

    app.add_api_route("/v2/health/ready", server_ready, methods=["GET"])
    app.add_api_route("/v2/models/{model_name}", model_metadata, methods=["GET"])
    app.add_api_route("/v2/models/{model_name}/infer", infer, methods=["POST"], response_model=None)
    app.add_api_route("/v2/models/{model_name}/ready", model_ready, methods=["GET"])
    app.add_api_route("/v2/models/{model_name}/versions/{model_version}/ready", versioned_ready, methods=["GET"])
    app.add_api_route("/v2/models/{model_name}/versions/{model_version}", versioned_metadata, methods=["GET"])
    app.add_api_route("/v2/models/{model_name}/versions/{model_version}/infer", versioned_infer, methods=["POST"], response_model=None)
    app.add_api_route("/v2/models/{model_name}/config", model_config, methods=["GET"])
    app.add_api_route("/v2/models/{model_name}/versions/{model_version}/config", versioned_config, methods=["GET"])
    app.add_api_route("/v2/repository/index", repository_index, methods=["POST", "GET"])
    # `:path` so that names with encoded separators reach the handler and get a 400, not a 404.
    app.add_api_route("/v2/repository/models/{model_name:path}/load", repository_load, methods=["POST"])
    app.add_api_route("/v2/repository/models/{model_name:path}/unload", repository_unload, methods=["POST"])
