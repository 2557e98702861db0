"""`python -m predictors benchmark` against the test server: a short setting, its table, sizing
advice and a PNG plot."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.conftest import ROOT


def test_benchmark_runs_a_short_setting_and_draws_a_png(server, tmp_path):
    plot, numbers = tmp_path / "load.png", tmp_path / "load.json"
    run = subprocess.run(
        [sys.executable, "-m", "predictors", "benchmark", "review-sentiment", "--url", server.url,
         "--concurrency", "1,2", "--texts-per-request", "1", "--duration", "1", "--cache-bust",
         "--target-rps", "100", "--plot", str(plot), "--json", str(numbers)],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    assert "| clients | texts/req |" in run.stdout and "Sizing" in run.stdout
    assert "replica(s)" in run.stdout and "memory" in run.stdout
    rows = json.loads(numbers.read_text())
    assert [r["concurrency"] for r in rows] == [1, 2]
    assert all(r["requests"] > 0 and r["errors"] == {} and r["p50_ms"] <= r["p99_ms"] for r in rows)
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_benchmark_reports_an_unreachable_server(tmp_path):
    run = subprocess.run(
        [sys.executable, "-m", "predictors", "benchmark", "review-sentiment", "--url", "http://127.0.0.1:9",
         "--concurrency", "1", "--texts-per-request", "1", "--duration", "0.5"],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
    )
    assert run.returncode == 1 and "cannot reach" in run.stderr


def test_benchmark_speaks_the_openai_embeddings_api(server, tmp_path):
    numbers = tmp_path / "openai.json"
    run = subprocess.run(
        [sys.executable, "-m", "predictors", "benchmark", "sentence-embedding", "--url", server.url, "--api", "openai",
         "--concurrency", "2", "--texts-per-request", "1", "--duration", "1", "--cache-bust", "--json", str(numbers)],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    (row,) = json.loads(numbers.read_text())
    assert row["requests"] > 0 and row["errors"] == {}
