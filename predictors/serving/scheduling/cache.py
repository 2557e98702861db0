"""The response cache: one text's outputs, keyed by model, version, weights digest and the text.

The text is used as sent, without normalisation: tokenizers lower-case, strip and split in
model-specific ways, and token-level outputs carry character offsets into the original text, so
no rewrite of the text provably leaves every answer unchanged. The one exception is the model's own
text cleaning (predictor.yaml `preprocess:`): a model that cleans its texts answers from the cleaned
text alone, so the predictor keys such a model's texts by their cleaned form where no cut to the
character limit is involved (TextPredictor._cache_key), and the cleaning settings are part of the
identity (`answer_digest`). Cleaning is refused for tasks whose outputs carry character offsets.

Two stores with one interface: `MemoryCache` (LRU with TTL, bounded in MB, in this process) and
`RedisCache` (shared by replicas; entries expire by TTL, Redis's own maxmemory policy evicts). A
Redis that cannot be reached degrades to no cache with one warning per outage, never to an error.
`lookup_then_compute` serves a request's texts from the cache and computes only the misses.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import logging
import sys
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Awaitable, Callable, Protocol

import numpy as np

from ...model import ModelConfig
from .scheduler import RequestRuns, TextResult

logger = logging.getLogger("kserve.predictors")

ENTRY_OVERHEAD_BYTES = 240  # dict, tuple and OrderedDict node per entry, roughly


@dataclass(frozen=True)
class CacheIdentity:
    """What an answer depends on besides the text."""

    model: str
    version: str
    weights_digest: str

    @property
    def prefix(self) -> str:
        return f"predictors:{self.model}:{self.version}:{self.weights_digest[:16]}"


def weights_digest(path: Path) -> str:
    """sha256 of the served weights file: new weights under the same version never hit old answers."""
    with path.open("rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


def answer_digest(config: ModelConfig, weights: Path) -> str:
    """What an answer depends on besides the text: the weights, and the text cleaning when the
    model has one (other cleaning, other answers)."""
    digest = weights_digest(weights)
    steps = config.cleaner.steps()
    if not steps:
        return digest
    return hashlib.sha256(json.dumps([digest, steps]).encode()).hexdigest()


class ResponseCache(Protocol):
    blocking: bool  # True: calls do network I/O and must run off the event loop

    def get_many(self, texts: list[str]) -> list[TextResult | None]: ...

    def put_many(self, items: list[tuple[str, TextResult]]) -> None: ...

    def clear(self) -> None: ...

    def stats(self) -> dict[str, object]: ...


def _result_bytes(text: str, result: TextResult) -> int:
    size = ENTRY_OVERHEAD_BYTES + len(text.encode("utf-8", "surrogatepass"))
    for values in result[0].values():
        size += values.nbytes
        if values.dtype == object:
            size += sum(sys.getsizeof(v) for v in values.ravel())
    return size


class MemoryCache:
    """LRU with TTL in this process, at most max_mb; thread-safe."""

    blocking = False

    def __init__(self, identity: CacheIdentity, max_mb: float, ttl_seconds: float) -> None:
        self.identity = identity
        self.max_bytes = int(max_mb * 1024 * 1024)
        self.ttl_seconds = ttl_seconds
        self._entries: OrderedDict[str, tuple[float, int, TextResult]] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()
        self.counters = {"hits": 0, "misses": 0, "evictions": 0, "expired": 0}

    def get_many(self, texts: list[str]) -> list[TextResult | None]:
        now = time.monotonic()
        found: list[TextResult | None] = []
        with self._lock:
            for text in texts:
                entry = self._entries.get(text)
                if entry is not None and entry[0] <= now:
                    self._remove(text)
                    self.counters["expired"] += 1
                    entry = None
                if entry is None:
                    self.counters["misses"] += 1
                    found.append(None)
                else:
                    self._entries.move_to_end(text)
                    self.counters["hits"] += 1
                    found.append(entry[2])
        return found

    def put_many(self, items: list[tuple[str, TextResult]]) -> None:
        expires = time.monotonic() + self.ttl_seconds
        with self._lock:
            for text, result in items:
                size = _result_bytes(text, result)
                if size > self.max_bytes:
                    continue
                if text in self._entries:
                    self._remove(text)
                self._entries[text] = (expires, size, result)
                self._bytes += size
                while self._bytes > self.max_bytes:
                    oldest = next(iter(self._entries))
                    self._remove(oldest)
                    self.counters["evictions"] += 1

    def _remove(self, text: str) -> None:
        _, size, _ = self._entries.pop(text)
        self._bytes -= size

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self._bytes = 0

    def stats(self) -> dict[str, object]:
        with self._lock:
            return {
                "backend": "memory", "entries": len(self._entries), "size_mb": round(self._bytes / 2**20, 2),
                "max_mb": round(self.max_bytes / 2**20, 2), "ttl_seconds": self.ttl_seconds,
                **self.counters, "hit_ratio": _ratio(self.counters),
            }


def _ratio(counters: dict[str, int]) -> float | None:
    looked_up = counters["hits"] + counters["misses"]
    return round(counters["hits"] / looked_up, 4) if looked_up else None


def encode_result(result: TextResult) -> bytes:
    """JSON (never pickle: a shared Redis must not be able to run code here)."""
    outputs = {}
    for name, values in result[0].items():
        if values.dtype == object:
            outputs[name] = ["object", list(values.shape), [str(v) for v in values.ravel()]]
        else:
            outputs[name] = [values.dtype.str, list(values.shape), base64.b64encode(values.tobytes()).decode()]
    return json.dumps({"truncated": result.truncated, "tokens": result.tokens, "outputs": outputs}).encode()


def decode_result(data: bytes) -> TextResult:
    """An entry encode_result wrote; KeyError for one without a field this version needs (a miss)."""
    document = json.loads(data)
    outputs = {}
    for name, (dtype, shape, payload) in document["outputs"].items():
        if dtype == "object":
            values = np.empty(len(payload), dtype=object)
            values[:] = payload
            outputs[name] = values.reshape(shape)
        else:
            outputs[name] = np.frombuffer(base64.b64decode(payload), dtype=np.dtype(dtype)).reshape(shape).copy()
    return TextResult(outputs, bool(document["truncated"]), int(document["tokens"]))


class RedisCache:
    """Entries in Redis under `predictors:<model>:<version>:<digest>:<sha256(text)>`, with a TTL.
    Any Redis error makes the cache answer "miss" (and store nothing) for `retry_seconds`."""

    blocking = True

    def __init__(self, identity: CacheIdentity, url: str, ttl_seconds: float, retry_seconds: float = 10.0) -> None:
        import redis  # optional dependency: the `cache` extra

        self.identity = identity
        self.url = url
        self.ttl_seconds = ttl_seconds
        self.retry_seconds = retry_seconds
        self._client = redis.Redis.from_url(url, socket_connect_timeout=0.2, socket_timeout=0.5)
        self._errors = (redis.RedisError, OSError)
        self._down_until = 0.0
        self._lock = threading.Lock()
        self.counters = {"hits": 0, "misses": 0, "evictions": 0, "errors": 0}

    def _key(self, text: str) -> str:
        return f"{self.identity.prefix}:{hashlib.sha256(text.encode('utf-8', 'surrogatepass')).hexdigest()}"

    def _available(self) -> bool:
        return time.monotonic() >= self._down_until

    def _failed(self, exc: Exception) -> None:
        with self._lock:
            self.counters["errors"] += 1
            if self._available():
                logger.warning(
                    "response cache: redis at %s unavailable (%s: %s); serving without the cache for %.0f s",
                    self.url, type(exc).__name__, exc, self.retry_seconds,
                )
            self._down_until = time.monotonic() + self.retry_seconds

    def get_many(self, texts: list[str]) -> list[TextResult | None]:
        found: list[TextResult | None] = [None] * len(texts)
        if self._available():
            try:
                values = self._client.mget([self._key(t) for t in texts])
            except self._errors as exc:
                self._failed(exc)
                values = [None] * len(texts)
            for i, value in enumerate(values):
                if value is not None:
                    try:
                        found[i] = decode_result(value)
                    except (ValueError, KeyError, TypeError):
                        found[i] = None  # an entry this version cannot read is a miss
        with self._lock:
            hits = sum(r is not None for r in found)
            self.counters["hits"] += hits
            self.counters["misses"] += len(texts) - hits
        return found

    def put_many(self, items: list[tuple[str, TextResult]]) -> None:
        if not items or not self._available():
            return
        try:
            pipeline = self._client.pipeline(transaction=False)
            for text, result in items:
                pipeline.set(self._key(text), encode_result(result), ex=max(1, int(self.ttl_seconds)))
            pipeline.execute()
        except self._errors as exc:
            self._failed(exc)

    def clear(self) -> None:
        """Entries of other versions are unreachable (the key names the version) and expire by TTL."""

    def stats(self) -> dict[str, object]:
        with self._lock:
            return {
                "backend": "redis", "url": self.url, "ttl_seconds": self.ttl_seconds,
                "available": self._available(), **self.counters, "hit_ratio": _ratio(self.counters),
            }


#: A request whose texts hold more characters than this gets its cache keys (a cleaning model's
#: texts cleaned, about 0.1 us a character) on a thread: 1024 texts of 7,370 characters kept the event
#: loop, and so a liveness probe, busy for 0.8 s. Below it the thread hand-off costs more than it saves.
KEYS_ON_LOOP_MAX_CHARS = 20_000


async def lookup_then_compute(
    cache: ResponseCache | None,
    texts: list[str],
    compute: Callable[[list[str]], Awaitable[list[TextResult]]],
    runs: RequestRuns | None = None,
    key: Callable[[str], str] | None = None,
) -> list[TextResult]:
    """Each text's result: from the cache where present, computed (once per distinct key) otherwise.
    `key` maps a text to its cache key (default: the text itself); texts with one key share a result.
    `runs.cached_texts` counts the texts the cache answered."""
    if cache is None:
        return await compute(texts)
    keys = texts
    if key is not None:
        if sum(map(len, texts)) > KEYS_ON_LOOP_MAX_CHARS:
            keys = await asyncio.to_thread(lambda: [key(t) for t in texts])
        else:
            keys = [key(t) for t in texts]
    found = await asyncio.to_thread(cache.get_many, keys) if cache.blocking else cache.get_many(keys)
    if runs is not None:
        runs.cached_texts = sum(result is not None for result in found)
    missing: dict[str, str] = {}  # key -> the first text with it
    for k, t, r in zip(keys, texts, found):
        if r is None:
            missing.setdefault(k, t)
    if missing:
        computed = dict(zip(missing, await compute(list(missing.values()))))
        items = list(computed.items())
        if cache.blocking:  # stored in the background: the answer does not wait for Redis
            asyncio.get_running_loop().run_in_executor(None, cache.put_many, items)
        else:
            cache.put_many(items)
        found = [r if r is not None else computed[k] for k, r in zip(keys, found)]
    return found  # type: ignore[return-value]


DEFAULT_MAX_MB = 64
DEFAULT_TTL_SECONDS = 3600


def build_cache(config: ModelConfig, weights: Path, personal_data: bool) -> ResponseCache | None:
    """The cache predictor.yaml's `cache:` asks for (by default on, except for a model whose inputs
    are personal data: TaskHead.personal_data), or None when it is off."""
    settings = config.cache
    enabled = settings.enabled if settings.enabled is not None else not personal_data
    if not enabled:
        return None
    identity = CacheIdentity(config.name, config.version, answer_digest(config, weights))
    ttl = float(settings.ttl_seconds or DEFAULT_TTL_SECONDS)
    if settings.url:
        return RedisCache(identity, settings.url, ttl)
    return MemoryCache(identity, float(settings.max_mb or DEFAULT_MAX_MB), ttl)
