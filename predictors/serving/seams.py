"""Every use of a name kserve or uvicorn does not document as public, in one place.

Each is a small function or class here, and tests/unit/serving/test_seams.py checks
that the installed kserve and uvicorn still have what it relies on, so an upgrade that removes or
renames one fails that test loudly instead of silently skipping a behaviour.

- `raw_bytes` / `set_raw_bytes`: kserve's InferInput keeps binary tensor data (gRPC
  raw_input_contents, the REST binary extension) in `_raw_data`, with no public accessor that
  returns the bytes undecoded.
- `QuietSignalsServer`: uvicorn.Server.serve() installs its own SIGINT/SIGTERM handlers through
  `capture_signals()`; the server shell (transport/server.py) owns the signals, so the override is a no-op.
- `GuardedHttpProtocol`: uvicorn's httptools protocol, whose parser callbacks, `cycle`,
  `transport`, `loop` and `client` attributes and `send_400_response` (its answer to a parser
  error) it builds on, with a deadline and a size limit for the request headers (uvicorn has
  neither).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any, Iterator

import uvicorn
from kserve.protocol.infer_type import InferInput
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

logger = logging.getLogger("kserve.predictors")


# ---- kserve ---------------------------------------------------------------------------------------
def raw_bytes(infer_input: InferInput) -> bytes | None:
    """The input's binary tensor bytes as sent, or None when it carries `data`."""
    return infer_input._raw_data


def set_raw_bytes(infer_input: InferInput, raw: bytes) -> None:
    """Attach binary-extension bytes to an input, as kserve's own InferRequest.from_bytes does."""
    infer_input._raw_data = raw


# ---- uvicorn --------------------------------------------------------------------------------------
class QuietSignalsServer(uvicorn.Server):
    """uvicorn's server without its signal handlers: the shell decides what a signal does (drain
    gRPC and the models as well) and tells uvicorn through `should_exit`, its public switch."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class HeadersTooLarge(Exception):
    """Raised from a parser callback to stop parsing a request whose headers are over the limit."""


class GuardedHttpProtocol(HttpToolsProtocol):
    """uvicorn's httptools (C parser) HTTP/1.1 protocol with two limits on the request headers:

    - a deadline: an idle connection or one that dribbles its headers a byte at a time is closed;
      a request already begun gets a JSON 408 first;
    - a size: a request line plus headers over `max_header_bytes` gets a JSON 431 and the
      connection is closed, as front ends such as nginx and Node.js refuse them (uvicorn would
      read any size).
    """

    header_timeout: float = 10.0  # set by the shell from PREDICTORS_HEADER_TIMEOUT
    max_header_bytes: int = 16 * 1024  # set by the shell from PREDICTORS_MAX_HEADER_BYTES

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._request_begun = False
        self._header_bytes = 0
        self._headers_too_large = False
        self._arm_header_deadline()

    def _count_header_bytes(self, size: int) -> None:
        self._header_bytes += size
        if self._header_bytes > self.max_header_bytes:
            self._headers_too_large = True
            raise HeadersTooLarge()

    def on_url(self, url: bytes) -> None:
        self._count_header_bytes(len(url))
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._count_header_bytes(len(name) + len(value) + 4)  # ": " and CRLF
        super().on_header(name, value)

    def send_400_response(self, msg: str) -> None:
        """uvicorn's answer to a parser error; the error raised by the size limit gets its 431."""
        if self._headers_too_large:
            logger.info("refusing a request from %s: its headers are over %d bytes", self.client, self.max_header_bytes)
            self._write_error(431, "Request Header Fields Too Large",
                              f"request headers are over the limit of {self.max_header_bytes} bytes")
            self.transport.close()
            return
        super().send_400_response(msg)

    def _arm_header_deadline(self) -> None:
        self._header_deadline: asyncio.TimerHandle | None = self.loop.call_later(self.header_timeout, self._headers_too_slow)

    def _waiting_for_headers(self) -> bool:
        return self.cycle is None or self.cycle.response_complete

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._request_begun = True
        self._header_bytes = 0

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
                self._write_error(408, "Request Timeout", "request headers did not arrive in time")
            self.transport.close()

    def _write_error(self, status: int, phrase: str, message: str) -> None:
        """A JSON error written straight to the socket, for answers given before the app is reached."""
        body = b'{"error":"' + message.encode() + b'"}'
        self.transport.write(
            f"HTTP/1.1 {status} {phrase}\r\ncontent-type: application/json\r\n".encode()
            + b"content-length: " + str(len(body)).encode() + b"\r\nconnection: close\r\n\r\n" + body
        )


#: What the seams above rely on, checked by the seam test against the installed libraries.
RELIED_ON: dict[str, tuple[Any, tuple[str, ...]]] = {
    "uvicorn.Server": (uvicorn.Server, ("capture_signals", "should_exit", "serve", "handle_exit")),
    "uvicorn HttpToolsProtocol": (HttpToolsProtocol, (
        "connection_made", "connection_lost", "on_message_begin", "on_url", "on_header", "on_headers_complete",
        "on_response_complete", "send_400_response", "data_received",
    )),
}
