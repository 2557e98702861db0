"""The seams to kserve's and uvicorn's non-public names (predictors/serving/seams.py), checked
against the installed libraries: an upgrade that removes or changes one fails here, loudly.

The uvicorn seams run a real uvicorn server in this process on a free port, with a real socket."""

from __future__ import annotations

import asyncio
import inspect
import json
import signal
import socket
import threading
import time

import pytest
import uvicorn
from kserve.protocol.grpc import grpc_predict_v2_pb2 as pb
from kserve.protocol.infer_type import InferInput, InferRequest
from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.routing import Route

from predictors.serving import seams
from tests.helpers import free_port


@pytest.mark.parametrize("name", sorted(seams.RELIED_ON))
def test_the_installed_libraries_still_have_what_the_seams_use(name):
    owner, attributes = seams.RELIED_ON[name]
    missing = [a for a in attributes if not hasattr(owner, a) and a not in getattr(owner, "__annotations__", {})
               and a not in inspect.signature(owner.__init__).parameters and not _set_in_init(owner, a)]
    assert not missing, f"{name} no longer has {missing}: the seam in predictors/serving/seams.py must change"


def _set_in_init(owner: type, attribute: str) -> bool:
    return f"self.{attribute} =" in inspect.getsource(owner.__init__)


def test_uvicorn_serve_installs_its_signal_handlers_through_capture_signals():
    assert "self.capture_signals()" in inspect.getsource(uvicorn.Server.serve)


def test_uvicorn_answers_a_parser_error_through_send_400_response():
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

    source = inspect.getsource(HttpToolsProtocol.data_received)
    assert "except httptools.HttpParserError" in source and "self.send_400_response(" in source


def test_raw_bytes_read_what_kserve_stores_for_grpc_raw_contents():
    payload = b"\x02\x00\x00\x00hi"
    message = pb.ModelInferRequest(
        model_name="m", inputs=[pb.ModelInferRequest.InferInputTensor(name="text", datatype="BYTES", shape=[1])],
        raw_input_contents=[payload],
    )
    request = InferRequest.from_grpc(message)
    assert seams.raw_bytes(request.inputs[0]) == payload


def test_set_raw_bytes_is_what_kserve_serializes_and_decodes():
    tensor = InferInput("text", [1], "BYTES", [])
    seams.set_raw_bytes(tensor, b"\x02\x00\x00\x00hi")
    assert list(tensor.as_numpy()) == [b"hi"]  # kserve's own decoding reads the bytes set here
    assert seams.raw_bytes(InferInput("text", [1], "BYTES", ["hi"])) is None


# ---- uvicorn, for real --------------------------------------------------------------------------
class RunningServer:
    """A QuietSignalsServer with GuardedHttpProtocol in a thread of its own, with its own loop."""

    def __init__(self, header_timeout: float = 10.0, max_header_bytes: int = 16 * 1024) -> None:
        async def hello(request):
            return JSONResponse({"hello": True})

        protocol = type("Protocol", (seams.GuardedHttpProtocol,),
                        {"header_timeout": header_timeout, "max_header_bytes": max_header_bytes})
        self.port = free_port()
        config = uvicorn.Config(Starlette(routes=[Route("/", hello)]), host="127.0.0.1", port=self.port,
                                http=protocol, log_config=None, lifespan="off")
        self.server = seams.QuietSignalsServer(config)
        self.handlers_seen: list = []

        def run() -> None:
            async def serve() -> None:
                task = asyncio.create_task(self.server.serve())
                while not self.server.started:
                    await asyncio.sleep(0.01)
                self.handlers_seen.append(signal.getsignal(signal.SIGTERM))
                await task

            asyncio.run(serve())

        self.thread = threading.Thread(target=run, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            assert time.monotonic() < deadline, "uvicorn did not start"
            time.sleep(0.02)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)

    def exchange(self, request: bytes, read_until_close: bool = True) -> bytes:
        with socket.create_connection(("127.0.0.1", self.port), timeout=30) as sock:
            sock.sendall(request)
            chunks = []
            while True:
                data = sock.recv(65536)
                if not data:
                    break
                chunks.append(data)
                if not read_until_close and b"\r\n\r\n" in b"".join(chunks):
                    break
            return b"".join(chunks)


@pytest.fixture
def server():
    running = RunningServer(header_timeout=1.0)
    yield running
    running.stop()


def test_the_quiet_server_leaves_the_signal_handlers_alone_and_stops_on_should_exit():
    before = signal.getsignal(signal.SIGTERM)
    running = RunningServer()
    running.stop()
    assert running.handlers_seen == [before]
    assert not running.thread.is_alive()


def test_headers_over_the_limit_get_a_json_431(server):
    request = b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 100_000 + b"\r\n\r\n"
    answer = server.exchange(request)
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 431 ")
    assert json.loads(body) == {"error": "request headers are over the limit of 16384 bytes"}


def test_headers_under_the_limit_are_served(server):
    answer = server.exchange(b"GET / HTTP/1.1\r\nHost: x\r\nX-Ok: " + b"a" * 8_000 + b"\r\nConnection: close\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 200 ") and answer.endswith(b'{"hello":true}')


def test_headers_that_do_not_arrive_in_time_get_a_json_408_and_the_connection_closes(server):
    answer = server.exchange(b"GET / HTTP/1.1\r\nHost: x\r\n")  # never completes its headers
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 408 ") and json.loads(body) == {"error": "request headers did not arrive in time"}


def test_a_malformed_request_still_gets_uvicorns_400(server):
    assert server.exchange(b"NOT HTTP AT ALL\r\n\r\n").startswith(b"HTTP/1.1 400 ")

