#!/usr/bin/env python3
"""Many models in one pod, measured (issue 20):

    python benchmarks/multi_model.py [--models-dir models] [--seconds 120] [--baseline-seconds 60] [--budget 600Mi]
                                     [--clients 4] [--hot-share 0.8] [--dwell-seconds 5] [--out docs/multi_model.json]

1. start to ready with 1, 12 and 48 lazy models (copies of the built models, files symlinked):
   process start to /v2/health/ready answering 200, three runs each, and the CPU time the server
   process used until then (on a shared machine the wall time also holds the waits for a CPU);
2. all resident: 12 models (6 copies each of review-sentiment and news-topic, int8 ONNX) on a server
   without a budget, each warmed by one request, then the workload below for --baseline-seconds:
   the hot set's p50 with every model in memory;
3. under a budget: the same 12 models, lazy, PREDICTORS_MODEL_MEMORY=--budget (about four of them
   resident), the workload for --seconds from a cold start: failed requests, the hot set's p50 and
   p99, cold-start waits (the x-model-load-wait-ms of the answers that waited for a load) and those
   answers' latency, loads and evictions, the peak RSS (sampled every 20 ms, and VmHWM) against the
   budget plus the server's own measured share;
4. from S3 (moto's standalone server, a bucket made here): two lazy models whose predictor.yaml says
   storage_uri, their first request's latency and the bytes downloaded, and their second request's.

The workload: --clients concurrent clients, each sending one-text V2 requests back to back; a
request goes to the hot set of 3 models with probability --hot-share (uniformly among them), else to
the model whose turn it is among the other 9: the turn moves to the next every --dwell-seconds (a
customer's model busy for a while, then the next one's), so over the run every model is served and
each turn starts with a cold start. The machine is shared: its load average is printed with each step.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

import aiohttp  # noqa: E402
import psutil  # noqa: E402

from tests.helpers import stop_process  # noqa: E402
from tests.s3_helpers import MotoServer, free_port, upload_folder  # noqa: E402

MiB = 1 << 20
TEXTS = [
    "Great coffee, rich and smooth. Will buy again.",
    "The bag arrived torn and the chips were stale.",
    "Shares fell as the company reported weaker profits.",
    "The striker scored twice as the club won the cup final.",
]
SOURCES = ("review-sentiment", "news-topic")
HOT = ("review-sentiment-1", "news-topic-1", "review-sentiment-2")


def load_average() -> str:
    return "load average " + " ".join(f"{x:.2f}" for x in os.getloadavg())


def link_copy(source: Path, target: Path, extra_yaml: str = "") -> None:
    """A model folder whose files are symlinks to a built one (as many copies as wanted, no disk)."""
    target.mkdir(parents=True)
    for entry in source.iterdir():
        if entry.name not in ("predictor.yaml", "model.onnx", "model.safetensors"):
            (target / entry.name).symlink_to(entry.resolve())
    settings = (source / "predictor.yaml").read_text() if (source / "predictor.yaml").is_file() else ""
    (target / "predictor.yaml").write_text(settings.rstrip("\n") + "\ncache: {enabled: false}\n" + extra_yaml)


def models_folder(root: Path, models_dir: Path, copies: int) -> list[str]:
    names = []
    for i in range(1, copies + 1):
        for source in SOURCES:
            name = f"{source}-{i}"
            link_copy(models_dir / source, root / name)
            names.append(name)
    return names


class Server:
    def __init__(self, models: Path, log: Path, env: dict[str, str]) -> None:
        self.http_port, grpc_port = free_port(), free_port()
        self.url = f"http://127.0.0.1:{self.http_port}"
        self.log = log
        self.started = time.monotonic()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "predictors", "serve", "--models-dir", str(models), "--http_port", str(self.http_port),
             "--grpc_port", str(grpc_port)],
            cwd=REPO_ROOT, stdout=log.open("w"), stderr=subprocess.STDOUT, env={**os.environ, **env})

    def wait_ready(self, timeout: float = 180) -> float:
        while time.monotonic() - self.started < timeout:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited: {self.log.read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(f"{self.url}/v2/health/ready", timeout=2) as reply:
                    if reply.status == 200:
                        return time.monotonic() - self.started
            except OSError:
                pass
            time.sleep(0.02)
        raise TimeoutError(self.log.read_text()[-3000:])

    def get(self, path: str) -> dict:
        with urllib.request.urlopen(f"{self.url}{path}", timeout=60) as reply:
            return json.loads(reply.read())

    def metrics(self) -> str:
        with urllib.request.urlopen(f"{self.url}/metrics", timeout=60) as reply:
            return reply.read().decode()

    def metric_sum(self, name: str, **labels: str) -> float:
        total = 0.0
        for line in self.metrics().splitlines():
            match = re.match(rf"^{name}\{{(.*)\}} (\S+)$", line)
            if match and all(f'{k}="{v}"' in match.group(1) for k, v in labels.items()):
                total += float(match.group(2))
        return total

    def peak_rss(self) -> int:
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
        return 0

    def stop(self) -> None:
        stop_process(self.process, timeout=60)


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q / 100 * (len(ordered) - 1))))]


@dataclass
class Outcome:
    model: str
    hot: bool
    status: int
    seconds: float
    load_wait_ms: int | None


@dataclass
class Workload:
    hot: tuple[str, ...]
    cold: list[str]
    hot_share: float
    dwell_seconds: float
    outcomes: list[Outcome] = field(default_factory=list)
    started: float = field(default_factory=time.monotonic)

    def __post_init__(self) -> None:
        self._random = random.Random(20)

    def next_model(self) -> tuple[str, bool]:
        if self._random.random() < self.hot_share:
            return self._random.choice(self.hot), True
        turn = int((time.monotonic() - self.started) / self.dwell_seconds)
        return self.cold[turn % len(self.cold)], False


async def run_workload(server: Server, workload: Workload, seconds: float, clients: int) -> None:
    workload.started = time.monotonic()
    stop = workload.started + seconds
    timeout = aiohttp.ClientTimeout(total=120)

    async def client(number: int) -> None:
        async with aiohttp.ClientSession(timeout=timeout) as session:
            turn = number
            while time.monotonic() < stop:
                model, hot = workload.next_model()
                text = TEXTS[turn % len(TEXTS)]
                turn += 1
                body = {"inputs": [{"name": "text", "datatype": "BYTES", "shape": [1], "data": [text]}]}
                started = time.perf_counter()
                try:
                    async with session.post(f"{server.url}/v2/models/{model}/infer", json=body) as reply:
                        await reply.read()
                        status, wait = reply.status, reply.headers.get("x-model-load-wait-ms")
                except (aiohttp.ClientError, asyncio.TimeoutError):
                    status, wait = 0, None
                workload.outcomes.append(Outcome(model, hot, status, time.perf_counter() - started,
                                                 int(wait) if wait else None))

    await asyncio.gather(*(client(i) for i in range(clients)))


def summarize(outcomes: list[Outcome]) -> dict:
    ok = [o for o in outcomes if o.status == 200]
    hot = [o.seconds * 1000 for o in ok if o.hot and o.load_wait_ms is None]
    cold = [o for o in ok if o.load_wait_ms is not None]
    return {
        "requests": len(outcomes),
        "failed": len(outcomes) - len(ok),
        "failed_statuses": sorted({o.status for o in outcomes if o.status != 200}),
        "hot_p50_ms": percentile(hot, 50), "hot_p99_ms": percentile(hot, 99),
        "cold_starts": len(cold),
        "cold_start_wait_p50_ms": percentile([o.load_wait_ms for o in cold], 50),
        "cold_start_wait_p99_ms": percentile([o.load_wait_ms for o in cold], 99),
        "cold_request_p50_ms": percentile([o.seconds * 1000 for o in cold], 50),
        "cold_request_p99_ms": percentile([o.seconds * 1000 for o in cold], 99),
    }


def sample_rss(pid: int, stop: threading.Event, samples: list[int]) -> None:
    process = psutil.Process(pid)
    while not stop.is_set():
        try:
            samples.append(process.memory_info().rss)
        except psutil.Error:
            return
        stop.wait(0.02)


def start_to_ready(models_dir: Path, work: Path, runs: int = 3) -> dict:
    results = {}
    for count in (1, 12, 48):
        root = work / f"ready-{count}"
        for i in range(count):
            link_copy(models_dir / SOURCES[i % 2], root / f"m{i}")
        times, cpu = [], []
        for run in range(runs):
            server = Server(root, work / f"ready-{count}-{run}.log", {"PREDICTORS_LOADING": "lazy"})
            try:
                times.append(server.wait_ready())
                used = psutil.Process(server.process.pid).cpu_times()  # what the start cost, whatever else runs
                cpu.append(used.user + used.system)
            finally:
                server.stop()
        results[count] = {"runs_s": [round(t, 2) for t in times], "median_s": round(statistics.median(times), 2),
                          "cpu_seconds_median": round(statistics.median(cpu), 2)}
        print(f"start to ready, {count} lazy models: {results[count]}  ({load_average()})", flush=True)
    return results


def all_resident(models_dir: Path, work: Path, seconds: float, clients: int, hot_share: float, dwell: float) -> dict:
    root = work / "resident"
    names = models_folder(root, models_dir, 6)
    server = Server(root, work / "resident.log", {"PREDICTORS_LOADING": "lazy"})
    try:
        server.wait_ready()
        for name in names:  # every model in memory before the clock starts
            body = json.dumps({"inputs": [{"name": "text", "datatype": "BYTES", "shape": [1], "data": [TEXTS[0]]}]}).encode()
            request = urllib.request.Request(f"{server.url}/v2/models/{name}/infer", data=body,
                                             headers={"Content-Type": "application/json"})
            urllib.request.urlopen(request, timeout=120).read()
        workload = Workload(HOT, [n for n in names if n not in HOT], hot_share, dwell)
        asyncio.run(run_workload(server, workload, seconds, clients))
        result = summarize(workload.outcomes)
        result["process_rss_mib"] = round(psutil.Process(server.process.pid).memory_info().rss / MiB)
    finally:
        server.stop()
    print(f"all 12 resident, {seconds:.0f} s: {result}  ({load_average()})", flush=True)
    return result


def under_budget(models_dir: Path, work: Path, seconds: float, clients: int, hot_share: float, dwell: float,
                 budget: str) -> dict:
    root = work / "budget"
    names = models_folder(root, models_dir, 6)
    server = Server(root, work / "budget.log", {"PREDICTORS_LOADING": "lazy", "PREDICTORS_MODEL_MEMORY": budget})
    samples: list[int] = []
    stop = threading.Event()
    try:
        ready_seconds = server.wait_ready()
        deadline = time.monotonic() + 30
        while (memory := server.get("/v2/repository/memory"))["server_overhead_bytes"] is None:
            assert time.monotonic() < deadline
            time.sleep(0.1)
        sampler = threading.Thread(target=sample_rss, args=(server.process.pid, stop, samples), daemon=True)
        sampler.start()
        resident_counts: list[int] = []

        def count_resident() -> None:
            while not stop.is_set():
                try:
                    resident_counts.append(len(server.get("/v2/repository/memory")["models"]))
                except OSError:
                    pass
                stop.wait(1.0)

        threading.Thread(target=count_resident, daemon=True).start()
        workload = Workload(HOT, [n for n in names if n not in HOT], hot_share, dwell)
        asyncio.run(run_workload(server, workload, seconds, clients))
        stop.set()
        sampler.join()
        result = summarize(workload.outcomes)
        overhead = memory["server_overhead_bytes"]
        peak = max(max(samples), server.peak_rss())
        result.update({
            "budget_mib": round(memory["budget_bytes"] / MiB), "server_overhead_mib": round(overhead / MiB),
            "peak_rss_sampled_mib": round(max(samples) / MiB), "peak_rss_vmhwm_mib": round(server.peak_rss() / MiB),
            "peak_rss_over_budget_plus_overhead_mib": round((peak - memory["budget_bytes"] - overhead) / MiB),
            "loads": server.metric_sum("predictors_model_loads_total", outcome="loaded"),
            "no_room": server.metric_sum("predictors_model_loads_total", outcome="no_room"),
            "evictions": server.metric_sum("predictors_model_evictions_total"),
            "resident_models_median": statistics.median(resident_counts) if resident_counts else None,
            "resident_models_max": max(resident_counts) if resident_counts else None,
            "ready_seconds": round(ready_seconds, 2),
        })
    finally:
        stop.set()
        server.stop()
    print(f"12 models, budget {budget}, {seconds:.0f} s: {result}  ({load_average()})", flush=True)
    return result


def from_s3(models_dir: Path, work: Path) -> dict:
    s3 = MotoServer(work / "moto.log")
    results = {}
    try:
        client = s3.client()
        client.create_bucket(Bucket="models")
        sizes = {
            "pii-ner": upload_folder(client, "models", models_dir / "pii-ner", "team/pii-ner"),
            # what a server needs of a classifier: the int8 ONNX file, not the fp32 exports beside it
            "review-sentiment": upload_folder(client, "models", models_dir / "review-sentiment", "team/review-sentiment",
                                              skip=("model.onnx", "model.safetensors", "heldout.jsonl")),
        }
        root = work / "s3-models"
        for name in sizes:
            (root / f"s3-{name}").mkdir(parents=True)
            (root / f"s3-{name}" / "predictor.yaml").write_text(f"storage_uri: s3://models/team/{name}\nloading: lazy\n")
        server = Server(root, work / "s3-server.log", {**s3.env(), "PREDICTORS_STORAGE_CACHE": str(work / "s3-cache")})
        try:
            server.wait_ready()
            for name in sizes:
                timings = []
                for _ in range(2):
                    body = json.dumps({"inputs": [{"name": "text", "datatype": "BYTES", "shape": [1],
                                                   "data": [TEXTS[0]]}]}).encode()
                    request = urllib.request.Request(f"{server.url}/v2/models/s3-{name}/infer", data=body,
                                                     headers={"Content-Type": "application/json"})
                    started = time.perf_counter()
                    urllib.request.urlopen(request, timeout=300).read()
                    timings.append(time.perf_counter() - started)
                download = server.get(f"/v2/models/s3-{name}/config")["download"]
                results[name] = {"uploaded_bytes": sizes[name], "downloaded_bytes": download["bytes"],
                                 "files": download["files"], "download_s": download["seconds"],
                                 "download_with_process_start_s": download["wall_seconds"],
                                 "first_request_s": round(timings[0], 2), "second_request_ms": round(timings[1] * 1000, 1)}
                print(f"from S3, {name}: {results[name]}  ({load_average()})", flush=True)
        finally:
            server.stop()
    finally:
        s3.stop()
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models-dir", type=Path, default=REPO_ROOT / "models")
    parser.add_argument("--seconds", type=float, default=120)
    parser.add_argument("--baseline-seconds", type=float, default=60)
    parser.add_argument("--budget", default="600Mi")
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--hot-share", type=float, default=0.8)
    parser.add_argument("--dwell-seconds", type=float, default=5.0)
    parser.add_argument("--skip", nargs="*", default=[], choices=["ready", "resident", "budget", "s3"])
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    for source in (*SOURCES, "pii-ner"):
        if not (args.models_dir / source / "config.json").is_file():
            print(f"error: {args.models_dir / source} is not built; run `make models`", file=sys.stderr)
            return 2
    report: dict = {"machine": f"{os.cpu_count()} CPUs, shared with other work ({load_average()} at start)",
                    "command": " ".join(sys.argv)}
    with tempfile.TemporaryDirectory(prefix="multi-model-") as tmp:
        work = Path(tmp)
        if "ready" not in args.skip:
            report["start_to_ready"] = start_to_ready(args.models_dir, work)
        if "resident" not in args.skip:
            report["all_resident"] = all_resident(args.models_dir, work, args.baseline_seconds, args.clients, args.hot_share,
                                                  args.dwell_seconds)
        if "budget" not in args.skip:
            report["under_budget"] = under_budget(args.models_dir, work, args.seconds, args.clients, args.hot_share,
                                                  args.dwell_seconds, args.budget)
        if "resident" not in args.skip and "budget" not in args.skip:
            base, budget = report["all_resident"]["hot_p50_ms"], report["under_budget"]["hot_p50_ms"]
            report["hot_p50_ratio"] = round(budget / base, 2) if base and budget else None
            print(f"hot-set p50: {budget:.1f} ms under the budget vs {base:.1f} ms all resident: "
                  f"{report['hot_p50_ratio']}x", flush=True)
        if "s3" not in args.skip:
            report["from_s3"] = from_s3(args.models_dir, work)
    if args.out:
        args.out.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
