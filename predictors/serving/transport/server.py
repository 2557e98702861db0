"""The server shell: one process serving HTTP (uvicorn) and gRPC (grpc.aio) over one dataplane and
model repository, with kserve's server flags.

It is our own rather than kserve's ModelServer, as MLServer owns its shell, because every behaviour
below needed a private patch of ModelServer, RESTServer or GRPCServer:
- the ports open at once and the models load in the background; readiness says which models are
  missing and why (routes.py);
- the app is built here: our routes first, then kserve's V1/V2 routes, our error handlers and
  middlewares, and the V2 JSON fast path;
- one graceful shutdown for both protocols, bounded by the grace the manifests give
  (PREDICTORS_DRAIN_SECONDS): readiness fails, no new request is admitted, accepted ones finish,
  then the models are freed.
The flags a ServingRuntime passes (kserve's parser) keep their meaning: ServerOptions.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from importlib import metadata
from typing import Any, Callable

import uvicorn
from fastapi import FastAPI, Request, Response
from starlette.middleware.cors import CORSMiddleware
from kserve.constants.constants import DEFAULT_HTTP_PORT, DEFAULT_HTTPS_PORT
from kserve.protocol.rest.server import PrintTimings
from kserve.protocol.rest.ssl_cert_refresher import SSLCertRefresher
from kserve.protocol.rest.v1_endpoints import register_v1_endpoints
from kserve.protocol.rest.v2_endpoints import register_v2_endpoints
from prometheus_client import REGISTRY
from prometheus_client.exposition import choose_encoder
from timing_asgi import TimingMiddleware
from timing_asgi.integrations import StarletteScopeToName

from ...model.environment import ServerEnvironment
from ..observability.prediction_log import close_all as close_prediction_logs
from ..repository import PredictorRepository
from .api_docs import DocPagesPolicy, describe_api, new_app
from .connection import ConnectionGuard
from .dataplane import HonestDataPlane
from .error_handlers import REST_HANDLERS, ErrorBoundary
from .fast_path import V2JsonInference
from .grpc import PredictorServicer, grpc_server
from .limits import BodyLimit
from .openai_api import OpenAIErrorShape, register_openai_routes
from .request_ids import RequestIdMiddleware
from .routes import register_routes
from ..seams import GuardedHttpProtocol, QuietSignalsServer

logger = logging.getLogger("kserve.predictors")


class ServerStartError(RuntimeError):
    """A flag or setting the server cannot start with; the message says which and why."""


@dataclass(frozen=True)
class ServerOptions:
    """kserve's server flags (kserve.model_server.parser), as a ServingRuntime passes them."""

    http_port: int = DEFAULT_HTTP_PORT
    grpc_port: int = 8081
    enable_grpc: bool = True
    workers: int = 1
    max_threads: int = 4
    max_asyncio_workers: int | None = None
    enable_docs_url: bool = False
    enable_latency_logging: bool = False
    access_log_format: str | None = None
    event_loop: str = "auto"
    timeout_keep_alive: int = 65
    grpc_max_send_message_length: int = 8 * 1024 * 1024
    grpc_max_receive_message_length: int = 8 * 1024 * 1024
    ssl_certfile: str | None = None
    ssl_keyfile: str | None = None

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> "ServerOptions":
        values = {name: getattr(args, name) for name in cls.__dataclass_fields__ if hasattr(args, name)}
        options = cls(**values)
        if options.ssl_certfile and options.ssl_keyfile and options.http_port == DEFAULT_HTTP_PORT:
            # kserve's rule: with TLS and the port not set, serve on the HTTPS port
            options = cls(**{**values, "http_port": DEFAULT_HTTPS_PORT})
        return options

    def check(self) -> None:
        """Refuse what this server does not do, with why, before anything starts."""
        if self.workers != 1:
            raise ServerStartError(
                f"--workers {self.workers}: this server runs one process; its parallelism is the inference worker "
                "threads of each model (PREDICTORS_WORKERS, one per CPU by default), which share the CPUs through "
                "the process-wide compute slots. Several processes would each load every model (memory times "
                f"{self.workers}), oversubscribe the CPUs, split admission control and the repository API between "
                "processes, and count metrics apart. Scale with replicas instead (docs/deploy.md)."
            )


def loop_factory(event_loop: str) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """kserve's --event_loop: `auto` is uvloop when it is installed, `uvloop` requires it, `asyncio`
    is the standard loop (None: asyncio's default)."""
    if event_loop in ("auto", "uvloop"):
        try:
            import uvloop
        except ImportError:
            if event_loop == "uvloop":
                raise ServerStartError("--event_loop uvloop needs the uvloop package") from None
            return None
        return uvloop.new_event_loop
    return None


