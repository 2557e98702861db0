#!/usr/bin/env python3
"""A newcomer's first run, timed: `make serve` in a clone with an empty model cache.

    python benchmarks/first_run.py [--clone DIR] [--cache-dir DIR] [--port 8095] [--timeout 1200]

Starts `make serve` (install is expected done: the clone's .venv or the repository's is reused),
polls the repository index every half second and prints when each demo model first answered
an inference and when all were ready, measured from the moment `make serve` started. The
cache (XDG_CACHE_HOME) is a fresh temporary folder unless --cache-dir names one, so nothing built
before is reused: wheels and data are downloaded again and both classifiers are fine-tuned.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEMO_MODELS = ("pii-ner", "sentence-embedding", "review-sentiment", "news-topic", "review-sentiment-tfidf")


def fetch(url: str, body: dict | None = None) -> tuple[int, object]:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=10) as reply:
            return reply.status, json.loads(reply.read())
    except urllib.error.HTTPError as exc:
        return exc.code, None
    except OSError:
        return 0, None


def answers(url: str, model: str) -> bool:
    body = {"inputs": [{"name": "text", "datatype": "BYTES", "shape": [1], "data": ["A first request."]}]}
    return fetch(f"{url}/v2/models/{model}/infer", body)[0] == 200


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clone", type=Path, help="a fresh clone to run in (default: a temporary `git clone` of this repository)")
    parser.add_argument("--cache-dir", type=Path, help="XDG_CACHE_HOME for the build (default: a new empty folder)")
    parser.add_argument("--port", type=int, default=8095)
    parser.add_argument("--timeout", type=float, default=1200)
    parser.add_argument("--log", type=Path, help="where `make serve`'s output goes (default: discarded)")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="first-run-"))
    clone = args.clone or work / "clone"
    if args.clone is None:
        subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True)
    cache = args.cache_dir or work / "cache"
    venv = clone / ".venv"
    if not venv.exists():  # the install step is timed apart; reuse this repository's environment
        venv.symlink_to(ROOT / ".venv")
        (ROOT / ".venv" / ".installed").touch()
    env = {**os.environ, "XDG_CACHE_HOME": str(cache), "HTTP_PORT": str(args.port), "GRPC_PORT": str(args.port + 1)}
    url = f"http://127.0.0.1:{args.port}"
    if fetch(f"{url}/v2/health/live")[0] != 0:  # another server would answer for ours
        print(f"error: something already listens on port {args.port}; pass --port", file=sys.stderr)
        return 2
    started = time.monotonic()
    process = subprocess.Popen(["make", "serve", f"HTTP_PORT={args.port}", f"GRPC_PORT={args.port + 1}"],
                               cwd=clone, env=env, stdout=args.log.open("w") if args.log else subprocess.DEVNULL,
                               stderr=subprocess.STDOUT,
                               start_new_session=True)
    first_answer: dict[str, float] = {}
    states: dict[str, str] = {}
    try:
        while len(first_answer) < len(DEMO_MODELS) and time.monotonic() - started < args.timeout:
            status, rows = fetch(f"{url}/v2/repository/index", {})
            if status == 200:
                for row in rows:
                    reason = f"{row['state']} {row.get('reason', '')}"[:70]
                    if states.get(row["name"]) != reason:
                        states[row["name"]] = reason
                        print(f"{time.monotonic() - started:7.1f}s  {row['name']:<19} {reason}", flush=True)
                failed = [row["name"] for row in rows if "build failed" in row.get("reason", "")]
                if failed:  # final: the build does not retry
                    print(f"the build failed for {', '.join(failed)} (see {args.log or 'build.log'})", flush=True)
                    break
                for model in DEMO_MODELS:
                    if model not in first_answer and states.get(model, "").startswith("READY") and answers(url, model):
                        first_answer[model] = time.monotonic() - started
            time.sleep(0.5)
    finally:
        os.killpg(process.pid, signal.SIGINT)
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
    print("\nmodel                first answer (s from `make serve`)")
    for model in DEMO_MODELS:
        seconds = first_answer.get(model)
        print(f"{model:<20} {seconds:8.1f}" if seconds is not None else f"{model:<20}  not ready")
    if len(first_answer) == len(DEMO_MODELS):
        print(f"all {len(DEMO_MODELS)} ready after {max(first_answer.values()):.1f} s; first model after {min(first_answer.values()):.1f} s")
    if args.clone is None and args.cache_dir is None:
        shutil.rmtree(work, ignore_errors=True)
    return 0 if len(first_answer) == len(DEMO_MODELS) else 1


if __name__ == "__main__":
    sys.exit(main())
