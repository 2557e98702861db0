#!/usr/bin/env python3
"""The server under load, each figure against the same backend with no server in front, in one run.

    python benchmarks/serving_load.py [--models-dir models] [--model review-sentiment] [--seconds 8] [--out docs/performance.json]

Texts: the model's held-out texts of at most 128 tokens. Steps (each prints a line as it finishes):
1. raw limits in this process, two threads through the serving pipeline (tokenize, backend, head):
   int8 one text per run (length-sorted, and in the order the clients send them); torch at batch 1
   and in length-sorted batches of 8;
2. a server on int8: 32 concurrent one-text clients; 2 clients of 64-text requests; a one-text
   client idle and while another client keeps sending 1024-text requests; overload (500 concurrent
   64-text requests: refusal latency, accepted requests within their deadline, live-probe latency,
   RSS); the cache (the same 64-text request fresh and repeated);
3. a server on torch (backend: hf): 32 one-text clients; 2 clients of 64-text requests;
4. a lean process: a server with only the int8 model: start to ready, idle RSS, torch imported or not.
The machine is shared: the load average is printed with each step.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from dataclasses import asdict, dataclass, is_dataclass
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))
sys.argv, ARGV = sys.argv[:1], sys.argv[1:]  # kserve parses sys.argv when imported

from predictors.cli.benchmark import TextSource, read_texts, run_setting  # noqa: E402
from tests.helpers import linked_model_folder as linked_folder  # noqa: E402

MAX_TOKENS = 128
results: dict[str, object] = {}


def log(key: str, value: object) -> None:
    if is_dataclass(value):
        value = asdict(value)
    results[key] = value
    print(f"[load {os.getloadavg()[0]:.1f}] {key}: {value}", flush=True)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def short_texts(folder: Path, texts_file: Path | None) -> list[str]:
    """The model's held-out texts (or --texts) of at most MAX_TOKENS tokens."""
    from transformers import PreTrainedTokenizerFast

    tokenizer = PreTrainedTokenizerFast.from_pretrained(folder)
    texts = read_texts(texts_file, folder.name, folder.parent)
    return [t for t in texts if len(tokenizer(t)["input_ids"]) <= MAX_TOKENS]


# ---- raw limits -----------------------------------------------------------------------------
@dataclass(frozen=True)
class RawRun:
    texts_per_second: float
    cpu_cores: float  # process CPU seconds per wall second


def raw_run(folder: Path, texts: list[str], batch: int, seconds: float, sort: bool = True) -> RawRun:
    """Two threads (the server's two workers) running the pipeline on length-sorted batches, or with
    `sort=False` on the texts in the order the benchmark's clients send them (round-robin over the
    file): one-text runs of varied lengths one after another are slower than of sorted lengths."""
    from predictors.serving.predictor import TextPredictor
    from predictors.backends import load_model_config

    predictor = TextPredictor(load_model_config(folder), thread_counts=(1,))  # the raw limit: one thread per run
    predictor.load()
    ordered = sorted(texts, key=len) if sort else texts
    batches = itertools.cycle([ordered[i : i + batch] for i in range(0, len(ordered), batch)])
    lock, done = threading.Lock(), [0]
    stop_at = time.monotonic() + seconds

    def work() -> None:
        while time.monotonic() < stop_at:
            with lock:
                chunk = next(batches)
            predictor.run_batch(chunk)
            with lock:
                done[0] += len(chunk)

    started, cpu_started = time.monotonic(), time.process_time()
    threads = [threading.Thread(target=work) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    seconds_taken = time.monotonic() - started
    predictor.stop()
    return RawRun(round(done[0] / seconds_taken, 1), round((time.process_time() - cpu_started) / seconds_taken, 2))


def ratio(result, raw: RawRun) -> float:
    return round(result.texts_per_second / raw.texts_per_second, 3)


def per_cpu_ratio(result, raw: RawRun) -> float | None:
    """Texts per CPU-second of the server process against the raw run's: the server's own cost per
    text, whatever the load generator beside it takes from the shared cores."""
    if not result.cpu_cores:
        return None
    return round((result.texts_per_second / result.cpu_cores) / (raw.texts_per_second / raw.cpu_cores), 3)


# ---- a server -------------------------------------------------------------------------------
class Server:
    def __init__(self, models: Path, log_path: Path, env: dict[str, str] | None = None) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.started = time.monotonic()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "predictors", "serve", "--models-dir", str(models),
             "--http_port", str(self.port), "--grpc_port", str(free_port())],
            cwd=REPO_ROOT, stdout=log_path.open("w"), stderr=subprocess.STDOUT, env={**os.environ, **(env or {})},
        )
        self.ready_seconds = self._wait_ready()

    def _wait_ready(self) -> float:
        while time.monotonic() - self.started < 180:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited with {self.process.returncode}")
            try:
                with urllib.request.urlopen(f"{self.url}/v2/health/ready", timeout=1) as reply:
                    if reply.status == 200:
                        return round(time.monotonic() - self.started, 2)
            except OSError:
                pass
            time.sleep(0.05)
        raise TimeoutError("server not ready")

    def rss_mib(self) -> float:
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return round(int(line.split()[1]) / 1024, 1)
        return 0.0

    def imports_torch(self) -> bool:
        return "libtorch" in Path(f"/proc/{self.process.pid}/maps").read_text()

    def config(self, model: str) -> dict:
        with urllib.request.urlopen(f"{self.url}/v2/models/{model}/config", timeout=10) as reply:
            return json.loads(reply.read())

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=60)


