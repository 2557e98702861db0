#!/usr/bin/env python3
"""Latency when lightly loaded, against the raw model in the same run, with adaptive intra-op
threads on and off.

    .venv/bin/python benchmarks/light_load.py [--model review-sentiment] [--seconds 10] [--rounds 2] \
        [--plot docs/light_load.png] [--json out.json]

Texts: the model's held-out texts of at most 128 tokens, response cache off (the model folder is
linked with `cache: {enabled: false}`), so every request is computed.
1. Raw: one text at a time through the serving pipeline (tokenize, backend, head) in this process,
   on a two-thread session and on a one-thread session: per-text p50 / p99 over the same texts.
2. A server with PREDICTORS_ADAPTIVE_THREADS=auto and one with `off`, alternating (auto, off, auto,
   off, ... `--rounds` times): one-text clients at 1, 2, 4, 8, 16 and 32, and 2 clients of 64-text
   requests. Printed per setting: texts/s, p50 / p99 ms, and the server's own `runs_on_all_cpus` and
   `runs_on_one_cpu` counters, so the rule's choice is visible beside its effect. Each server first
   answers a few 3-text requests (both workers busy at once, as in real traffic), and the `auto`
   server then traces 300 lone requests: the median of each `Server-Timing` stage beside the
   latency the client saw.
The machine is shared: the load average is printed with each line.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT / "benchmarks"))
sys.path.insert(0, str(REPO_ROOT))

CLIENTS = (1, 2, 4, 8, 16, 32)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models-dir", type=Path, default=REPO_ROOT / "models")
    parser.add_argument("--model", default="review-sentiment")
    parser.add_argument("--seconds", type=float, default=10.0, help="seconds per setting")
    parser.add_argument("--rounds", type=int, default=2, help="alternating auto/off rounds")
    parser.add_argument("--plot", type=Path, help="latency and throughput against clients (PNG)")
    parser.add_argument("--json", type=Path, help="all numbers as JSON")
    return parser.parse_args()


ARGS = parse_args()
sys.argv = sys.argv[:1]  # kserve parses sys.argv when imported

from serving_load import Server, setting, short_texts  # noqa: E402

from predictors.backends import load_model_config  # noqa: E402
from predictors.serving.predictor import TextPredictor  # noqa: E402
from tests.helpers import linked_model_folder  # noqa: E402


def say(line: str) -> None:
    print(f"[load {os.getloadavg()[0]:.1f}] {line}", flush=True)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q / 100 * len(ordered)))]


def raw_latency(folder: Path, texts: list[str], threads: int, seconds: float) -> dict[str, float]:
    """One text per run, one after another, on a session of `threads` intra-op threads."""
    predictor = TextPredictor(load_model_config(folder), thread_counts=(threads,))
    predictor.load()
    for text in texts[:20]:
        predictor.run_batch([text], threads=threads)
    latencies: list[float] = []
    stop_at = time.monotonic() + seconds
    index = 0
    while time.monotonic() < stop_at:
        started = time.perf_counter()
        predictor.run_batch([texts[index % len(texts)]], threads=threads)
        latencies.append((time.perf_counter() - started) * 1000)
        index += 1
    predictor.stop()
    return {"p50_ms": round(percentile(latencies, 50), 2), "p99_ms": round(percentile(latencies, 99), 2),
            "texts_per_s": round(len(latencies) / seconds, 1)}


def thread_counters(server: Server, model: str) -> tuple[int, int]:
    scheduler = server.config(model).get("scheduler", {})
    return int(scheduler.get("runs_on_all_cpus", 0)), int(scheduler.get("runs_on_one_cpu", 0))


def trace_one_client(server: Server, model: str, texts: list[str], requests: int = 300) -> dict[str, float]:
    """Where a lone request's time goes: the server's own Server-Timing stages (median over
    `requests` one-text requests sent one after another on one keep-alive connection) beside the
    latency the client saw; `outside` = client latency - server total (the client, the kernel's
    loopback and the HTTP parse before the server's clock starts)."""
    import http.client
    import urllib.parse

    address = urllib.parse.urlsplit(server.url)
    connection = http.client.HTTPConnection(address.hostname, address.port, timeout=30)
    stages: dict[str, list[float]] = {}
    for index in range(requests):
        text = texts[index % len(texts)]
        body = json.dumps({"inputs": [{"name": "text", "datatype": "BYTES", "shape": [1], "data": [text]}]})
        started = time.perf_counter()
        connection.request("POST", f"/v2/models/{model}/infer", body, {"Content-Type": "application/json"})
        reply = connection.getresponse()
        reply.read()
        stages.setdefault("client", []).append((time.perf_counter() - started) * 1000)
        for part in (reply.getheader("Server-Timing") or "").split(","):
            name, _, rest = part.strip().partition(";dur=")
            if rest:
                stages.setdefault(name, []).append(float(rest.split(";")[0]))
    connection.close()
    medians = {name: round(statistics.median(values), 2) for name, values in stages.items()}
    medians["outside"] = round(medians["client"] - medians.get("total", 0.0), 2)
    return medians


def serve_round(models: Path, model: str, adaptive: str, texts: list[str], seconds: float, work: Path) -> list[dict]:
    server = Server(models, work / f"server-{adaptive}-{time.monotonic():.0f}.log", {"PREDICTORS_ADAPTIVE_THREADS": adaptive})
    rows: list[dict] = []
    try:
        setting(server, model, texts, 1, 1, 2.0)  # warm-up: sessions, caches, connection
        setting(server, model, texts[-3:], 1, 3, 1.0)  # a few many-text runs first, as real traffic has
        if adaptive == "auto":
            trace = trace_one_client(server, model, texts)
            rows.append({"adaptive": adaptive, "trace_ms": trace})
            say(f"one client, one request at a time, median ms: {trace}")
        for clients, per_request in [(c, 1) for c in CLIENTS] + [(2, 64)]:
            wide_before, narrow_before = thread_counters(server, model)
            result = setting(server, model, texts, clients, per_request, seconds).row()
            wide_after, narrow_after = thread_counters(server, model)
            row = {"adaptive": adaptive, "clients": clients, "texts_per_request": per_request,
                   "texts_per_s": result["texts_per_s"], "p50_ms": result["p50_ms"], "p99_ms": result["p99_ms"],
                   "errors": result["errors"], "runs_on_all_cpus": wide_after - wide_before,
                   "runs_on_one_cpu": narrow_after - narrow_before}
            rows.append(row)
            say(f"adaptive={adaptive:4s} {clients:2d} clients x {per_request:2d} texts: {row['texts_per_s']:6.1f} texts/s, "
                f"p50 {row['p50_ms']:6.1f} ms, p99 {row['p99_ms']:6.1f} ms, runs wide/narrow "
                f"{row['runs_on_all_cpus']}/{row['runs_on_one_cpu']}, errors {row['errors'] or 0}")
    finally:
        server.stop()
    return rows


def plot(rows: list[dict], raw: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (latency, throughput) = plt.subplots(1, 2, figsize=(11, 4))
    for adaptive, style in (("auto", "-o"), ("off", "--s")):
        for q in ("p50_ms", "p99_ms"):
            points = [(c, statistics.median(r[q] for r in rows if r["adaptive"] == adaptive and r.get("clients") == c
                                            and r["texts_per_request"] == 1)) for c in CLIENTS]
            latency.plot(*zip(*points), style, label=f"{q[:3]} adaptive {adaptive}")
        points = [(c, statistics.median(r["texts_per_s"] for r in rows if r["adaptive"] == adaptive and r.get("clients") == c
                                        and r["texts_per_request"] == 1)) for c in CLIENTS]
        throughput.plot(*zip(*points), style, label=f"adaptive {adaptive}")
    latency.axhline(raw["two_threads"]["p50_ms"], color="grey", linestyle=":", label="raw p50, 2 threads")
    for axis in (latency, throughput):
        axis.set_xscale("log", base=2)
        axis.set_xticks(CLIENTS, [str(c) for c in CLIENTS])
        axis.set_xlabel("concurrent one-text clients")
        axis.legend(fontsize=7)
    latency.set_yscale("log")
    latency.set_ylabel("latency (ms)")
    throughput.set_ylabel("texts/s")
    figure.suptitle(f"{ARGS.model}: latency and throughput against clients (response cache off)")
    figure.tight_layout()
    figure.savefig(path, dpi=100)


def main() -> int:
    work = Path(tempfile.mkdtemp(prefix="light-load-"))
    models = work / "models"
    linked_model_folder(ARGS.models_dir / ARGS.model, models / ARGS.model, "cache: {enabled: false}\n")
    texts = short_texts(models / ARGS.model, None)
    say(f"{len(texts)} held-out texts of at most 128 tokens")
    raw = {"two_threads": raw_latency(models / ARGS.model, texts, 2, ARGS.seconds),
           "one_thread": raw_latency(models / ARGS.model, texts, 1, ARGS.seconds)}
    say(f"raw one text per run: 2 threads {raw['two_threads']}, 1 thread {raw['one_thread']}")
    rows: list[dict] = []
    for _ in range(ARGS.rounds):
        for adaptive in ("auto", "off"):
            rows += serve_round(models, ARGS.model, adaptive, texts, ARGS.seconds, work)
    print("\nmedian of rounds | texts/s | p50 ms | p99 ms | p50 / raw 2-thread p50 | p99 / raw 2-thread p99")
    for adaptive in ("auto", "off"):
        for clients, per_request in [(c, 1) for c in CLIENTS] + [(2, 64)]:
            mine = [r for r in rows if r["adaptive"] == adaptive and r.get("clients") == clients
                    and r["texts_per_request"] == per_request]
            p50 = statistics.median(r["p50_ms"] for r in mine)
            p99 = statistics.median(r["p99_ms"] for r in mine)
            print(f"{adaptive:4s} {clients:2d} x {per_request:2d} | {statistics.median(r['texts_per_s'] for r in mine):6.1f} | "
                  f"{p50:6.1f} | {p99:6.1f} | {p50 / raw['two_threads']['p50_ms']:.2f}x | {p99 / raw['two_threads']['p99_ms']:.2f}x")
    if ARGS.plot:
        plot(rows, raw, ARGS.plot)
        print(f"plot: {ARGS.plot}")
    if ARGS.json:
        ARGS.json.write_text(json.dumps({"raw": raw, "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
