"""The benchmark's keep-alive HTTP/1.1 client (predictors/cli/http_load.py) and run_setting on it,
against a tiny asyncio HTTP server started in the test (a stand-in: it answers with canned bytes).
The real server is driven end to end in tests/integration/test_benchmark_cli.py."""

from __future__ import annotations

import asyncio
import itertools
import json
import re
import shutil
import ssl
import subprocess
import time
from collections.abc import Callable

import pytest

from predictors.cli.benchmark import TextSource, run_setting
from predictors.cli.http_load import KeepAliveConnection, ProtocolError, _parse_head

METRICS = b"# HELP process_cpu_seconds_total x\nprocess_cpu_seconds_total 12.5\nprocess_resident_memory_bytes 104857600.0\n"

# A reply is the bytes to send, a list of pieces sent one by one (a body split across packets), or
# None: never answer.
Reply = bytes | list[bytes] | None


def ok(body: bytes = b"{}", *headers: str) -> bytes:
    extra = "".join(f"{header}\r\n" for header in headers)
    return b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n%s\r\n%s" % (len(body), extra.encode(), body)


class StandInServer:
    """Reads each request (head and Content-Length body), records it and sends `answer(path, number)`;
    closes the connection after every reply with close_after_each (and never otherwise, even after a
    reply that says `connection: close`: the client has to honour that itself)."""

    def __init__(self, answer: Callable[[str, int], Reply], ssl_context: ssl.SSLContext | None = None,
                 close_after_each: bool = False) -> None:
        self.answer = answer
        self.ssl_context = ssl_context
        self.close_after_each = close_after_each
        self.connections = 0
        self.requests: list[tuple[bytes, bytes]] = []
        self._handlers: set[asyncio.Task] = set()

    async def __aenter__(self) -> StandInServer:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0, ssl=self.ssl_context)
        port = self.server.sockets[0].getsockname()[1]
        self.url = f"{'https' if self.ssl_context else 'http'}://{'localhost' if self.ssl_context else '127.0.0.1'}:{port}"
        return self

    async def __aexit__(self, *_) -> None:
        self.server.close()
        for task in self._handlers:
            task.cancel()
        await asyncio.gather(*self._handlers, return_exceptions=True)

    def infer_requests(self) -> list[tuple[bytes, bytes]]:
        return [(head, body) for head, body in self.requests if b"/metrics" not in head.split(b"\r\n")[0]]

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._handlers.add(asyncio.current_task())
        self.connections += 1
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = re.search(rb"(?i)content-length: *(\d+)", head)
                body = await reader.readexactly(int(length.group(1))) if length else b""
                self.requests.append((head, body))
                reply = self.answer(head.split(b" ")[1].decode(), len(self.requests))
                if reply is None:
                    await asyncio.sleep(3600)
                pieces = [reply] if isinstance(reply, bytes) else reply
                for piece in pieces:
                    writer.write(piece)
                    await writer.drain()
                    await asyncio.sleep(0.01)
                if self.close_after_each:
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


def test_content_length_replies_share_one_connection_against_a_stand_in_server():
    large = b"x" * 300_000  # beyond the streams' default 64 KiB buffer limit

    async def main():
        async with StandInServer(lambda path, n: ok(large if n == 2 else b'{"n": %d}' % n)) as server:
            connection = KeepAliveConnection(server.url, timeout=5)
            head = connection.post_head("/echo")
            replies = [await connection.post(head, b'{"a": 1}') for _ in range(3)]
            connection.close()
        return server, replies

    server, replies = asyncio.run(main())
    assert replies == [(200, b'{"n": 1}'), (200, large), (200, b'{"n": 3}')]
    assert server.connections == 1


def test_chunked_replies_are_joined_against_a_stand_in_server():
    chunked = [b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Type: application/json\r\n\r\n",
               b"5;ext=1\r\nhello\r\n", b"1", b"0\r\n", b"0123456789abcdef\r\n",  # a size line split across packets
               b"0\r\nX-Trailer: yes\r\n\r\n"]

    async def main():
        async with StandInServer(lambda path, n: chunked if n < 3 else ok(b"after")) as server:
            connection = KeepAliveConnection(server.url, timeout=5)
            replies = [await connection.get("/chunked") for _ in range(3)]
            connection.close()
        return server, replies

    server, replies = asyncio.run(main())
    assert replies == [(200, b"hello0123456789abcdef")] * 2 + [(200, b"after")]
    assert server.connections == 1  # the trailer was consumed: the connection stayed usable


def test_connection_close_then_a_new_connection_against_a_stand_in_server():
    """The stand-in keeps the connection open after saying `connection: close`."""

    async def main():
        async with StandInServer(lambda path, n: ok(b"%d" % n, "Connection: close")) as server:
            connection = KeepAliveConnection(server.url, timeout=5)
            replies = [await connection.get("/") for _ in range(3)]
            connection.close()
        return server, replies

    server, replies = asyncio.run(main())
    assert replies == [(200, b"1"), (200, b"2"), (200, b"3")]
    assert server.connections == 3


@pytest.mark.parametrize("pause", [0.0, 0.05], ids=["closed-while-sending", "closed-before"])
def test_a_keep_alive_connection_the_server_dropped_is_replaced_against_a_stand_in_server(pause):
    """The server closes after each reply without saying so (as on an idle timeout): the next
    request goes on a new connection instead of failing, whether the client saw the close before
    sending (pause) or only when no reply came (sent once more, on a new connection)."""

    async def main():
        async with StandInServer(lambda path, n: ok(b"%d" % n), close_after_each=True) as server:
            connection = KeepAliveConnection(server.url, timeout=5)
            replies = []
            for _ in range(3):
                replies.append(await connection.get("/"))
                await asyncio.sleep(pause)
            connection.close()
        return server, replies

    server, replies = asyncio.run(main())
    assert replies == [(200, b"1"), (200, b"2"), (200, b"3")]
    assert server.connections == 3


