"""`python -m predictors benchmark MODEL`: a load generator against a running server.

For each (concurrency, texts per request) setting, `concurrency` asyncio clients send V2 JSON
requests (`--api openai`: OpenAI embeddings requests) back to back for `--duration` seconds.
Printed per setting: texts/s, requests/s, latency
p50/p95/p99/max and errors by HTTP status; then sizing advice for the manifests (replicas for a
target requests/s within a p99 budget, cpu and memory per replica from the server's own
process_cpu_seconds_total and process_resident_memory_bytes). `--plot` draws latency and
throughput against concurrency.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import math
import re
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from .client import DEFAULT_URL
from .http_load import REQUEST_FAILURES, KeepAliveConnection

SAMPLE_TEXTS = (
    "Great coffee, rich and smooth. Will buy again.",
    "The bag arrived torn and the chips were stale.",
    "Shipping was quick but the flavour is bland and a little bitter; I expected more for the price.",
    "My dog loves these treats and they did not upset his stomach at all.",
    "Not worth it.",
    "The government announced new spending plans for schools and hospitals on Tuesday.",
    "The striker scored twice in the second half to win the cup final.",
    "The new phone has a faster chip, a brighter screen and a battery that lasts two days.",
)


@dataclass
class SettingResult:
    concurrency: int
    texts_per_request: int
    seconds: float
    latencies: list[float] = field(default_factory=list)  # seconds, successful requests
    errors: dict[str, int] = field(default_factory=dict)  # HTTP status (or "connection") -> count
    cpu_cores: float | None = None  # server CPU seconds per wall second during the setting
    peak_rss_mib: float | None = None

    @property
    def requests_per_second(self) -> float:
        return len(self.latencies) / self.seconds

    @property
    def texts_per_second(self) -> float:
        return self.requests_per_second * self.texts_per_request

    def percentile(self, q: float) -> float | None:
        if not self.latencies:
            return None
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, max(0, math.ceil(q / 100 * len(ordered)) - 1))]

    def row(self) -> dict[str, Any]:
        ms = {f"p{q}_ms": _ms(self.percentile(q)) for q in (50, 95, 99)}
        return {
            "concurrency": self.concurrency, "texts_per_request": self.texts_per_request,
            "requests": len(self.latencies), "requests_per_s": round(self.requests_per_second, 1),
            "texts_per_s": round(self.texts_per_second, 1), **ms,
            "max_ms": _ms(max(self.latencies) if self.latencies else None),
            "errors": dict(self.errors), "server_cpu_cores": self.cpu_cores, "server_peak_rss_mib": self.peak_rss_mib,
        }


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 1)


def read_texts(path: Path | None, model: str, models_dir: Path) -> list[str]:
    """Texts from --texts (one per line, or JSON lines with a "text" key), else the model's held-out
    texts when its folder is here, else a small built-in sample."""
    if path is None:
        heldout = models_dir / model / "heldout.jsonl"
        if not heldout.is_file():
            return list(SAMPLE_TEXTS)
        path = heldout
    texts = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        if line.lstrip().startswith("{"):
            line = json.loads(line).get("text", "")
        texts.append(line)
    if not texts:
        raise SystemExit(f"error: {path} holds no texts")
    return texts


def parse_counts(value: str) -> list[int]:
    try:
        counts = [int(part) for part in value.split(",") if part.strip()]
    except ValueError:
        counts = []
    if not counts or min(counts) < 1:
        raise argparse.ArgumentTypeError(f"expected comma-separated positive integers such as 1,8,32, got {value!r}")
    return counts


class TextSource:
    """Round-robin over the texts; with cache_bust every text sent is unique."""

    def __init__(self, texts: list[str], cache_bust: bool) -> None:
        self._texts = itertools.cycle(texts)
        self._serial = itertools.count()
        self.cache_bust = cache_bust

    def take(self, count: int) -> list[str]:
        batch = [next(self._texts) for _ in range(count)]
        if self.cache_bust:
            batch = [f"{text} (#{next(self._serial)})" for text in batch]
        return batch


async def _server_process_stats(connection: KeepAliveConnection) -> tuple[float, float] | None:
    """(process CPU seconds, resident MiB) from the server's /metrics, when it exposes them."""
    try:
        _, body = await connection.get("/metrics")
    except REQUEST_FAILURES:
        return None
    text = body.decode("utf-8", "replace")
    cpu = re.search(r"^process_cpu_seconds_total (\S+)$", text, re.M)
    rss = re.search(r"^process_resident_memory_bytes (\S+)$", text, re.M)
    if not (cpu and rss):
        return None
    return float(cpu.group(1)), float(rss.group(1)) / 2**20