async def metrics_endpoint(request: Request) -> Response:
    """Prometheus exposition of the process's registry (kserve's and ours), in the format asked for."""
    encoder, content_type = choose_encoder(request.headers.get("accept"))
    return Response(content=encoder(REGISTRY), headers={"content-type": content_type})


def build_app(repository: PredictorRepository, dataplane: HonestDataPlane, options: ServerOptions,
              environment: ServerEnvironment, is_stopping: Callable[[], bool]) -> FastAPI:
    """The HTTP app: our routes first (they answer before kserve's same paths), kserve's V1/V2
    routes, error handlers that answer JSON, and the middlewares, outermost last."""
    app = new_app("predictors", metadata.version("predictors"), options.enable_docs_url)
    register_routes(app, repository, dataplane, is_stopping)
    register_openai_routes(app, repository, dataplane)
    app.add_api_route("/metrics", metrics_endpoint, methods=["GET"])
    register_v1_endpoints(app, dataplane, None)
    register_v2_endpoints(app, dataplane, None)
    describe_api(app, repository)
    for exception, handler in REST_HANDLERS.items():
        app.add_exception_handler(exception, handler)
    if options.enable_latency_logging:  # kserve's per-request timing lines (a getrusage() per request)
        app.add_middleware(TimingMiddleware, client=PrintTimings(),
                           metric_namer=StarletteScopeToName(prefix="kserve.io", starlette_app=app))
    else:
        logging.getLogger("kserve.trace").setLevel(logging.WARNING)
    if options.access_log_format:
        try:
            from asgi_logger import AccessLoggerMiddleware
        except ImportError:
            raise ServerStartError("--access_log_format needs the asgi-logger package (as kserve's does)") from None
        logging.getLogger("uvicorn.access").handlers = []
        app.add_middleware(AccessLoggerMiddleware, format=options.access_log_format)
        logging.getLogger("access").propagate = False
    if options.enable_docs_url:
        app.add_middleware(DocPagesPolicy)
    app.add_middleware(V2JsonInference, dataplane=dataplane)  # innermost: the body is read and checked by now
    app.add_middleware(BodyLimit, models=repository)
    app.add_middleware(ConnectionGuard, repository=repository, body_timeout=environment.body_timeout)
    # Every exception from here in (a body timeout, a bug) is answered here and goes no further:
    # uvicorn drops the client's kept-alive connection after any exception that reaches it.
    app.add_middleware(ErrorBoundary)
    app.add_middleware(OpenAIErrorShape)  # outside the guards and the boundary: their answers are reshaped too
    if environment.cors_allowed_origins:  # outside the guards too: a browser reads their refusals only with CORS headers
        app.add_middleware(CrossOrigin, origins=environment.cors_allowed_origins)
    # Outermost, so that the guard's early answers (429 before the body, 408) carry a request id and
    # are counted in the metrics too.
    app.add_middleware(RequestIdMiddleware)
    return app


class CrossOrigin(CORSMiddleware):
    """Starlette's CORS middleware (preflights and simple requests per the Fetch standard) for the
    configured origins, every method the API has, any request header (the clients' own, such as
    tritonclient's binary header or the OpenAI client's), no credentials (the API uses no cookies).
    A page of an allowed origin may read the headers an answer carries for it (request id,
    Server-Timing, Retry-After, the binary extension's header length), and Timing-Allow-Origin lets
    its Resource Timing API see the Server-Timing entries too (the W3C rule for cross-origin
    requests)."""

    EXPOSED = ("x-request-id", "server-timing", "retry-after", "inference-header-content-length")

    def __init__(self, app: Any, origins: tuple[str, ...]) -> None:
        super().__init__(app, allow_origins=origins, allow_methods=("GET", "POST", "OPTIONS"), allow_headers=("*",),
                         expose_headers=self.EXPOSED, max_age=600)
        self.simple_headers["Timing-Allow-Origin"] = "*" if "*" in origins else ", ".join(origins)