def test_a_body_delimited_by_the_server_closing_against_a_stand_in_server():
    async def main():
        async with StandInServer(lambda path, n: b"HTTP/1.0 200 OK\r\n\r\nuntil the end", close_after_each=True) as server:
            connection = KeepAliveConnection(server.url, timeout=5)
            replies = [await connection.get("/") for _ in range(2)]
            connection.close()
        return replies

    assert asyncio.run(main()) == [(200, b"until the end")] * 2


def test_reply_heads_are_parsed_whatever_the_case():
    assert _parse_head(b"HTTP/1.1 200 OK\r\nCONTENT-LENGTH: 12\r\n\r\n") == (200, 12, False, True)
    assert _parse_head(b"HTTP/1.1 503 Busy\r\ntransfer-encoding: chunked\r\nConnection: Close\r\n\r\n") == (503, None, True, False)
    assert _parse_head(b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n") == (200, 0, False, False)
    assert _parse_head(b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\n\r\n") == (200, None, False, True)
    for bad in (b"SSH-2.0-OpenSSH\r\n\r\n", b"HTTP/1.1 abc\r\n\r\n", b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n"):
        with pytest.raises(ProtocolError):
            _parse_head(bad)


def test_run_setting_sends_the_v2_body_under_the_url_path_prefix_against_a_stand_in_server():
    async def main():
        async with StandInServer(lambda path, n: ok(METRICS) if path.endswith("/metrics") else ok(b'{"outputs": []}')) as server:
            result = await run_setting(f"{server.url}/prefix/", "m", TextSource(["a", "b", "é"], False), 2, 2, 0.3, timeout=5)
        return server, result

    server, result = asyncio.run(main())
    requests = server.infer_requests()
    assert result.errors == {} and len(result.latencies) == len(requests) > 2
    assert server.connections == 3  # one per client and one for /metrics
    assert result.cpu_cores == 0.0 and result.peak_rss_mib == 100.0
    head, body = requests[0]
    lines = head.decode().split("\r\n")
    assert lines[0] == "POST /prefix/v2/models/m/infer HTTP/1.1"
    assert {"Host: " + server.url.split("//")[1], "Content-Type: application/json", f"Content-Length: {len(body)}"} <= set(lines)
    sent = [json.loads(body) for _, body in requests]
    assert {"inputs": [{"name": "text", "datatype": "BYTES", "shape": [2], "data": ["a", "b"]}]} in sent
    texts = sorted(text for request in sent for text in request["inputs"][0]["data"])
    assert texts == sorted(itertools.islice(itertools.cycle(["a", "b", "é"]), 2 * len(sent)))


def test_run_setting_counts_non_200_replies_as_errors_against_a_stand_in_server():
    busy = b"HTTP/1.1 429 Too Many Requests\r\nContent-Length: 13\r\n\r\n{\"error\": \"\"}"
    failed = b"HTTP/1.1 503 Service Unavailable\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nbusy\r\n0\r\n\r\n"

    async def main():
        async with StandInServer(lambda path, n: ok(METRICS) if path.endswith("/metrics") else (busy if n % 2 else failed)) as server:
            return await run_setting(server.url, "m", TextSource(["a"], False), 1, 1, 0.5, timeout=5)

    result = asyncio.run(main())
    assert result.latencies == [] and set(result.errors) == {"429", "503"}
    assert result.errors["429"] <= 0.5 / 0.05 + 1  # each 429 is followed by the 50 ms back-off


def test_a_hanging_server_is_timed_out_and_counted_against_a_stand_in_server():
    async def main():
        async with StandInServer(lambda path, n: ok(METRICS) if path.endswith("/metrics") else None) as server:
            started = time.monotonic()
            result = await run_setting(server.url, "m", TextSource(["a"], False), 2, 1, 0.3, timeout=0.2)
            return result, time.monotonic() - started, server

    result, seconds, server = asyncio.run(main())
    assert result.latencies == [] and result.errors == {"connection": 4}  # 2 clients x (0.2 s, 0.2 s) in 0.3 s
    assert seconds < 3  # the /metrics watcher's one-second sleep is the longest wait
    assert server.connections == 5  # each timed-out connection is dropped, not reused mid-reply


def test_an_unreachable_server_counts_connection_failures():
    async def main():
        server = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        server.close()
        await server.wait_closed()
        return await run_setting(f"http://127.0.0.1:{port}", "m", TextSource(["a"], False), 1, 1, 0.1, timeout=1)

    result = asyncio.run(main())
    assert result.latencies == [] and set(result.errors) == {"connection"} and result.cpu_cores is None


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command for a self-signed certificate")
def test_https_with_the_default_verification_against_a_stand_in_server(tmp_path, monkeypatch):
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                    "-keyout", str(key), "-out", str(cert), "-days", "1", "-subj", "/CN=localhost",
                    "-addext", "subjectAltName=DNS:localhost"], check=True, capture_output=True)
    monkeypatch.setenv("SSL_CERT_FILE", str(cert))  # trusted by ssl.create_default_context()
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)

    async def main():
        async with StandInServer(lambda path, n: ok(path.encode()), ssl_context=context) as server:
            connection = KeepAliveConnection(server.url + "/base", timeout=5)
            replies = [await connection.get("/x") for _ in range(2)]
            connection.close()
        return server, replies

    server, replies = asyncio.run(main())
    assert replies == [(200, b"/base/x")] * 2 and server.connections == 1