#: The APIs the load generator can speak: the path of a model's requests and the body of some texts.
APIS = {
    "v2": (lambda model: f"/v2/models/{model}/infer",
           lambda model, texts: {"inputs": [{"name": "text", "datatype": "BYTES", "shape": [len(texts)], "data": texts}]}),
    "openai": (lambda model: "/openai/v1/embeddings", lambda model, texts: {"model": model, "input": texts}),
}


async def run_setting(
    url: str, model: str, source: TextSource, concurrency: int, texts_per_request: int, duration: float,
    timeout: float = 120.0, progress: Any = None, api: str = "v2",
) -> SettingResult:
    """`concurrency` clients sending requests back to back for `duration` seconds, each on its own
    keep-alive connection (http_load: the generator shares the machine with the server it measures,
    so it spends as little CPU per request as it can), over the V2 or the OpenAI embeddings API."""
    result = SettingResult(concurrency, texts_per_request, duration)
    peak_rss = 0.0
    stop_at = time.monotonic() + duration
    route, make_body = APIS[api]
    path = route(model)

    async def client() -> None:
        connection = KeepAliveConnection(url, timeout)
        head = connection.post_head(path)
        try:
            while time.monotonic() < stop_at:
                texts = source.take(texts_per_request)
                body = orjson.dumps(make_body(model, texts))
                started = time.perf_counter()
                try:
                    status, _ = await connection.post(head, body)
                except REQUEST_FAILURES:
                    status = "connection"
                if status == 200:
                    result.latencies.append(time.perf_counter() - started)
                else:
                    result.errors[str(status)] = result.errors.get(str(status), 0) + 1
                    if status == 429:
                        await asyncio.sleep(0.05)  # a refused client backs off briefly, as a real one would
        finally:
            connection.close()

    async def watch() -> None:
        nonlocal peak_rss
        while time.monotonic() < stop_at:
            stats = await _server_process_stats(metrics)
            if stats:
                peak_rss = max(peak_rss, stats[1])
            if progress is not None:
                progress.update(1)
            await asyncio.sleep(1.0)

    metrics = KeepAliveConnection(url, timeout)
    try:
        before = await _server_process_stats(metrics)
        started = time.monotonic()
        await asyncio.gather(watch(), *(client() for _ in range(concurrency)))
        result.seconds = time.monotonic() - started
        after = await _server_process_stats(metrics)
    finally:
        metrics.close()
    if before and after:
        result.cpu_cores = round((after[0] - before[0]) / result.seconds, 2)
        result.peak_rss_mib = round(max(peak_rss, after[1]), 1)
    return result


def sizing_advice(results: list[SettingResult], target_rps: float | None, p99_budget_ms: float) -> list[str]:
    """Per texts-per-request: the setting with most requests/s within the p99 budget, the replicas a
    target needs at that rate, and cpu / memory per replica from what the server used."""
    lines = []
    for texts in sorted({r.texts_per_request for r in results}):
        fitting = [
            r for r in results
            if r.texts_per_request == texts and r.latencies and not r.errors and r.percentile(99) * 1000 <= p99_budget_ms
        ]
        if not fitting:
            lines.append(f"{texts} text(s)/request: no setting kept p99 within {p99_budget_ms:.0f} ms without errors; "
                         "lower the concurrency per replica or raise the budget")
            continue
        best = max(fitting, key=lambda r: r.requests_per_second)
        line = (f"{texts} text(s)/request: one replica serves {best.requests_per_second:.1f} requests/s "
                f"({best.texts_per_second:.0f} texts/s) at p99 {best.percentile(99) * 1000:.0f} ms "
                f"with {best.concurrency} concurrent clients")
        if target_rps:
            line += f"; {target_rps:g} requests/s needs {math.ceil(target_rps / best.requests_per_second)} replica(s)"
        if best.cpu_cores is not None and best.peak_rss_mib is not None:
            memory = math.ceil(best.peak_rss_mib * 1.25 / 64) * 64  # 25% headroom, in 64 MiB steps
            line += (f"; per replica: cpu {max(1, math.ceil(best.cpu_cores))} (used {best.cpu_cores:.2f} cores), "
                     f"memory {memory}Mi (peak RSS {best.peak_rss_mib:.0f} MiB + 25%)")
        lines.append(line)
    return lines


