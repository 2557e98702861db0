"""`python -m predictors`: list, infer, container mode, honest readiness and the start-up mistakes."""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

from tests.conftest import ROOT, free_port, http_status, start_server
from tests.helpers import write_folder


def run_cli(*args, timeout=120):
    return subprocess.run([sys.executable, "-m", "predictors", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout)


def test_list_shows_every_demo_model(demo_models):
    result = run_cli("list", "--models-dir", str(demo_models))
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["NAME", "TASK", "BACKEND", "BATCH", "LABELS", "VERSION", "ACCURACY", "LOADING"]
    table, _, reasons = "\n".join(lines[1:]).partition("\n\n")
    rows = {line.split()[0]: line for line in table.splitlines()}
    assert all(f"{name}: " in reasons for name in rows)  # why each backend was chosen
    assert set(rows) == {"news-topic", "pii-ner", "review-sentiment", "review-sentiment-tfidf", "sentence-embedding"}
    assert "great,other" in rows["review-sentiment"] and "onnx" in rows["pii-ner"]
    assert "onnx (model.onnx)" in rows["review-sentiment-tfidf"] and "great,other" in rows["review-sentiment-tfidf"]
    assert "token_classification" in rows["pii-ner"] and "35 labels" in rows["pii-ner"]


def test_infer_prints_readable_answers(server):
    result = run_cli("infer", "pii-ner", "Write to ann@example.com", "--url", server.url)
    assert result.returncode == 0, result.stderr
    assert "EMAIL" in result.stdout and "'ann@example.com' [9:24]" in result.stdout
    result = run_cli("infer", "review-sentiment", "Lovely tea, will buy again.", "--url", server.url)
    assert "label: great" in result.stdout
    result = run_cli("infer", "nope", "x", "--url", server.url)
    assert result.returncode == 1 and "HTTP 404" in result.stderr


@pytest.mark.parametrize("setup, message", [
    ("missing", "does not exist"),
    ("empty", "no models found"),
])
def test_serve_without_models_explains(tmp_path, setup, message):
    folder = tmp_path / "models"
    if setup == "empty":
        folder.mkdir()
    result = run_cli("--models-dir", str(folder), "--http_port", "0", timeout=60)
    assert result.returncode == 2 and message in result.stderr


def test_port_in_use_is_reported(tmp_path, demo_models):
    with socket.socket() as busy:
        busy.bind(("0.0.0.0", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = run_cli("--models-dir", str(demo_models), "--http_port", str(port), timeout=60)
    assert result.returncode == 2 and f"port {port} is already in use" in result.stderr


def test_broken_models_are_named_and_the_others_serve(tmp_path, demo_models):
    models = tmp_path / "models"
    shutil.copytree(demo_models / "pii-ner", models / "pii-ner")
    write_folder(models / "bad-yaml", predictor_yaml="batch_size: lots\n", files=("model.safetensors",))
    broken = write_folder(models / "broken-weights", labels=("a", "b"))
    (broken / "model.onnx").write_bytes(b"this is not an onnx file")
    server = start_server(["--models-dir", str(models)], tmp_path / "server.log")
    try:
        deadline = time.monotonic() + 120
        while not (http_status(f"{server.url}/v2/models/pii-ner/ready") == 200
                   and "bad-yaml" in (log := server.log.read_text()) and "broken-weights" in log):
            assert time.monotonic() < deadline and server.process.poll() is None, server.log.read_text()
            time.sleep(0.25)
        assert "bad-yaml" in log and "batch_size must be a positive integer" in log
        assert "broken-weights" in log and "model.onnx" in log
        assert http_status(f"{server.url}/v2/models/broken-weights/ready") == 503
        assert http_status(f"{server.url}/v2/models/bad-yaml/ready") == 503
        # a model that failed to load is reported, and does not hold the healthy one hostage
        assert http_status(f"{server.url}/v2/health/ready") == 200
        assert http_status(f"{server.url}/v2/health/live") == 200
        index = subprocess.run([sys.executable, "-m", "predictors", "models", "--url", server.url],
                               capture_output=True, text=True, timeout=60).stdout
        assert "bad-yaml" in index and "UNAVAILABLE" in index and "batch_size must be a positive integer" in index
    finally:
        server.stop()


def test_live_before_ready_then_ready_after_warm_up(tmp_path, demo_models):
    """Container mode as an InferenceService runs it: liveness answers while the model loads, readiness
    only after the warm-up request."""
    server = start_server(["--model_name", "topics", "--model_dir", str(demo_models / "news-topic")], tmp_path / "c.log")
    seen = []
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            state = (http_status(f"{server.url}/v2/health/live"), http_status(f"{server.url}/v2/health/ready"),
                     http_status(f"{server.url}/v2/models/topics/ready"))
            if not seen or seen[-1] != state:
                seen.append(state)
            if state == (200, 200, 200):
                break
            time.sleep(0.05)
        assert seen[-1] == (200, 200, 200), seen
        assert (200, 503, 503) in seen, seen
        assert "model topics ready" in server.log.read_text()
        # the repository extension unloads and reloads it from its folder
        for action, expected in (("unload", 503), ("load", 200)):  # unloaded: 503 naming the unload
            request = urllib.request.Request(f"{server.url}/v2/repository/models/topics/{action}", data=b"{}",
                                             headers={"Content-Type": "application/json"})
            assert urllib.request.urlopen(request, timeout=120).status == 200
            assert http_status(f"{server.url}/v2/models/topics/ready") == expected
    finally:
        server.stop()


def test_one_port_for_http_and_grpc_is_refused(demo_models):
    port = free_port()
    result = run_cli("--models-dir", str(demo_models), "--http_port", str(port), "--grpc_port", str(port), timeout=60)
    assert result.returncode == 2 and f"--http_port and --grpc_port are both {port}" in result.stderr, result.stderr
