"""Request size limits: the REST body middleware (driven with raw ASGI messages around a stand-in
app that echoes what it read) and the per-model settings. The real server's limits are tested end to
end in tests/integration/test_bad_inputs.py."""

from __future__ import annotations

import asyncio
import gzip
import json
import zlib

import pytest
from kserve.constants.constants import MAX_GRPC_MESSAGE_LENGTH

from predictors.model.settings import CHARS_PER_TOKEN, DEFAULT_MAX_BODY_BYTES
from predictors.serving.transport.limits import BodyLimit
from predictors.serving.transport.paths import model_route
from predictors.tasks import load_model_config
from tests.helpers import write_folder


class StandInModels:
    """body_limit() like the repository's: models with their own limits."""

    def __init__(self, limits: dict[str, int]) -> None:
        self.limits = limits

    def body_limit(self, name: str) -> int | None:
        return self.limits.get(name)


async def echo_stand_in_app(scope, receive, send):
    """Reads the whole body and answers with its length and the headers it saw."""
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    headers = {k.decode(): v.decode() for k, v in scope["headers"]}
    answer = json.dumps({"read": len(body), "body": body[:64].decode(errors="replace"), "headers": headers}).encode()
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": answer})


def call(chunks: list[bytes], headers: dict[str, str] | None = None, path: str = "/v2/models/m/infer",
         limit: int = 100, models: dict[str, int] | None = None, read: list[int] | None = None) -> tuple[int, dict]:
    """Send `chunks` as the body through BodyLimit(limit) and return (status, JSON answer)."""
    scope = {"type": "http", "method": "POST", "path": path,
             "headers": [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]}
    messages = [{"type": "http.request", "body": c, "more_body": i < len(chunks) - 1} for i, c in enumerate(chunks)]
    received = iter(messages)
    sent: list[dict] = []

    async def receive():
        message = next(received, {"type": "http.disconnect"})
        if read is not None and message["type"] == "http.request":
            read.append(len(message["body"]))
        return message

    async def send(message):
        sent.append(message)

    middleware = BodyLimit(echo_stand_in_app, StandInModels(models or {}), default_limit=limit)
    asyncio.run(middleware(scope, receive, send))
    start = next(m for m in sent if m["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return start["status"], json.loads(body)


def test_default_body_limit_matches_grpc_message_limit():
    assert DEFAULT_MAX_BODY_BYTES == MAX_GRPC_MESSAGE_LENGTH


def test_body_within_the_limit_reaches_the_app_whole():
    status, answer = call([b"a" * 60, b"b" * 40], {"content-length": "100"})
    assert status == 200 and answer["read"] == 100


def test_declared_content_length_over_the_limit_is_413_before_reading():
    status, answer = call([b"x" * 10], {"content-length": "5000"})
    assert status == 413
    assert answer == {"error": "request body of 5000 bytes is over the limit of 100 bytes (max_body_bytes)"}


def test_a_refused_body_is_read_to_its_end_unless_the_client_waits_for_100_continue():
    """Clients that send the whole body before reading the answer must get the 413, not a reset."""
    read: list[int] = []
    assert call([b"x" * 80] * 5, {"content-length": "400"}, read=read)[0] == 413
    assert sum(read) == 400
    read.clear()
    assert call([b"x" * 80] * 5, {"content-length": "400", "expect": "100-continue"}, read=read)[0] == 413
    assert read == []


@pytest.mark.parametrize("headers", [{}, {"content-length": "10"}], ids=["no-content-length", "lying-content-length"])
def test_streamed_body_over_the_limit_is_413(headers):
    status, answer = call([b"x" * 60, b"x" * 60, b"x" * 60], headers)
    assert status == 413 and "over the limit of 100 bytes (max_body_bytes)" in answer["error"]


def test_each_model_route_has_its_models_limit():
    assert model_route("/v2/models/big/versions/2/infer").model == "big"
    assert model_route("/v1/models/big:predict").model == "big"
    assert call([b"x" * 150], path="/v2/models/big/infer", models={"big": 200})[0] == 200
    assert call([b"x" * 150], path="/v1/models/big:predict", models={"big": 200})[0] == 200
    assert call([b"x" * 150], path="/v2/models/other/infer", models={"big": 200})[0] == 413


def test_gzip_and_deflate_bodies_are_decoded_for_the_app():
    document = b'{"inputs": []}'
    for encoding, compressed in [("gzip", gzip.compress(document)), ("deflate", zlib.compress(document))]:
        status, answer = call([compressed], {"content-encoding": encoding, "content-length": str(len(compressed))})
        assert status == 200 and answer["body"] == document.decode()
        assert "content-encoding" not in answer["headers"] and answer["headers"]["content-length"] == str(len(document))


def test_a_compressed_body_that_expands_past_the_limit_is_413():
    bomb = gzip.compress(b"\0" * 10_000_000)  # 10 kB that would decode to 10 MB
    status, answer = call([bomb], {"content-encoding": "gzip"}, limit=50_000)
    assert status == 413 and "decompresses to more than the limit of 50000 bytes (max_body_bytes)" in answer["error"]


@pytest.mark.parametrize(
    "encoding, body, status, fragment",
    [
        ("br", b"anything", 415, "Content-Encoding 'br' is not supported"),
        ("gzip", b"not gzip at all", 400, "not valid gzip data"),
        ("gzip", gzip.compress(b"x" * 50, mtime=0)[:-12], 400, "truncated"),  # mtime 0: the same test id in every pytest-xdist worker
    ],
)
def test_unsupported_or_broken_encodings_are_client_errors(encoding, body, status, fragment):
    got, answer = call([body], {"content-encoding": encoding})
    assert got == status and fragment in answer["error"]


def test_text_char_limit_follows_max_length_unless_set(tmp_path):
    derived = load_model_config(write_folder(tmp_path / "a", predictor_yaml="max_length: 128\n"))
    assert derived.text_char_limit == 128 * CHARS_PER_TOKEN and derived.max_body_bytes == DEFAULT_MAX_BODY_BYTES
    explicit = load_model_config(
        write_folder(tmp_path / "b", predictor_yaml="max_text_chars: 1000\nmax_body_bytes: 65536\n")
    )
    assert (explicit.text_char_limit, explicit.max_body_bytes) == (1000, 65536)
