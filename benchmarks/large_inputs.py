#!/usr/bin/env python3
"""Large requests against a real server: status, time and the server's RSS before, at peak and after.

    python benchmarks/large_inputs.py [--models-dir models] [--model sentence-embedding]

Starts two servers with the one model (its files linked, not copied), one after the other:
- `default`: the shipped limits (max_body_bytes 8 MiB; max_text_chars = max_length x 32);
- `raised body limit`: max_body_bytes 256 MiB, so the 10 MB and 100 MB texts get past the body limit
  and the cut by characters before tokenizing is what bounds the work.
Requests (V2 JSON): one 10 MB text, one 100 MB text, a 10 MB body of 200 distinct texts of 50 kB,
and a 5 MB text (under the default body limit). RSS is sampled every 10 ms during each request and read
again 2 s after it. The machine may be shared: the load average is printed with each line.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import psutil  # the benchmark extra

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from tests.helpers import linked_model_folder  # noqa: E402

MIB = 1024 * 1024
WORD = "word "  # 5 characters, one token


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def v2_body(texts: list[str]) -> bytes:
    return json.dumps({"inputs": [{"name": "text", "datatype": "BYTES", "shape": [len(texts)], "data": texts}]}).encode()


CASES = {
    "10 MB text": lambda: v2_body([WORD * 2_000_000]),
    "100 MB text": lambda: v2_body([WORD * 20_000_000]),
    "10 MB body, 200 texts of 50 kB": lambda: v2_body([f"{i} " + WORD * 10_000 for i in range(200)]),  # distinct: no cache hits
    "5 MB text": lambda: v2_body([WORD * 1_000_000]),
}


class Server:
    def __init__(self, models_dir: Path, log: Path) -> None:
        self.port = free_port()
        command = [sys.executable, "-m", "predictors", "serve", "--models-dir", str(models_dir),
                   "--http_port", str(self.port), "--grpc_port", str(free_port())]
        self.process = subprocess.Popen(command, cwd=REPO_ROOT, stdout=log.open("w"), stderr=subprocess.STDOUT)
        self.url = f"http://127.0.0.1:{self.port}"
        self.ps = psutil.Process(self.process.pid)

    def wait_ready(self, timeout: float = 300) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"{self.url}/v2/health/ready", timeout=2) as reply:
                    if reply.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            if self.process.poll() is not None:
                raise SystemExit(f"server exited with {self.process.returncode}")
            time.sleep(0.5)
        raise SystemExit("server not ready in time")

    def rss_mib(self) -> float:
        return self.ps.memory_info().rss / MIB

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=60)


def send(server: Server, model: str, body: bytes) -> tuple[int, str, float, float]:
    """(status, answer excerpt, seconds, peak RSS MiB while the request ran)."""
    peak = [server.rss_mib()]
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak.append(server.rss_mib())
            time.sleep(0.01)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    request = urllib.request.Request(f"{server.url}/v2/models/{model}/infer", data=body,
                                     headers={"Content-Type": "application/json"})
    started = time.perf_counter()
    try:
        with urllib.request.urlopen(request, timeout=600) as reply:
            status, answer = reply.status, reply.read()
    except urllib.error.HTTPError as error:
        status, answer = error.code, error.read()
    except (ConnectionError, urllib.error.URLError) as error:  # the server closed mid-upload
        status, answer = 0, str(error).encode()
    seconds = time.perf_counter() - started
    done.set()
    sampler.join()
    try:
        document = json.loads(answer)
        excerpt = document.get("error") or f"200, truncated_indices {(document.get('parameters') or {}).get('truncated_indices')}"
    except (ValueError, AttributeError):
        excerpt = answer[:80].decode(errors="replace")
    return status, excerpt[:90], seconds, max(peak)


def run(name: str, folder: Path, model: str, extra_yaml: str, work: Path) -> None:
    models_dir = work / name.replace(" ", "-")
    linked_model_folder(folder, models_dir / model, extra_yaml)
    server = Server(models_dir, work / f"{models_dir.name}.log")
    try:
        server.wait_ready()
        time.sleep(2)
        print(f"\n## {name} ({extra_yaml.strip() or 'shipped limits'}), idle RSS {server.rss_mib():.0f} MiB", flush=True)
        print("| request | body MB | status | seconds | RSS before | peak | 2 s after | answer |")
        print("|---|---|---|---|---|---|---|---|", flush=True)
        for label, make_body in CASES.items():
            body = make_body()
            size_mb = len(body) / 1e6
            before = server.rss_mib()
            status, excerpt, seconds, peak = send(server, model, body)
            del body
            time.sleep(2)
            after = server.rss_mib()
            print(f"| {label} | {size_mb:.1f} | {status} | {seconds:.2f} | {before:.0f} | {peak:.0f} | {after:.0f} "
                  f"| {excerpt} |  [load {os.getloadavg()[0]:.1f}]", flush=True)
    finally:
        server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models-dir", default=str(REPO_ROOT / "models"))
    parser.add_argument("--model", default="sentence-embedding")
    args = parser.parse_args()
    folder = Path(args.models_dir) / args.model
    if not (folder / "config.json").is_file():
        raise SystemExit(f"{folder} is not a built model folder (make models)")
    with tempfile.TemporaryDirectory() as tmp:
        run("default", folder, args.model, "", Path(tmp))
        run("raised body limit", folder, args.model, f"max_body_bytes: {256 * MIB}\n", Path(tmp))


if __name__ == "__main__":
    main()
