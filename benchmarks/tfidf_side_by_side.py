#!/usr/bin/env python3
"""review-sentiment-tfidf beside review-sentiment (int8), on the same held-out texts, as the README
quotes them.

    python benchmarks/tfidf_side_by_side.py [--models-dir models] [--seconds 8] [--out FILE.json]

Per model, each on a server of its own holding only it (response cache off, so every text is run);
the TF-IDF model twice, from its ONNX export (as served) and from model.skops (`backend: sklearn`,
as a pipeline skl2onnx cannot convert is served):
- held-out accuracy through the serving pipeline (what the server answers), and the TF-IDF model's
  ONNX gate agreement with scikit-learn (export_report.json);
- start to ready, and idle RSS of the server process;
- texts/s and p50/p99 latency at 32 one-text clients, and with 2 clients of 64-text requests;
- how much of the server's work is not the model: the CPU seconds of the server process's
  inference worker threads (text cleaning or tokenizing, backend, task head, for each batch) against
  those of all its threads (the rest: HTTP, JSON, the codec, the cache lookup, admission, metrics),
  read from /proc per thread during each setting; and for one client alone, the p50 request latency
  against the model's own time per request (predictors_stage_duration_seconds);
- the TF-IDF model's cold build (`tools/build_models.py --only review-sentiment-tfidf` into an empty
  cache, the Debian package already downloaded), wall and CPU seconds, per step.
The machine may be shared: the load average is printed with each line.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

# Beside this file: it sets the offline environment, puts the repository on sys.path and keeps
# sys.argv from kserve's parser (ARGV is what this script was given).
from serving_load import ARGV, REPO_ROOT, Server, setting

from predictors.serving.scheduling.compute_slots import WORKER_NICE  # noqa: E402
from tests.helpers import linked_model_folder  # noqa: E402

MODELS = ("review-sentiment-tfidf", "review-sentiment")
#: (label, model, predictor.yaml lines added): what is measured, each on a server of its own.
VARIANTS = (
    ("review-sentiment-tfidf (onnx)", MODELS[0], ""),
    ("review-sentiment-tfidf (skops)", MODELS[0], "backend: sklearn\n"),
    ("review-sentiment (int8)", MODELS[1], ""),
)
MODEL_STAGES = ("tokenize", "backend", "postprocess")
results: dict[str, object] = {}


def log(key: str, value: object) -> None:
    results[key] = value
    print(f"[load {os.getloadavg()[0]:.1f}] {key}: {value}", flush=True)


def heldout(folder: Path) -> tuple[list[str], list[str]]:
    rows = [json.loads(line) for line in (folder / "heldout.jsonl").read_text(encoding="utf-8").splitlines() if line.strip()]
    return [r["text"] for r in rows], [r["label"] for r in rows]


def served_accuracy(folder: Path, texts: list[str], labels: list[str]) -> float:
    from predictors.backends import load_model_config
    from predictors.serving.predictor import TextPredictor

    predictor = TextPredictor(load_model_config(folder))
    predictor.load()
    try:
        predicted = predictor.run_texts(texts, workers=2).outputs["label"]
    finally:
        predictor.stop()
    return round(sum(p == g for p, g in zip(predicted, labels)) / len(labels), 4)


def thread_cpu(pid: int) -> tuple[float, float]:
    """(CPU seconds of the inference worker threads, of all threads) of process `pid`."""
    tick = os.sysconf("SC_CLK_TCK")
    workers = total = 0.0
    for stat in Path(f"/proc/{pid}/task").glob("*/stat"):
        try:
            text = stat.read_text()
        except OSError:  # the thread ended
            continue
        fields = text[text.rindex(")") + 2 :].split()  # after the thread's name: state, ppid, ...
        seconds = (int(fields[11]) + int(fields[12])) / tick  # utime, stime
        total += seconds
        if int(fields[16]) == WORKER_NICE:  # the scheduler's workers lower their own priority to it
            workers += seconds
    return workers, total


def metrics(server: Server, model: str) -> tuple[float, int]:
    """(seconds the model's stages took, requests) from /metrics."""
    with urllib.request.urlopen(f"{server.url}/metrics", timeout=30) as reply:
        text = reply.read().decode()
    stages = 0.0
    for stage in MODEL_STAGES:
        found = re.search(rf'^predictors_stage_duration_seconds_sum{{[^}}]*model="{re.escape(model)}"[^}}]*'
                          rf'stage="{stage}"[^}}]*}} (\S+)$', text, re.M)
        stages += float(found.group(1)) if found else 0.0
    requests = sum(float(v) for v in re.findall(
        rf'^predictors_requests_total{{[^}}]*model="{re.escape(model)}"[^}}]*}} (\S+)$', text, re.M))
    return stages, int(requests)


def measured_setting(server: Server, model: str, texts: list[str], clients: int, per_request: int, seconds: float) -> dict:
    stages_before, requests_before = metrics(server, model)
    workers_before, total_before = thread_cpu(server.process.pid)
    result = setting(server, model, texts, clients, per_request, seconds)
    workers_after, total_after = thread_cpu(server.process.pid)
    stages_after, requests_after = metrics(server, model)
    requests = max(1, requests_after - requests_before)
    workers, total = workers_after - workers_before, total_after - total_before
    return {
        "texts_per_s": round(result.texts_per_second, 1), "p50_ms": round(result.percentile(50) * 1000, 2),
        "p99_ms": round(result.percentile(99) * 1000, 2), "errors": result.errors,
        "model_wall_ms_per_request": round((stages_after - stages_before) / requests * 1000, 3),
        "server_cpu_ms_per_request": round(total / requests * 1000, 3),
        "worker_cpu_ms_per_request": round(workers / requests * 1000, 3),
        "share_of_server_cpu_not_in_workers": round(1 - workers / total, 3) if total else None,
    }


def cold_build(models_dir: Path) -> dict:
    """The TF-IDF model built into an empty cache (the Debian package linked in, not downloaded)."""
    from tools.build.cache import cache_root_dir

    with tempfile.TemporaryDirectory(prefix="tfidf-build-") as tmp:
        cache = Path(tmp) / "cache"
        cache.mkdir()
        (cache / "downloads").symlink_to(cache_root_dir() / "downloads")
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        started = time.monotonic()
        proc = subprocess.run(
            [sys.executable, "tools/build_models.py", "--models-dir", str(Path(tmp) / "models"), "--only", MODELS[0],
             "--cache-dir", str(cache)], cwd=REPO_ROOT, capture_output=True, text=True, timeout=600)
        wall = time.monotonic() - started
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise RuntimeError(f"build failed:\n{proc.stdout[-3000:]}{proc.stderr[-3000:]}")
    steps = {m.group(1).strip(): float(m.group(2)) for m in re.finditer(
        rf"^{re.escape(MODELS[0])}\s+(.+?)\s+([0-9.]+)\s", proc.stdout, re.M)}
    return {"wall_s": round(wall, 1), "cpu_s": round(after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime, 1),
            "steps_s": steps}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models-dir", type=Path, default=REPO_ROOT / "models")
    parser.add_argument("--seconds", type=float, default=8.0, help="seconds per load setting (default: %(default)s)")
    parser.add_argument("--skip-build", action="store_true", help="leave out the cold build")
    parser.add_argument("--out", type=Path, help="also write the figures as JSON")
    args = parser.parse_args(ARGV)
    texts, labels = heldout(args.models_dir / MODELS[0])
    log("texts", f"{len(texts)} held-out reviews (review-sentiment's testing_data)")
    report = json.loads((args.models_dir / MODELS[0] / "export_report.json").read_text())
    log(f"{MODELS[0]}: ONNX gate", report["files"]["model.onnx"]["gate"]["summary"])
    work = Path(tempfile.mkdtemp(prefix="tfidf-side-by-side-"))
    for label, model, extra in VARIANTS:
        source = args.models_dir / model
        folder = linked_model_folder(source, work / label.replace(" ", "") / model, "cache: {enabled: false}\n" + extra)
        log(f"{label}: held-out accuracy as served", served_accuracy(folder, texts, labels))
        server = Server(folder.parent, work / f"{label.replace(' ', '')}.log")
        try:
            config = server.config(model)
            log(f"{label}: served from", f"{config['backend']} {config['weights']}")
            log(f"{label}: start to ready (s)", server.ready_seconds)
            time.sleep(1)
            log(f"{label}: idle RSS (MiB), torch imported", [server.rss_mib(), server.imports_torch()])
            log(f"{label}: 1 one-text client", measured_setting(server, model, texts, 1, 1, args.seconds / 2))
            log(f"{label}: 32 one-text clients", measured_setting(server, model, texts, 32, 1, args.seconds))
            log(f"{label}: 2 clients x 64 texts", measured_setting(server, model, texts, 2, 64, args.seconds))
        finally:
            server.stop()
    if not args.skip_build:
        log(f"{MODELS[0]}: cold build", cold_build(args.models_dir))
    info = json.loads((args.models_dir / MODELS[1] / "build_info.json").read_text())
    log(f"{MODELS[1]}: build recorded in build_info.json (s)", {"build": info.get("build_seconds"),
                                                                 "fine-tune": info.get("train_seconds")})
    if args.out:
        args.out.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
