"""Connection hygiene in front of every route: liveness answered first, overload refused before a
body is read, slow bodies cut off, and the work of a client that hangs up cancelled."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from fastapi.responses import JSONResponse

from ..errors import QueueFull, ServingError
from ..repository import PredictorRepository, versioned_key
from ..scheduling import DOOR_TICKET, DoorTicket
from .error_handlers import rest_error
from .paths import LIVENESS_PATHS, infer_route

logger = logging.getLogger("kserve.predictors")


class BodyTimeout(ServingError):
    http_status = 408

    def __init__(self, seconds: float) -> None:
        super().__init__(f"the request body did not arrive within {seconds:.0f} s; send the whole body promptly")


class ConnectionGuard:
    """ASGI middleware, outermost. Liveness is answered here, so it never waits behind inference or
    body parsing; an inference request to a model whose queue is full gets its 429 before its body
    is read (requests let in but not yet queued count with their estimated texts: scheduler.py);
    a body that stalls longer than BODY_TIMEOUT_SECONDS gets 408; a client that disconnects
    before its answer has its request task cancelled, which drops its queued work."""

    def __init__(self, app: Any, repository: PredictorRepository | None = None, body_timeout: float = 30.0) -> None:
        self.app = app
        self.repository = repository
        self.body_timeout = body_timeout

    def _admission(self, scope: dict) -> DoorTicket | QueueFull | None:
        route = infer_route(scope.get("path", "")) if scope.get("method") == "POST" else None
        if route is None or route.model is None or self.repository is None:  # OpenAI: at its route (door_admission)
            return None
        # The scheduler of the version the request names: an unversioned route's is the default's.
        model = self.repository.get_model(versioned_key(route.model, route.version) if route.version else route.model)
        return door_admission(model, _content_length(scope))

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
        except BodyTimeout as exc:
            # Raised by guarded_receive in a middleware that reads the body (BodyLimit) outside the
            # error boundary: answered here, so it does not reach the server as an unhandled error
            # (a traceback in the log, the connection dropped).
            if responded:
                raise
            await rest_error(exc)(scope, receive, send)
        finally:
            watcher.cancel()


def door_admission(model: Any, body_bytes: int | None) -> DoorTicket | QueueFull | None:
    """The model's door for a request of `body_bytes` (scheduler/door.py): a ticket to hold (set as
    DOOR_TICKET, released when the request ends), the refusal, or None when the model has no door."""
    scheduler = getattr(model, "scheduler", None)
    return scheduler.door.admit(body_bytes) if scheduler is not None else None


def _content_length(scope: dict) -> int | None:
    for key, value in scope.get("headers", ()):
        if key == b"content-length":
            return int(value) if value.isdigit() else None
    return None


def message_is_disconnect(message: dict) -> bool:
    return message.get("type") == "http.disconnect"
