"""A lean HTTP/1.1 keep-alive client on asyncio streams, for the benchmark's load generator.

Why not aiohttp: the load generator usually shares the machine with the server it measures, so
every millisecond of client CPU per request is taken from the server and skews its numbers. A
general client spends most of that on things a load generator does not need (cookie jars, header
multidicts, redirects, decompression, connection pools). Here a request is a few prepared bytes
written on one persistent connection, and a response is a status line, three headers that matter
(content-length, transfer-encoding, connection) and a body that is read whole and handed back.
"""

from __future__ import annotations

import asyncio
import ssl
from urllib.parse import urlsplit


class ProtocolError(ValueError):
    """The server's reply is not HTTP/1.x as understood here."""


# What a failed exchange raises (TimeoutError, ssl.SSLError and socket.gaierror are OSErrors;
# asyncio.IncompleteReadError is an EOFError): the benchmark counts these as status "connection".
REQUEST_FAILURES = (OSError, EOFError, ProtocolError, asyncio.LimitOverrunError)


class _Stale(Exception):
    """A reused keep-alive connection was closed before any byte of the reply: safe to resend."""


class KeepAliveConnection:
    """One persistent connection to the server of `base_url` (http:// or https://, with an
    optional path prefix); requests go one at a time. It reconnects when the server closed the
    connection, answered `connection: close`, or an exchange failed or timed out."""

    def __init__(self, base_url: str, timeout: float = 120.0) -> None:
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"expected an http:// or https:// URL, got {base_url!r}")
        self.host = parts.hostname
        self.port = parts.port or (443 if parts.scheme == "https" else 80)
        self.ssl: ssl.SSLContext | None = ssl.create_default_context() if parts.scheme == "https" else None
        self.authority = parts.netloc.rpartition("@")[2]  # the Host header: host[:port], without user info
        self.prefix = parts.path.rstrip("/")
        self.timeout = timeout
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    def post_head(self, path: str, content_type: str = "application/json") -> bytes:
        """A POST's request line and fixed headers up to the Content-Length value: build it once,
        then send `head + b"%d\\r\\n\\r\\n" % len(body) + body` with `post`."""
        return (f"POST {self.prefix}{path} HTTP/1.1\r\nHost: {self.authority}\r\n"
                f"Content-Type: {content_type}\r\nContent-Length: ").encode("latin-1")

    async def post(self, head: bytes, body: bytes) -> tuple[int, bytes]:
        return await self.exchange(b"%s%d\r\n\r\n%s" % (head, len(body), body))

    async def get(self, path: str) -> tuple[int, bytes]:
        return await self.exchange(f"GET {self.prefix}{path} HTTP/1.1\r\nHost: {self.authority}\r\n\r\n".encode("latin-1"))

    async def exchange(self, request: bytes) -> tuple[int, bytes]:
        """Send one complete request; (status, body) of the reply, or one of REQUEST_FAILURES
        (the connection is then dropped). The timeout covers connecting and the whole reply."""
        async with asyncio.timeout(self.timeout):
            try:
                return await self._send_and_read(request)
            except _Stale:  # the server closed an idle connection as we reused it: once more, afresh
                return await self._send_and_read(request)

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
        self._reader = self._writer = None

    async def _send_and_read(self, request: bytes) -> tuple[int, bytes]:
        reused = self._reader is not None and not self._reader.at_eof()
        if not reused:
            self.close()
            self._reader, self._writer = await asyncio.open_connection(
                self.host, self.port, ssl=self.ssl, limit=2**20)
        try:
            self._writer.write(request)
            try:
                head = await self._reader.readuntil(b"\r\n\r\n")
            except (asyncio.IncompleteReadError, ConnectionError) as exc:
                if reused and not getattr(exc, "partial", b""):
                    raise _Stale from exc
                raise
            status, length, chunked, keep_alive = _parse_head(head)
            body = await self._read_body(status, length, chunked)
        except BaseException:  # failed, timed out or cancelled mid-reply: the stream's state is unknown
            self.close()
            raise
        if not keep_alive or (length is None and not chunked and status >= 200 and status not in (204, 304)):
            self.close()  # `connection: close`, or a body delimited by the server closing the connection
        return status, body

    async def _read_body(self, status: int, length: int | None, chunked: bool) -> bytes:
        reader = self._reader
        if status < 200 or status in (204, 304):
            return b""
        if chunked:
            body = bytearray()
            while True:
                size_line = await reader.readuntil(b"\r\n")
                try:
                    size = int(size_line.split(b";", 1)[0], 16)
                except ValueError:
                    raise ProtocolError(f"bad chunk size line {size_line[:40]!r}") from None
                if size == 0:
                    while await reader.readuntil(b"\r\n") != b"\r\n":  # trailer fields, if any
                        pass
                    return bytes(body)
                body += (await reader.readexactly(size + 2))[:-2]
        if length is not None:
            return await reader.readexactly(length)
        return await reader.read()  # no length given: the body ends when the server closes


def _parse_head(head: bytes) -> tuple[int, int | None, bool, bool]:
    """(status, content-length or None, chunked, keep-alive) from a reply's status line and headers."""
    lines = head[:-4].lower().split(b"\r\n")
    version, _, rest = lines[0].partition(b" ")
    try:
        status = int(rest[:3])
    except ValueError:
        raise ProtocolError(f"bad status line {lines[0][:80]!r}") from None
    if not version.startswith(b"http/1."):
        raise ProtocolError(f"bad status line {lines[0][:80]!r}")
    length, chunked, keep_alive = None, False, version == b"http/1.1"
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        name = name.strip()
        if name == b"content-length":
            try:
                length = int(value)
            except ValueError:
                length = -1
            if length < 0:
                raise ProtocolError(f"bad content-length {value[:40]!r}")
        elif name == b"transfer-encoding":
            chunked = value.strip().endswith(b"chunked")
        elif name == b"connection":
            tokens = {token.strip() for token in value.split(b",")}
            keep_alive = b"keep-alive" in tokens if version == b"http/1.0" else b"close" not in tokens
    return status, None if chunked else length, chunked, keep_alive