def setting(server: Server, model: str, texts: list[str], concurrency: int, per_request: int, seconds: float):
    return asyncio.run(run_setting(server.url, model, TextSource(texts, cache_bust=False), concurrency, per_request, seconds))


def summary(result) -> dict:
    row = result.row()
    return {k: row[k] for k in ("texts_per_s", "requests_per_s", "p50_ms", "p99_ms", "max_ms", "errors")}


async def one_text_p50_beside(url: str, model: str, texts: list[str], seconds: float, large: int) -> float:
    """p50 of a one-text client's requests while (large > 0) another client keeps sending `large`-text requests."""
    import aiohttp

    endpoint = f"{url}/v2/models/{model}/infer"
    stop_at = time.monotonic() + seconds
    latencies: list[float] = []

    def body(batch: list[str]) -> dict:
        return {"inputs": [{"name": "text", "datatype": "BYTES", "shape": [len(batch)], "data": batch}]}

    async with aiohttp.ClientSession() as session:

        async def heavy() -> None:
            source = TextSource(texts, cache_bust=True)
            while time.monotonic() < stop_at:
                async with session.post(endpoint, json=body(source.take(large))) as reply:
                    await reply.read()

        async def light() -> None:
            await asyncio.sleep(0.5)
            source = TextSource(texts, cache_bust=True)
            while time.monotonic() < stop_at:
                started = time.perf_counter()
                async with session.post(endpoint, json=body(source.take(1))) as reply:
                    await reply.read()
                    if reply.status == 200:
                        latencies.append(time.perf_counter() - started)
                await asyncio.sleep(0.02)

        await asyncio.gather(light(), *([heavy()] if large else []))
    latencies.sort()
    return round(latencies[len(latencies) // 2] * 1000, 1)


PROBE_SCRIPT = """
import json, sys, threading, time, urllib.request
url, latencies, stop = sys.argv[1], [], threading.Event()
threading.Thread(target=lambda: (sys.stdin.readline(), stop.set()), daemon=True).start()
while not stop.is_set():
    started = time.perf_counter()
    try:  # a new connection per probe, as the kubelet's; a failed probe counts as 10 s
        with urllib.request.urlopen(url, timeout=10) as reply:
            reply.read()
        latencies.append(time.perf_counter() - started)
    except OSError:
        latencies.append(10.0)
    stop.wait(0.1)
print(json.dumps(latencies))
"""


async def overload(server: Server, model: str, texts: list[str], requests: int, per_request: int) -> dict:
    """`requests` concurrent requests at once, each on a connection opened beforehand (as a gateway's
    pool would hold them), so the latencies are the server's, not connection set-up in this process."""
    from predictors.cli.http_load import REQUEST_FAILURES, KeepAliveConnection

    outcomes: list[tuple[int, float]] = []
    rss: list[float] = [server.rss_mib()]
    finished = asyncio.Event()
    source = TextSource(texts, cache_bust=True)
    # Encoded before the burst, so the load generator spends its time sending, not encoding.
    bodies = [json.dumps({"inputs": [{"name": "text", "datatype": "BYTES", "shape": [per_request],
                                      "data": source.take(per_request)}]}).encode() for _ in range(requests)]
    connections = [KeepAliveConnection(server.url, timeout=300) for _ in bodies]
    await asyncio.gather(*(c.get("/v2/health/live") for c in connections))
    head = connections[0].post_head(f"/v2/models/{model}/infer")

    async def one(connection: KeepAliveConnection, body: bytes) -> None:
        started = time.perf_counter()
        try:
            status, _ = await connection.post(head, body)
            outcomes.append((status, time.perf_counter() - started))
        except REQUEST_FAILURES:
            outcomes.append((0, time.perf_counter() - started))  # 0: the connection failed

    async def watch_rss() -> None:
        while not finished.is_set():
            rss.append(server.rss_mib())
            await asyncio.sleep(0.1)

    # The liveness probe runs in its own process, as the kubelet does: its latency is the
    # server's, not that of this busy load generator.
    prober = subprocess.Popen([sys.executable, "-c", PROBE_SCRIPT, server.url + "/v2/health/live"],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    await asyncio.sleep(0.5)
    watcher = asyncio.create_task(watch_rss())
    await asyncio.gather(*(one(c, b) for c, b in zip(connections, bodies)))
    await asyncio.sleep(0.5)
    finished.set()
    await watcher
    probes = json.loads(prober.communicate("stop\n", timeout=30)[0])
    for connection in connections:
        connection.close()
    refused = [s for status, s in outcomes if status == 429]
    accepted = [s for status, s in outcomes if status == 200]
    timeout_s = server.config(model)["timeout_ms"] / 1000
    return {
        "requests": requests, "texts_per_request": per_request, "accepted": len(accepted), "refused_429": len(refused),
        "other": sorted({status for status, _ in outcomes} - {200, 429}),
        "refusal_p50_ms": round(sorted(refused)[len(refused) // 2] * 1000, 1) if refused else None,
        "refusal_max_ms": round(max(refused) * 1000, 1) if refused else None,
        "accepted_max_s": round(max(accepted), 2) if accepted else None, "deadline_s": timeout_s,
        "live_probe_max_ms": round(max(probes) * 1000, 1) if probes else None,
        "rss_mib_before_during_after": [rss[0], max(rss), server.rss_mib()],
    }


async def cache_speedup(server: Server, model: str, texts: list[str]) -> dict:
    import aiohttp

    batch = TextSource(texts, cache_bust=True).take(64)
    body = {"inputs": [{"name": "text", "datatype": "BYTES", "shape": [64], "data": batch}]}
    timings = []
    async with aiohttp.ClientSession() as session:
        for _ in range(3):
            started = time.perf_counter()
            async with session.post(f"{server.url}/v2/models/{model}/infer", json=body) as reply:
                await reply.read()
            timings.append(time.perf_counter() - started)
    stats = server.config(model)["cache"]
    return {"fresh_ms": round(timings[0] * 1000, 1), "repeated_ms": round(min(timings[1:]) * 1000, 1),
            "speedup": round(timings[0] / min(timings[1:]), 1), "hit_ratio": stats["hit_ratio"],
            "hits": stats["hits"], "misses": stats["misses"]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models-dir", type=Path, default=REPO_ROOT / "models")
    parser.add_argument("--model", default="review-sentiment")
    parser.add_argument("--seconds", type=float, default=8.0, help="seconds per measurement (default: %(default)s)")
    parser.add_argument("--out", type=Path, help="also write the figures as JSON")
    parser.add_argument("--texts", type=Path, help="texts instead of the model's held-out set (one per line or JSON lines)")
    parser.add_argument("--skip-torch", action="store_true", help="leave out the torch (backend: hf) steps")
    args = parser.parse_args(ARGV)
    source = args.models_dir / args.model
    texts = short_texts(source, args.texts)
    log("texts", f"{len(texts)} {'held-out ' if args.texts is None else ''}texts of at most {MAX_TOKENS} tokens")
    work = Path(tempfile.mkdtemp(prefix="serving-load-"))
    variants = {
        "int8": linked_folder(source, work / "int8" / args.model, "backend: onnx\ncache: {enabled: false}\n"),
        "int8-cached": linked_folder(source, work / "int8-cached" / args.model, "backend: onnx\n"),
        "hf": linked_folder(source, work / "hf" / args.model, "backend: hf\ncache: {enabled: false}\n"),
    }
    seconds = args.seconds

    log("raw int8, one text per run, 2 threads", raw_int8 := raw_run(variants["int8"], texts, 1, seconds))
    log("raw int8, one text per run, 2 threads, as the clients send them",
        raw_int8_sent := raw_run(variants["int8"], texts, 1, seconds, sort=False))
    if not args.skip_torch:
        log("raw torch batch 1, 2 threads", raw_hf_1 := raw_run(variants["hf"], texts, 1, seconds))
        log("raw torch length-sorted batch 8, 2 threads", raw_hf_8 := raw_run(variants["hf"], texts, 8, seconds))

    server = Server(variants["int8"].parent, work / "int8.log")
    try:
        result = setting(server, args.model, texts, 32, 1, seconds)
        log("int8 server, 32 one-text clients", summary(result))
        log("int8: ratio to raw limit", ratio(result, raw_int8))
        log("int8: ratio to raw limit in the clients' order", ratio(result, raw_int8_sent))
        log("int8: texts per server CPU-second, ratio to raw", per_cpu_ratio(result, raw_int8))
        log("int8: p99 / p50", round(result.percentile(99) / result.percentile(50), 2))
        result = setting(server, args.model, texts, 2, 64, seconds)
        log("int8 server, 2 clients x 64 texts", summary(result))
        log("int8: 64-text ratio to raw limit", ratio(result, raw_int8))
        log("int8: 64-text ratio to raw limit in the clients' order", ratio(result, raw_int8_sent))
        idle = asyncio.run(one_text_p50_beside(server.url, args.model, texts, seconds / 2, 0))
        busy = asyncio.run(one_text_p50_beside(server.url, args.model, texts, seconds, 1024))
        log("int8: one-text p50 idle / beside 1024-text requests (ms)", [idle, busy, round(busy / idle, 2)])
        log("int8: overload", asyncio.run(overload(server, args.model, texts, 500, 64)))
    finally:
        server.stop()

    server = Server(variants["int8-cached"].parent, work / "cached.log")
    try:
        log("int8 lean process: start to ready (s)", server.ready_seconds)
        time.sleep(1)
        log("int8 lean process: idle RSS (MiB), torch imported", [server.rss_mib(), server.imports_torch()])
        log("cache: 64-text request fresh vs repeated", asyncio.run(cache_speedup(server, args.model, texts)))
    finally:
        server.stop()

    if not args.skip_torch:
        server = Server(variants["hf"].parent, work / "hf.log")
        try:
            result = setting(server, args.model, texts, 32, 1, seconds)
            log("torch server, 32 one-text clients", summary(result))
            log("torch: ratio to raw length-sorted batch-8 limit", ratio(result, raw_hf_8))
            log("torch: texts per server CPU-second, ratio to raw batch 8", per_cpu_ratio(result, raw_hf_8))
            result = setting(server, args.model, texts, 2, 64, seconds)
            log("torch server, 2 clients x 64 texts", summary(result))
            log("torch: 64-text ratio to raw batch-1 limit", ratio(result, raw_hf_1))
        finally:
            server.stop()
    if args.out:
        args.out.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
