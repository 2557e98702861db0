"""`stats`: a per-model table from a running server's /metrics (--watch refreshes it)."""

from __future__ import annotations

import argparse
import math
import sys
import time
import urllib.error
import urllib.request
from collections import defaultdict
from dataclasses import dataclass, field

from prometheus_client.parser import text_string_to_metric_families

from .client import DEFAULT_URL

COLUMNS = ("MODEL", "VERSION", "READY", "REQUESTS", "ERRORS", "TEXTS/S", "P50 MS", "P95 MS", "P99 MS", "TRUNC %", "DRIFT PSI")


@dataclass
class ModelStats:
    ready: float = math.nan
    requests: float = 0.0
    errors: float = 0.0
    texts: float = 0.0
    truncated: float = 0.0
    buckets: dict[float, float] = field(default_factory=lambda: defaultdict(float))  # le -> cumulative count
    drift: dict[str, float] = field(default_factory=dict)


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "stats", help="per-model requests, errors, throughput, latency quantiles, truncation and drift",
        description="Read a running server's /metrics and print one row per model. Latency quantiles are "
        "since the server started; texts/s is over the last interval.",
    )
    parser.add_argument("--url", default=DEFAULT_URL, help=f"the server's HTTP address (default {DEFAULT_URL})")
    parser.add_argument("--interval", type=float, default=2.0, help="seconds between the two scrapes texts/s compares")
    parser.add_argument("--watch", action="store_true", help="refresh the table every --interval seconds until Ctrl-C")
    parser.set_defaults(func=run)


def scrape(url: str) -> dict[tuple[str, str], ModelStats]:
    with urllib.request.urlopen(f"{url.rstrip('/')}/metrics", timeout=30) as reply:
        text = reply.read().decode()
    stats: dict[tuple[str, str], ModelStats] = defaultdict(ModelStats)
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = sample.labels
            if "model" not in labels or not sample.name.startswith("predictors_"):
                continue
            entry = stats[(labels["model"], labels.get("version", ""))]
            if sample.name == "predictors_model_ready":
                entry.ready = sample.value
            elif sample.name == "predictors_requests_total":
                entry.requests += sample.value
                entry.errors += sample.value if labels["outcome"] != "success" else 0.0
            elif sample.name == "predictors_texts_total" and labels["outcome"] == "success":
                entry.texts += sample.value
            elif sample.name == "predictors_truncated_texts_total":
                entry.truncated += sample.value
            elif sample.name == "predictors_request_duration_seconds_bucket":
                entry.buckets[float(labels["le"])] += sample.value
            elif sample.name == "predictors_drift_psi":
                entry.drift[labels["signal"]] = sample.value
    return dict(stats)


def histogram_quantile(q: float, buckets: dict[float, float]) -> float:
    """Prometheus's histogram_quantile on cumulative buckets: linear within the bucket holding q."""
    bounds = sorted(buckets)
    if not bounds or buckets[bounds[-1]] == 0:
        return math.nan
    rank = q * buckets[bounds[-1]]
    lower_bound, lower_count = 0.0, 0.0
    for bound in bounds:
        count = buckets[bound]
        if count >= rank:
            if math.isinf(bound):
                return lower_bound
            return lower_bound + (bound - lower_bound) * (rank - lower_count) / max(count - lower_count, 1e-12)
        lower_bound, lower_count = bound, count
    return math.nan


def _number(value: float, digits: int = 0) -> str:
    return "-" if math.isnan(value) else f"{value:.{digits}f}"


def table(before: dict[tuple[str, str], ModelStats], after: dict[tuple[str, str], ModelStats], seconds: float) -> str:
    rows = [COLUMNS]
    for key in sorted(after):
        now, then = after[key], before.get(key, ModelStats())
        quantiles = [histogram_quantile(q, now.buckets) * 1000 for q in (0.5, 0.95, 0.99)]
        drift = max(now.drift.items(), key=lambda item: item[1]) if now.drift else None
        rows.append((
            key[0], key[1], "yes" if now.ready == 1 else "no", _number(now.requests), _number(now.errors),
            _number((now.texts - then.texts) / seconds if seconds > 0 else math.nan, 1),
            *(_number(q, 1) for q in quantiles),
            _number(100 * now.truncated / now.texts if now.texts else math.nan, 1),
            f"{drift[1]:.3f} ({drift[0]})" if drift else "-",
        ))
    widths = [max(len(str(row[i])) for row in rows) for i in range(len(COLUMNS))]
    return "\n".join("  ".join(str(cell).ljust(width) for cell, width in zip(row, widths)).rstrip() for row in rows)


def run(args: argparse.Namespace) -> int:
    try:
        before, started = scrape(args.url), time.monotonic()
        while True:
            time.sleep(args.interval)
            after, now = scrape(args.url), time.monotonic()
            output = table(before, after, now - started)
            if args.watch:
                print("\033[H\033[J" + f"{args.url}  every {args.interval:g}s  (latency since start)\n" + output, flush=True)
            else:
                print(output)
                return 0
            before, started = after, now
    except urllib.error.URLError as exc:
        print(f"error: cannot read {args.url}/metrics: {exc.reason}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0
