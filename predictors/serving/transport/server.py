"""kserve.ModelServer wired for honest state: the ports open at once, models load in the background,
readiness says which models are missing and why, every error is JSON, and shutdown and unload
never drop an accepted request.

- HonestDataPlane: model lookups answer with the reason a model or version cannot serve (404 /
  503 with the load error), and a body kserve cannot decode is a 400, never a 500.
- PredictorRESTServer / PredictorGRPCServer (grpc.py): kserve's servers with our routes, error
  handlers, connection guards and status codes.
- PredictorServer: starts them with the repository's lifecycle (load all, optionally watch the
  folder) and a graceful shutdown bounded by the grace the manifests give (PREDICTORS_DRAIN_SECONDS).
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from typing import Any, Callable

from kserve import ModelServer
from kserve.errors import InvalidInput
from kserve.model_server import FASTAPI_APP_IMPORT_STRING, app
from kserve.model_server import args as kserve_args
from kserve.protocol.dataplane import DataPlane
from kserve.protocol.rest.server import RESTServer
from timing_asgi import TimingMiddleware

from . import codec
from .errors import REST_HANDLERS
from .grpc import PredictorGRPCServer
from .http import ConnectionGuard, TimedHttpToolsProtocol, register_routes
from .limits import BodyLimit
from .predictor import TextPredictor
from .repository import VERSION_SEPARATOR, PredictorRepository
from .request_ids import RequestIdMiddleware
from .v2_json import V2JsonInference

logger = logging.getLogger("kserve.predictors")

DRAIN_SECONDS_ENV = "PREDICTORS_DRAIN_SECONDS"
DEFAULT_DRAIN_SECONDS = 30


def drain_seconds() -> int:
    """Seconds a shutdown or unload waits for accepted requests: the manifests render
    terminationGracePeriodSeconds minus the preStop sleep into PREDICTORS_DRAIN_SECONDS."""
    value = os.environ.get(DRAIN_SECONDS_ENV, "").strip()
    try:
        return max(1, int(value)) if value else DEFAULT_DRAIN_SECONDS
    except ValueError:
        raise SystemExit(f"error: {DRAIN_SECONDS_ENV} must be a whole number of seconds, got {value!r}") from None


def loop_factory(event_loop: str) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """kserve's --event_loop: `auto` is uvloop when it is installed, `uvloop` requires it, `asyncio`
    is the standard loop (None: asyncio's default)."""
    if event_loop in ("auto", "uvloop"):
        try:
            import uvloop
        except ImportError:
            if event_loop == "uvloop":
                raise SystemExit("error: --event_loop uvloop needs the uvloop package") from None
            return None
        return uvloop.new_event_loop
    return None


class HonestDataPlane(DataPlane):
    def __init__(self, repository: PredictorRepository) -> None:
        super().__init__(model_registry=repository)
        self.repository = repository

    async def ready(self) -> bool:
        return self.repository.ready()

    async def get_model(self, name: str) -> TextPredictor:
        base, _, version = name.partition(VERSION_SEPARATOR)
        return self.repository.resolve(base, version or None)

    async def model_ready(self, model_name: str, disable_predictor_health_check: bool = False) -> bool:
        await self.get_model(model_name)  # raises 404 / 503 with the reason
        return True

    async def model_metadata(self, model_name: str) -> dict:
        model = await self.get_model(model_name)
        metadata = await super().model_metadata(model_name)
        entry = self.repository.entries[model.name]
        metadata.update(name=model.name, platform=model.platform, versions=entry.ready_versions())
        return metadata

    def decode(self, body: Any, headers: Any, protocol_version: str = "v1", model_name: str | None = None) -> Any:
        if protocol_version == "v2":  # REST V2 JSON or binary-extension bodies, checked strictly
            return codec.decode_rest_v2(body, headers, model_name), {}
        try:
            return super().decode(body, headers, protocol_version, model_name)
        except InvalidInput:
            raise
        except Exception as exc:  # malformed binary extension bodies, bad UTF-8, missing keys
            raise InvalidInput(f"cannot decode the request body: {exc}") from None


class PredictorRESTServer(RESTServer):
    def __init__(self, *args: Any, repository: PredictorRepository, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.repository = repository
        self.config.http = TimedHttpToolsProtocol
        self.exit_requested: float | None = None  # when SIGTERM reached uvicorn: the grace starts then
        handle_exit = self._server.handle_exit

        def record_exit(sig: int, frame: Any) -> None:
            if self.exit_requested is None:
                self.exit_requested = time.monotonic()
            handle_exit(sig, frame)

        self._server.handle_exit = record_exit

    def _add_middlewares(self, app: Any) -> None:
        super()._add_middlewares(app)
        if not self.repository.enable_latency_logging:
            # Without latency logging kserve's TimingMiddleware only costs: its getrusage() per request
            # took a third of the event loop under load. The predictors_ metrics time every request.
            logging.getLogger("kserve.trace").setLevel(logging.WARNING)
            app.user_middleware = [m for m in app.user_middleware if m.cls is not TimingMiddleware]
        app.add_middleware(V2JsonInference, dataplane=self.dataplane)  # innermost: the body is read and checked
        app.add_middleware(BodyLimit, models=self.dataplane.model_registry)  # after the guard
        app.add_middleware(ConnectionGuard, repository=self.repository)
        # Outermost, so that the guard's early answers (429 before the body, 408) carry a request id
        # and are counted in the metrics too.
        app.add_middleware(RequestIdMiddleware)

    def _add_exception_handlers(self, app: Any) -> None:
        super()._add_exception_handlers(app)
        for exception, handler in REST_HANDLERS.items():  # after kserve's, so these win
            app.add_exception_handler(exception, handler)


class PredictorServer(ModelServer):
    def __init__(self, repository: PredictorRepository, watch_seconds: float = 0.0, **kwargs: Any) -> None:
        grace = drain_seconds()
        super().__init__(registered_models=repository, grace_period=grace, **kwargs)
        repository.drain_seconds = grace
        self.repository = repository
        self.dataplane = HonestDataPlane(repository)
        self.watch_seconds = watch_seconds
        self._stopping = asyncio.Event()

    def start(self, models: list | None = None) -> None:
        self.repository.enable_latency_logging = self.enable_latency_logging
        register_routes(app, self.repository, self.dataplane, self._stopping.is_set)
        self._rest_server = PredictorRESTServer(
            FASTAPI_APP_IMPORT_STRING, self.dataplane, self.model_repository_extension, self.http_port,
            repository=self.repository,
            access_log_format=self.access_log_format, workers=1, grace_period=self.grace_period,
            event_loop=self.event_loop, timeout_keep_alive=self.timeout_keep_alive,
            ssl_certfile=self.ssl_certfile, ssl_keyfile=self.ssl_keyfile,
        )
        self.servers.append(self._rest_server.start())
        if self.enable_grpc:
            self._grpc_server = PredictorGRPCServer(
                self.grpc_port, self.dataplane, self.repository, kwargs=vars(kserve_args), grace_period=self.grace_period
            )
            self.servers.append(self._grpc_server.start(self.max_threads))
        self.servers.append(self._lifecycle())
        self.register_signal_handler()
        # kserve's `asyncio.run` ignores its own --event_loop flag (auto: uvloop when installed) and
        # sets up a loop it does not run; here the flag chooses the loop that serves.
        with asyncio.Runner(loop_factory=loop_factory(self.event_loop)) as runner:
            runner.run(self._serve())

    async def _serve(self) -> None:
        self.setup_event_loop()  # exception handler and default executor on the running loop
        await super()._serve()

    async def _lifecycle(self) -> None:
        """Load every model after the ports are open; then watch the folder, if asked, until stop."""
        await self.repository.load_all()
        if self.watch_seconds > 0:
            await self.repository.watch(self.watch_seconds, self._stopping)
        else:
            await self._stopping.wait()

    def stop(self, sig: int) -> None:
        """SIGTERM/SIGINT, once uvicorn has finished its HTTP requests (bounded by the grace period):
        let gRPC's accepted requests finish too, then free the models."""
        if self._stopping.is_set():
            return
        self._stopping.set()
        logger.info("stopping: draining accepted requests (at most %ds)", self.grace_period)

        async def shutdown() -> None:
            # One budget for HTTP (uvicorn's graceful shutdown) and gRPC: what is left of the grace.
            started = self._rest_server.exit_requested if self._rest_server else None
            left = self.grace_period - (time.monotonic() - started) if started else self.grace_period
            await self.repository.drain_all(max(1.0, left))
            if self._grpc_server:
                await self._grpc_server.stop(sig)
            for name in list(self.repository.entries):
                self.repository.unload(name)

        asyncio.create_task(shutdown())
