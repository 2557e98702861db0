"""The in-process response cache and the cache-then-compute path, with a stand-in compute function
(it echoes its texts and records what it was asked); Redis is tested against a real redis-server in
tests/integration/test_cache_redis.py."""

from __future__ import annotations

import asyncio
import threading

import numpy as np
import pytest

from predictors.serving.scheduling.cache import (
    KEYS_ON_LOOP_MAX_CHARS, CacheIdentity, MemoryCache, build_cache, decode_result, encode_result, lookup_then_compute,
)
from predictors.serving.scheduling.scheduler import TextResult, assemble
from predictors.tasks import head_for, load_model_config
from tests.helpers import write_folder

IDENTITY = CacheIdentity("m", "1", "ab" * 32)


def row(text: str) -> TextResult:
    return TextResult({"label": np.array([text.upper()], dtype=object), "vector": np.full((1, 4), len(text), np.float32)},
                      text.startswith("long"), len(text) + 2)


class StandInCompute:
    def __init__(self) -> None:
        self.asked: list[list[str]] = []

    async def __call__(self, texts):
        self.asked.append(list(texts))
        return [row(t) for t in texts]


def test_a_request_mixing_cached_and_new_texts_computes_only_the_new_ones():
    cache, compute = MemoryCache(IDENTITY, 1, 60), StandInCompute()
    first = asyncio.run(lookup_then_compute(cache, ["a", "bb", "a"], compute))
    assert compute.asked == [["a", "bb"]]  # a text repeated in one request is computed once
    second = asyncio.run(lookup_then_compute(cache, ["ccc", "a", "long dddd", "bb"], compute))
    assert compute.asked[1] == ["ccc", "long dddd"]
    outputs, truncated = assemble(second)
    assert list(outputs["label"]) == ["CCC", "A", "LONG DDDD", "BB"] and outputs["label"].dtype == object
    np.testing.assert_array_equal(outputs["vector"][:, 0], [3, 1, 9, 2])
    assert truncated == [2]
    assert [r[0]["label"][0] for r in first] == ["A", "BB", "A"]
    stats = cache.stats()
    assert (stats["hits"], stats["misses"]) == (2, 5) and stats["hit_ratio"] == round(2 / 7, 4)


def test_texts_with_one_key_share_one_computation_and_long_requests_are_keyed_off_the_loop():
    cache, compute = MemoryCache(IDENTITY, 1, 60), StandInCompute()
    threads: list[str] = []

    def key(text: str) -> str:  # a stand-in for a model's cleaning
        threads.append(threading.current_thread().name)
        return text.lower()

    async def run(texts):
        loop_thread = threading.current_thread().name
        return loop_thread, await lookup_then_compute(cache, texts, compute, key=key)

    loop_thread, rows = asyncio.run(run(["Tea", "TEA", "tea"]))
    assert compute.asked == [["Tea"]] and [r[0]["label"][0] for r in rows] == ["TEA"] * 3
    assert set(threads) == {loop_thread}  # a short request: keyed on the event loop
    threads.clear()
    long_texts = ["x" * (KEYS_ON_LOOP_MAX_CHARS // 2), "y" * (KEYS_ON_LOOP_MAX_CHARS // 2 + 1)]
    loop_thread, _ = asyncio.run(run(long_texts))
    assert threads and loop_thread not in threads  # a long one: on a thread, the loop stays free


def test_lru_evicts_the_least_recently_used_within_the_size_limit():
    cache = MemoryCache(IDENTITY, max_mb=0.002, ttl_seconds=60)  # ~2 KB: a handful of entries
    for text in ("t0", "t1", "t2"):
        cache.put_many([(text, row(text))])
    assert cache.get_many(["t0"])[0] is not None  # t0 is now the most recently used
    for n in range(3, 12):
        cache.put_many([(f"t{n}", row(f"t{n}"))])
    stats = cache.stats()
    assert stats["evictions"] > 0 and stats["size_mb"] <= 0.002
    assert cache.get_many(["t1"])[0] is None and cache.get_many(["t11"])[0] is not None


def test_entries_expire_after_their_ttl(monkeypatch):
    clock = [1000.0]
    monkeypatch.setattr("predictors.serving.scheduling.cache.time.monotonic", lambda: clock[0])
    cache = MemoryCache(IDENTITY, 1, ttl_seconds=5)
    cache.put_many([("a", row("a"))])
    clock[0] += 4
    assert cache.get_many(["a"])[0] is not None
    clock[0] += 2
    assert cache.get_many(["a"])[0] is None and cache.stats()["expired"] == 1


def test_clear_empties_the_cache():
    cache = MemoryCache(IDENTITY, 1, 60)
    cache.put_many([("a", row("a"))])
    cache.clear()
    assert cache.get_many(["a"]) == [None] and cache.stats()["entries"] == 0


def test_redis_encoding_round_trips_without_pickle():
    result = row("long text")
    decoded = decode_result(encode_result(result))
    assert decoded[1] is True and decoded[0]["label"].dtype == object
    assert list(decoded[0]["label"]) == ["LONG TEXT"]
    np.testing.assert_array_equal(decoded[0]["vector"], result[0]["vector"])
    assert decoded[0]["vector"].dtype == np.float32


@pytest.mark.parametrize("yaml_text, task_arch, expected", [
    ("", "BertForSequenceClassification", "memory"),
    ("", "BertForTokenClassification", None),
    ("cache: {enabled: false}\n", "BertForSequenceClassification", None),
    ("cache: {enabled: true, max_mb: 8, ttl_seconds: 30}\n", "BertForTokenClassification", "memory"),
])
def test_cache_defaults_by_task_head_and_settings(tmp_path, yaml_text, task_arch, expected):
    folder = write_folder(tmp_path / "m", architecture=task_arch, predictor_yaml=yaml_text, files=("model.onnx",))
    (folder / "model.onnx").write_bytes(b"weights v1")
    config = load_model_config(folder)
    cache = build_cache(config, folder / "model.onnx", personal_data=head_for(config).personal_data)
    assert (cache.stats()["backend"] if cache else None) == expected
    if cache is not None and "max_mb" in yaml_text:
        assert cache.stats()["max_mb"] == 8 and cache.ttl_seconds == 30


def test_the_key_changes_with_version_and_weights(tmp_path):
    folder = write_folder(tmp_path / "m", predictor_yaml="version: 1\n", files=("model.onnx",))
    (folder / "model.onnx").write_bytes(b"weights v1")
    first = build_cache(load_model_config(folder), folder / "model.onnx", personal_data=False).identity
    (folder / "model.onnx").write_bytes(b"weights v2")
    second = build_cache(load_model_config(folder), folder / "model.onnx", personal_data=False).identity
    (folder / "predictor.yaml").write_text("version: 2\n")
    third = build_cache(load_model_config(folder), folder / "model.onnx", personal_data=False).identity
    assert len({first.prefix, second.prefix, third.prefix}) == 3