class PredictorServer:
    """Runs the HTTP and gRPC servers and the repository's lifecycle in one event loop."""

    def __init__(self, repository: PredictorRepository, options: ServerOptions, environment: ServerEnvironment,
                 watch_seconds: float = 0.0) -> None:
        options.check()
        self.repository = repository
        self.options = options
        self.environment = environment
        self.grace = environment.drain_seconds
        repository.drain_seconds = self.grace
        repository.enable_latency_logging = options.enable_latency_logging
        self.watch_seconds = watch_seconds
        self.dataplane = HonestDataPlane(repository)
        self.stop_requested_at: float | None = None
        self._stopping: asyncio.Event | None = None
        self.http: uvicorn.Server | None = None
        self.grpc: Any = None

    def stopping(self) -> bool:
        return self.stop_requested_at is not None

    def run(self) -> None:
        """Serve until SIGTERM / SIGINT, then shut down gracefully."""
        with asyncio.Runner(loop_factory=loop_factory(self.options.event_loop)) as runner:
            runner.run(self.serve())

    async def serve(self) -> None:
        loop = asyncio.get_running_loop()
        self._stopping = asyncio.Event()
        workers = self.options.max_asyncio_workers or min(32, (os.cpu_count() or 1) + 4)
        loop.set_default_executor(ThreadPoolExecutor(max_workers=workers))
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGQUIT):
            loop.add_signal_handler(sig, self.request_stop, sig)
        app = build_app(self.repository, self.dataplane, self.options, self.environment, self.stopping)
        protocol = type("HttpProtocol", (GuardedHttpProtocol,), {
            "header_timeout": self.environment.header_timeout, "max_header_bytes": self.environment.max_header_bytes,
        })
        config = uvicorn.Config(
            app, host="0.0.0.0", port=self.options.http_port, http=protocol, log_config=None,
            timeout_graceful_shutdown=self.grace, timeout_keep_alive=self.options.timeout_keep_alive,
            ssl_certfile=self.options.ssl_certfile, ssl_keyfile=self.options.ssl_keyfile,
        )
        config.load()
        refresher = (SSLCertRefresher(config.ssl, self.options.ssl_keyfile, self.options.ssl_certfile)
                     if config.ssl is not None and self.options.ssl_keyfile and self.options.ssl_certfile else None)
        self.http = QuietSignalsServer(config)
        http_task = asyncio.create_task(self.http.serve(), name="http")
        if self.options.enable_grpc:
            servicer = PredictorServicer(self.dataplane, self.repository, self.stopping)
            self.grpc = grpc_server(servicer, self.options.grpc_port, self.options.max_threads,
                                    self.options.grpc_max_send_message_length,
                                    self.options.grpc_max_receive_message_length)
            await self.grpc.start()
            logger.info("gRPC server listening on [::]:%d", self.options.grpc_port)
        lifecycle = asyncio.create_task(self._lifecycle(), name="lifecycle")
        stop = asyncio.create_task(self._stopping.wait())
        await asyncio.wait({http_task, stop}, return_when=asyncio.FIRST_COMPLETED)
        if not self._stopping.is_set():  # uvicorn ended by itself (it could not serve): stop the rest
            logger.error("the HTTP server stopped; shutting down")
            self.request_stop(signal.SIGTERM)
        await self._shutdown(http_task)
        lifecycle.cancel()
        stop.cancel()
        if refresher is not None:
            refresher.stop()

    def request_stop(self, sig: int) -> None:
        """SIGTERM / SIGINT: readiness fails at once and the drain begins; a second SIGINT stops
        waiting for HTTP requests (as uvicorn's Ctrl+C twice)."""
        if self.stop_requested_at is not None:
            if sig == signal.SIGINT and self.http is not None:
                self.http.force_exit = True
            return
        self.stop_requested_at = time.monotonic()
        logger.info("stopping (signal %d): draining accepted requests (at most %ds)", sig, self.grace)
        if self.http is not None:
            self.http.should_exit = True  # uvicorn closes its listener and waits for requests in progress
        if self._stopping is not None:
            self._stopping.set()

    async def _shutdown(self, http_task: asyncio.Task) -> None:
        """One budget for HTTP, gRPC and the models' queues: what is left of the grace."""
        left = max(1.0, self.grace - (time.monotonic() - (self.stop_requested_at or time.monotonic())))
        waits = [http_task, self.repository.drain_all(left)]
        if self.grpc is not None:
            waits.append(self.grpc.stop(grace=left))  # refuses new calls now, lets accepted ones finish
        await asyncio.gather(*waits, return_exceptions=True)
        for name in list(self.repository.entries):
            self.repository.unload(name)
        close_prediction_logs()  # the lines still queued are written
        logger.info("stopped")

    async def _lifecycle(self) -> None:
        """After the ports are open: measure the server's own memory (the models' budget is decided
        from it), clear what a killed server left in the storage cache, load the `startup` models,
        then keep house (idle on_demand models, memory pressure) and watch the folder, if asked,
        until stop."""
        assert self._stopping is not None
        self.repository.start_memory_accounting()
        await asyncio.to_thread(self.repository.clean_storage_cache)
        await self.repository.load_all()
        tasks = [self.repository.housekeeping(self._stopping)]
        if self.watch_seconds > 0:
            tasks.append(self.repository.watch(self.watch_seconds, self._stopping))
        await asyncio.gather(*tasks)