def plot(results: list[SettingResult], path: Path, model: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    figure, (throughput, latency) = plt.subplots(1, 2, figsize=(11, 4.2))
    for texts in sorted({r.texts_per_request for r in results}):
        rows = sorted((r for r in results if r.texts_per_request == texts), key=lambda r: r.concurrency)
        x = [r.concurrency for r in rows]
        throughput.plot(x, [r.texts_per_second for r in rows], marker="o", label=f"{texts} text(s)/request")
        for q, style in ((50, "-"), (99, "--")):
            latency.plot(x, [(r.percentile(q) or 0) * 1000 for r in rows], style, marker="o", label=f"p{q}, {texts} text(s)/request")
    throughput.set(xlabel="concurrent clients", ylabel="texts/s", title=f"{model}: throughput", xscale="log", ylim=(0, None))
    latency.set(xlabel="concurrent clients", ylabel="latency (ms)", title=f"{model}: latency", xscale="log", yscale="log")
    clients = sorted({r.concurrency for r in results})
    for axes in (throughput, latency):
        axes.set_xticks(clients, [str(c) for c in clients])
        axes.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        axes.grid(True, alpha=0.3)
        axes.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, format="png", dpi=110)
    plt.close(figure)


def format_table(results: list[SettingResult]) -> str:
    header = "| clients | texts/req | requests | req/s | texts/s | p50 ms | p95 ms | p99 ms | max ms | errors |"
    lines = [header, "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    for r in results:
        row = r.row()
        errors = ", ".join(f"{status}: {n}" for status, n in sorted(r.errors.items())) or "-"
        lines.append(
            f"| {r.concurrency} | {r.texts_per_request} | {row['requests']} | {row['requests_per_s']} | {row['texts_per_s']} "
            f"| {row['p50_ms']} | {row['p95_ms']} | {row['p99_ms']} | {row['max_ms']} | {errors} |"
        )
    return "\n".join(lines)


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "benchmark", help="load-test a model on a running server and print sizing advice",
        description="Send concurrent V2 requests to a running server for each (concurrency, texts per request) "
        "setting; print throughput, latency percentiles, errors by status and sizing advice.",
    )
    parser.add_argument("model")
    parser.add_argument("--url", default=DEFAULT_URL, help="server base URL (default: %(default)s)")
    parser.add_argument("--concurrency", type=parse_counts, default=[1, 8, 32], help="concurrent clients, e.g. 1,8,32")
    parser.add_argument("--texts-per-request", type=parse_counts, default=[1, 64], help="texts per request, e.g. 1,64")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per setting (default: %(default)s)")
    parser.add_argument("--texts", type=Path, help="texts to send: one per line, or JSON lines with a \"text\" key")
    parser.add_argument("--models-dir", type=Path, default=Path("models"),
                        help="where the model's held-out texts are looked for when --texts is not given")
    parser.add_argument("--cache-bust", action="store_true", help="make every text sent unique (no cache hits)")
    parser.add_argument("--api", choices=sorted(APIS), default="v2",
                        help="v2: V2 JSON infer requests; openai: POST /openai/v1/embeddings (embedding models)")
    parser.add_argument("--plot", type=Path, metavar="OUT.png", help="draw latency and throughput against concurrency")
    parser.add_argument("--target-rps", type=float, help="requests/s the deployment must serve (for the replica count)")
    parser.add_argument("--p99-budget-ms", type=float, default=1000.0, help="latency budget for sizing (default: %(default)s)")
    parser.add_argument("--json", type=Path, metavar="OUT.json", help="also write the per-setting numbers as JSON")
    parser.set_defaults(func=benchmark)


def benchmark(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    if args.duration <= 0:
        print("error: --duration must be positive", file=sys.stderr)
        return 2
    url = args.url.rstrip("/")
    try:
        KeepAliveConnection(url)
    except ValueError as exc:
        print(f"error: --url: {exc}", file=sys.stderr)
        return 2
    source = TextSource(read_texts(args.texts, args.model, args.models_dir), args.cache_bust)
    settings = [(c, t) for t in args.texts_per_request for c in args.concurrency]
    results: list[SettingResult] = []
    with tqdm(total=len(settings) * math.ceil(args.duration), unit="s", desc=f"benchmark {args.model}",
              bar_format="{desc}: {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} s [{elapsed}<{remaining}{postfix}]", file=sys.stderr) as bar:
        for concurrency, texts in settings:
            bar.set_postfix_str(f"{concurrency} clients x {texts} text(s)")
            result = asyncio.run(run_setting(url, args.model, source, concurrency, texts, args.duration, progress=bar,
                                             api=args.api))
            if not result.latencies and set(result.errors) == {"connection"}:
                bar.close()
                print(f"error: cannot reach {url} (every request failed to connect)", file=sys.stderr)
                return 1
            results.append(result)
    print(format_table(results))
    print()
    print(f"Sizing (p99 budget {args.p99_budget_ms:.0f} ms):")
    for line in sizing_advice(results, args.target_rps, args.p99_budget_ms):
        print(f"- {line}")
    if args.plot:
        plot(results, args.plot, args.model)
        print(f"\nplot written to {args.plot}")
    if args.json:
        args.json.write_text(json.dumps([r.row() for r in results], indent=2))
    return 0
