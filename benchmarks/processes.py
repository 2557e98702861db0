#!/usr/bin/env python3
"""One server process with a worker thread per CPU against one process per CPU (what `serve --workers N`
would mean), on the same model, clients and texts.

    .venv/bin/python benchmarks/processes.py --models-dir models --model review-sentiment --clients 32 --seconds 15

Setting A: one `python -m predictors serve` (PREDICTORS_WORKERS = the CPUs, the default).
Setting B: N processes on N ports, each PREDICTORS_WORKERS=1 and PREDICTORS_ADAPTIVE_THREADS=off (so each
keeps to one CPU's worth of threads, as N uvicorn workers sharing a socket would have to), with the
clients split evenly between them.

Each setting is driven by `python -m predictors benchmark` (one load generator per server in B),
runs twice, alternating A B A B, and the table shows texts/s, p50/p99 latency and the servers'
summed resident memory. The response cache is off (--cache-bust). Run it on an otherwise idle machine.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import psutil

REPO_ROOT = Path(__file__).resolve().parents[1]


def rss_mib(servers: list) -> float:
    return sum(psutil.Process(server.process.pid).memory_info().rss for server in servers) / 2**20


def drive(urls: list[str], model: str, clients: int, seconds: float, models_dir: Path, work: Path) -> dict:
    """One load generator per server, all at once; the summed throughput and the worst percentiles."""
    share = clients // len(urls)
    runs = []
    for index, url in enumerate(urls):
        out = work / f"bench-{index}.json"
        runs.append((out, subprocess.Popen(
            [sys.executable, "-m", "predictors", "benchmark", model, "--url", url, "--concurrency", str(share),
             "--texts-per-request", "1", "--duration", str(seconds), "--models-dir", str(models_dir), "--cache-bust",
             "--json", str(out)],
            cwd=REPO_ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )))
    results = []
    for out, process in runs:
        process.wait(timeout=seconds + 300)
        results.append(json.loads(out.read_text())[0])
    return {
        "texts_per_second": sum(r["texts_per_s"] for r in results),
        "p50_ms": max(r["p50_ms"] for r in results),
        "p99_ms": max(r["p99_ms"] for r in results),
        "errors": sum(sum(r["errors"].values()) for r in results),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models-dir", type=Path, default=REPO_ROOT / "models")
    parser.add_argument("--model", default="review-sentiment")
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=15)
    parser.add_argument("--processes", type=int, default=psutil.cpu_count() or 2)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    sys.argv = sys.argv[:1]  # serving_load (kserve) parses sys.argv when imported
    sys.path.insert(0, str(REPO_ROOT / "benchmarks"))
    from serving_load import Server
    work = Path(tempfile.mkdtemp(prefix="processes-"))
    only = work / "models"
    only.mkdir()
    # Hard links: the server does not follow a symlinked model folder out of its models folder.
    shutil.copytree((args.models_dir / args.model).resolve(), only / args.model, copy_function=os.link)
    settings = {
        "A: 1 process x workers": [{}],
        f"B: {args.processes} processes x 1 worker": [
            {"PREDICTORS_WORKERS": "1", "PREDICTORS_ADAPTIVE_THREADS": "off", "PREDICTORS_PIN_CPUS": "off"}
        ] * args.processes,
    }
    rows = []
    try:
        for round_ in range(args.rounds):
            for label, envs in settings.items():
                servers = [Server(only, work / f"server-{label[0]}-{i}.log", env) for i, env in enumerate(envs)]
                try:
                    result = drive([server.url for server in servers], args.model, args.clients, args.seconds,
                                   args.models_dir, work)
                    result["rss_mib"] = rss_mib(servers)
                finally:
                    for server in servers:
                        server.stop()
                rows.append({"setting": label, "round": round_ + 1, **result})
                print(json.dumps(rows[-1]), flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"\n{args.model}, {args.clients} one-text clients, {args.seconds:.0f} s per run, load average at end "
          f"{os.getloadavg()[0]:.1f}")
    print("| setting | round | texts/s | p50 ms | p99 ms | errors | servers' RSS MiB |")
    print("|---|---|---|---|---|---|---|")
    for row in rows:
        print(f"| {row['setting']} | {row['round']} | {row['texts_per_second']:.1f} | {row['p50_ms']:.1f} | "
              f"{row['p99_ms']:.1f} | {row['errors']} | {row['rss_mib']:.0f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
