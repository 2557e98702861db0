"""The Redis response cache against a real redis-server (Debian's, installed by
tools/install_system_deps.sh): shared entries, keys that change with the version, and a Redis
that goes down degrading to no cache with a warning, never to errors, in process and on the server."""

from __future__ import annotations

import json
import logging
import shutil
import subprocess
import time
import urllib.request

import numpy as np
import redis as redis_client
import pytest

from predictors.serving.scheduling.cache import CacheIdentity, RedisCache
from predictors.serving.scheduling.scheduler import TextResult
from tests.conftest import free_port, start_server
from tests.helpers import linked_model_folder

MODEL = "sentence-embedding"


class RedisServer:
    def __init__(self, port: int, log) -> None:
        self.port = port
        self.url = f"redis://127.0.0.1:{port}/0"
        self.log = log
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            pytest.skip("redis-server not installed; `make system-deps` (tools/install_system_deps.sh) installs it")
        self.process = subprocess.Popen(
            [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
            stdout=self.log.open("a"), stderr=subprocess.STDOUT,
        )
        import redis

        client = redis.Redis.from_url(self.url)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                client.ping()
                return
            except redis.ConnectionError:
                time.sleep(0.05)
        raise RuntimeError(f"redis-server did not answer on {self.port}: {self.log.read_text()[-2000:]}")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=10)


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory):
    server = RedisServer(free_port(), tmp_path_factory.mktemp("redis") / "redis.log")
    server.start()
    yield server
    server.stop()


def row(text: str) -> TextResult:
    return TextResult({"label": np.array([text[::-1]], dtype=object), "probabilities": np.array([[0.25, 0.75]], np.float32)},
                      False, len(text.split()) + 2)


def test_entries_are_shared_and_keyed_by_version(redis_server):
    writer = RedisCache(CacheIdentity("m", "1", "d" * 64), redis_server.url, ttl_seconds=60)
    reader = RedisCache(CacheIdentity("m", "1", "d" * 64), redis_server.url, ttl_seconds=60)  # another replica
    next_version = RedisCache(CacheIdentity("m", "2", "d" * 64), redis_server.url, ttl_seconds=60)
    writer.put_many([("hello", row("hello")), ("world", row("world"))])
    found = reader.get_many(["hello", "new text", "world"])
    assert found[1] is None
    assert list(found[0][0]["label"]) == ["olleh"] and found[2][0]["probabilities"].dtype == np.float32
    assert next_version.get_many(["hello"]) == [None]
    assert reader.stats()["hits"] == 2 and reader.stats()["misses"] == 1


def test_redis_down_degrades_to_no_cache_with_a_warning(tmp_path, caplog):
    redis = RedisServer(free_port(), tmp_path / "redis.log")
    redis.start()
    cache = RedisCache(CacheIdentity("m", "1", "e" * 64), redis.url, ttl_seconds=60, retry_seconds=2.0)
    cache.put_many([("kept", row("kept"))])
    assert cache.get_many(["kept"])[0] is not None
    redis.stop()
    with caplog.at_level(logging.WARNING, logger="kserve.predictors"):
        assert cache.get_many(["kept", "other"]) == [None, None]
        cache.put_many([("other", row("other"))])
        assert cache.get_many(["kept"]) == [None]  # within retry_seconds: not even tried
    warnings = [r for r in caplog.records if "unavailable" in r.getMessage()]
    assert len(warnings) == 1 and cache.stats()["available"] is False and cache.stats()["errors"] == 1
    redis.start()  # the same port again: the cache comes back after retry_seconds
    deadline = time.monotonic() + 30
    while not cache.stats()["available"]:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    cache.put_many([("back", row("back"))])
    assert cache.get_many(["back"])[0] is not None
    redis.stop()


def test_server_with_a_redis_cache_answers_repeats_from_it_and_survives_redis_going_down(
    demo_models, redis_server, tmp_path_factory
):
    models = tmp_path_factory.mktemp("redis-models")
    linked_model_folder(demo_models / MODEL, models / MODEL, f"cache: {{url: '{redis_server.url}', ttl_seconds: 60}}\n")
    server = start_server(["--models-dir", str(models)], tmp_path_factory.mktemp("redis-server") / "server.log")
    infer = f"{server.url}/v2/models/{MODEL}/infer"

    def post(texts):
        body = {"inputs": [{"name": "text", "datatype": "BYTES", "shape": [len(texts)], "data": texts}]}
        request = urllib.request.Request(infer, json.dumps(body).encode(), {"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=60) as reply:
            return reply.status, json.loads(reply.read())

    def cache_stats():
        with urllib.request.urlopen(f"{server.url}/v2/models/{MODEL}/config", timeout=10) as reply:
            return json.loads(reply.read())["cache"]

    try:
        server.wait_ready()
        texts = ["Wonderful tea, fresh and fragrant.", "Stale crackers, never again."]
        first = post(texts)
        stored = redis_client.Redis.from_url(redis_server.url)
        deadline = time.monotonic() + 30
        while len(list(stored.scan_iter(f"predictors:{MODEL}:*"))) < 2:  # stored in the background
            assert time.monotonic() < deadline, "the answers never reached redis"
            time.sleep(0.02)
        second = post([texts[1], "A new text about cocoa.", texts[0]])
        stats = cache_stats()
        assert stats["backend"] == "redis" and stats["hits"] >= 2
        first_vectors = np.array(first[1]["outputs"][0]["data"]).reshape(2, -1)
        second_vectors = np.array(second[1]["outputs"][0]["data"]).reshape(3, -1)
        np.testing.assert_array_equal(second_vectors[[2, 0]], first_vectors)  # from Redis, exactly
        redis_server.stop()
        status, answer = post(texts + ["Another new text."])
        assert status == 200 and answer["outputs"][0]["shape"][0] == 3
        assert cache_stats()["errors"] >= 1
        assert "unavailable" in server.log.read_text()
    finally:
        server.stop()
