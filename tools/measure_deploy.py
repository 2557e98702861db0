#!/usr/bin/env python3
"""Measure what the manifests are sized from: per model, in container mode, the time from process
start to ready and the peak resident memory under load.

    python tools/measure_deploy.py                  # every model, prints a table
    python tools/measure_deploy.py --only pii-ner --write   # and records it in its predictor.yaml

Each model runs exactly as its pod would (the rendered runtime container: `python -m predictors
--model_name NAME --model_dir /mnt/models ...` with the model's thread env and cpu limit), with
/mnt/models mapped to models/<name> and the ports mapped to free local ones. Load: several clients
at once sending batches of long texts (truncated at the model's max_length, so every chunk is as
large as it gets), then one request of max_batch short texts. RSS is sampled every 20 ms with psutil.

--write replaces only the `deploy:` section's measured keys (startup_seconds, peak_rss_mib,
measured) in models/<name>/predictor.yaml; re-render the manifests afterwards.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from datetime import date
from pathlib import Path
from typing import Any

import psutil

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from predictors.deploy.merge import local_command, local_port_map, merge_runtime_container, resolve_env  # noqa: E402
from predictors.deploy.render import render_runtime, thread_env  # noqa: E402
from predictors.deploy.runtime import HTTP_PORT  # noqa: E402
from predictors.deploy.settings_file import PREDICTOR_FILE_COMMENT, update_deploy_section  # noqa: E402
from predictors.deploy.sizing import cpu_for, memory_for, startup_budget_for  # noqa: E402
from predictors.model import ModelConfig  # noqa: E402
from predictors.backends import discover_models  # noqa: E402

WORDS = (
    "the quarterly report shows revenue growth across every region while costs stayed flat and "
    "analysts expect the company to raise guidance after a strong season of product launches in "
    "europe and asia customers praised the battery life but some complained about shipping delays "
    "and the support line was slow to answer questions about refunds warranties and replacements"
).split()


def long_texts(count: int, words: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(words)).capitalize() + "." for _ in range(count)]


def http(url: str, body: dict | None = None, timeout: float = 600) -> tuple[int, bytes]:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as reply:
            return reply.status, reply.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()
    except OSError:
        return 0, b""


def infer_body(texts: list[str]) -> dict[str, Any]:
    return {"inputs": [{"name": "text", "datatype": "BYTES", "shape": [len(texts)], "data": texts}]}


def pod_container(config: ModelConfig) -> dict[str, Any]:
    """The model's kserve-container as rendered (runtime + thread env + cpu limit), placeholders replaced."""
    cpu = str(cpu_for(config))
    model = {"env": thread_env(), "resources": {"requests": {"cpu": cpu}, "limits": {"cpu": cpu}}}
    return merge_runtime_container(render_runtime(), model, {"name": config.name})


class RssSampler(threading.Thread):
    def __init__(self, pid: int, interval: float = 0.02) -> None:
        super().__init__(daemon=True)
        self.process = psutil.Process(pid)
        self.interval = interval
        self.peak = 0
        self.last = 0
        self._halt = threading.Event()

    def sample(self) -> int:
        try:
            processes = [self.process, *self.process.children(recursive=True)]
            return sum(p.memory_info().rss for p in processes)
        except psutil.Error:
            return 0

    def run(self) -> None:
        while not self._halt.is_set():
            self.last = self.sample()
            self.peak = max(self.peak, self.last)
            time.sleep(self.interval)

    def stop(self) -> None:
        self._halt.set()
        self.join()


def measure(config: ModelConfig, clients: int, requests: int, batch: int, words: int,
            big_request: bool, log_dir: Path) -> dict[str, Any]:
    container = pod_container(config)
    ports = local_port_map(container)
    argv = local_command(container, config.path, ports)
    env = {k: os.environ[k] for k in ("PATH", "HOME", "LANG", "TMPDIR", "PYTHONPATH") if k in os.environ}
    env.update({"PYTHONUNBUFFERED": "1", "PYTHONDONTWRITEBYTECODE": "1"})
    env.update(resolve_env(container, pod_name=f"{config.name}-measure"))
    url = f"http://127.0.0.1:{ports[HTTP_PORT]}"
    log = log_dir / f"{config.name}.log"
    started = time.monotonic()
    with log.open("w") as handle:
        process = subprocess.Popen(argv, cwd=log_dir, env=env, stdout=handle, stderr=subprocess.STDOUT)
    try:
        sampler = RssSampler(process.pid)
        sampler.start()
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"{config.name}: server exited with {process.returncode}; see {log}")
            if http(f"{url}/v2/models/{config.name}/ready", timeout=2)[0] == 200:
                break
            if time.monotonic() - started > 600:
                raise TimeoutError(f"{config.name}: not ready after 600 s; see {log}")
            time.sleep(0.1)
        startup = time.monotonic() - started
        idle_rss = sampler.sample()
        infer = f"{url}/v2/models/{config.name}/infer"
        bodies = [infer_body(long_texts(batch, words, seed=i)) for i in range(clients * requests)]
        load_started = time.monotonic()

        def client(index: int) -> int:
            texts = 0
            for body in bodies[index::clients]:
                status, reply = http(infer, body)
                if status != 200:
                    raise RuntimeError(f"{config.name}: inference answered {status}: {reply[:300]!r}")
                texts += len(body["inputs"][0]["data"])
            return texts

        with ThreadPoolExecutor(clients) as pool:
            total_texts = sum(pool.map(client, range(clients)))
        load_seconds = time.monotonic() - load_started
        if big_request:
            count = min(config.max_batch, 1024)
            # many short texts: the request and response bodies at their largest, not the compute
            status, reply = http(infer, infer_body(long_texts(count, 12, seed=999)))
            if status != 200:
                raise RuntimeError(f"{config.name}: max_batch request answered {status}: {reply[:300]!r}")
            total_texts += count
        time.sleep(0.1)
        sampler.stop()
        return {
            "model": config.name,
            "startup_seconds": round(startup, 2),
            "idle_rss_mib": round(idle_rss / 2**20, 1),
            "peak_rss_mib": round(sampler.peak / 2**20, 1),
            "texts": total_texts,
            "texts_per_second": round(clients * requests * batch / load_seconds, 1),
            "workers_env": env.get("PREDICTORS_WORKERS"),
        }
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models-dir", default=str(ROOT / "models"))
    parser.add_argument("--only", nargs="*", help="model names (default: every model)")
    parser.add_argument("--clients", type=int, default=4, help="concurrent clients during the load")
    parser.add_argument("--requests", type=int, default=2, help="requests per client")
    parser.add_argument("--batch", type=int, default=32, help="texts per request")
    parser.add_argument("--words", type=int, default=400, help="words per text (long: truncated at max_length)")
    parser.add_argument("--no-big-request", action="store_true", help="skip the final max_batch request")
    parser.add_argument("--repeat", type=int, default=1, help="runs per model; the worst of them is kept")
    parser.add_argument("--write", action="store_true", help="record the numbers in each model's deploy: section")
    parser.add_argument("--json", action="store_true", help="print the measurements as JSON")
    args = parser.parse_args(argv)

    configs, errors = discover_models(args.models_dir)
    for name, message in errors.items():
        print(f"warning: skipping {name}: {message}", file=sys.stderr)
    if args.only:
        unknown = set(args.only) - {c.name for c in configs}
        if unknown:
            print(f"error: no model(s) {sorted(unknown)} in {args.models_dir}", file=sys.stderr)
            return 2
        configs = [c for c in configs if c.name in args.only]
    results = []
    with tempfile.TemporaryDirectory(prefix="measure-deploy-") as tmp:
        for config in configs:
            runs = [
                measure(config, args.clients, args.requests, args.batch, args.words, not args.no_big_request, Path(tmp))
                for _ in range(max(1, args.repeat))
            ]
            worst = dict(runs[0])
            worst["startup_seconds"] = max(r["startup_seconds"] for r in runs)
            worst["peak_rss_mib"] = max(r["peak_rss_mib"] for r in runs)
            results.append(worst)
            print(f"measured {config.name}: {worst}", file=sys.stderr, flush=True)
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        header = ("MODEL", "STARTUP_S", "BUDGET_S", "IDLE_MIB", "PEAK_MIB", "MEM_REQ", "MEM_LIM", "TEXTS/S")
        rows = [header]
        for r in results:
            request, limit = memory_for(r["peak_rss_mib"])
            rows.append((r["model"], f"{r['startup_seconds']:.1f}", str(startup_budget_for(r["startup_seconds"])),
                         f"{r['idle_rss_mib']:.0f}", f"{r['peak_rss_mib']:.0f}", request, limit,
                         f"{r['texts_per_second']:.0f}"))
        widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
        for row in rows:
            print("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip())
    if args.write:
        cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
        for r in results:
            path = Path(args.models_dir) / r["model"] / "predictor.yaml"
            update_deploy_section(
                path,
                {
                    "startup_seconds": round(r["startup_seconds"], 1),
                    "peak_rss_mib": int(math.ceil(r["peak_rss_mib"])),
                    "measured": f"{date.today().isoformat()}, {cpus} CPUs, {args.clients}x{args.requests} requests "
                                f"of {args.batch} texts + 1 max_batch request",
                },
                comment=PREDICTOR_FILE_COMMENT,
            )
            print(f"wrote the deploy section of {path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
