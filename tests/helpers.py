"""Builders for small model folders used by unit tests (config files only, no weights), and the
JSON calls the integration tests make to the real server, free ports, and waiting on a condition."""

from __future__ import annotations

import json
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Callable


def free_ports(count: int) -> list[int]:
    """`count` different free ports on 127.0.0.1: the sockets stay open until all are chosen, as the
    kernel may hand a port it just got back to the very next bind."""
    sockets = [socket.socket(socket.AF_INET, socket.SOCK_STREAM) for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def free_port() -> int:
    return free_ports(1)[0]


def write_folder(path: Path, architecture: str = "BertForSequenceClassification", labels=("neg", "pos"),
                 predictor_yaml: str | None = None, files: tuple[str, ...] = ()) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    config = {"architectures": [architecture], "hidden_size": 8, "max_position_embeddings": 512}
    if labels:
        config["id2label"] = {str(i): label for i, label in enumerate(labels)}
    (path / "config.json").write_text(json.dumps(config))
    if predictor_yaml is not None:
        (path / "predictor.yaml").write_text(predictor_yaml)
    for name in files:
        (path / name).parent.mkdir(parents=True, exist_ok=True)
        (path / name).write_bytes(b"")
    return path


def linked_model_folder(source: Path, target: Path, extra_yaml: str = "") -> Path:
    """A model folder whose files are symlinks to a built one, with `extra_yaml` appended to its
    predictor.yaml: the same weights served under other settings, without copying them."""
    target.mkdir(parents=True, exist_ok=True)
    for entry in source.iterdir():
        if entry.name != "predictor.yaml":
            (target / entry.name).symlink_to(entry.resolve())
    settings = (source / "predictor.yaml").read_text() if (source / "predictor.yaml").is_file() else ""
    (target / "predictor.yaml").write_text(settings.rstrip("\n") + "\n" + extra_yaml)
    return target


def call_json(url: str, body: dict | None = None, timeout: float = 180) -> tuple[int, dict, dict[str, str]]:
    """POST `body` as JSON (GET without one): (status, the JSON answer, headers lower-cased), error
    statuses included."""
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method="POST" if data is not None else "GET",
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as reply:
            return reply.status, json.loads(reply.read()), {k.lower(): v for k, v in reply.headers.items()}
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read()), {k.lower(): v for k, v in exc.headers.items()}


def stop_process(process: subprocess.Popen, timeout: float = 30) -> None:
    """SIGTERM a process this test run started, and SIGKILL it if it has not exited after `timeout`."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
#: Short reviews a tiny pipeline is fitted on in unit tests (seconds: a real scikit-learn fit).
PIPELINE_TEXTS = (
    "great coffee rich and smooth", "stale chips and a torn bag", "lovely tea will buy again",
    "awful taste never again", "great snack my kids love it", "bad smell and bad taste",
    "smooth rich great flavour", "torn box stale cookies awful",
)


def write_pipeline_folder(path: Path, classifier=None, labels=("great", "other"), predictor_yaml: str | None = None,
                          vectorizer=None, file_name: str = "model.skops"):
    """A model folder holding a real (tiny) scikit-learn text pipeline saved with skops; returns
    (folder, pipeline). `labels` cycle over PIPELINE_TEXTS as the training targets."""
    import skops.io
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline

    path.mkdir(parents=True, exist_ok=True)
    targets = [labels[i % len(labels)] for i in range(len(PIPELINE_TEXTS))]
    pipeline = Pipeline([("tfidf", vectorizer or TfidfVectorizer(ngram_range=(1, 2))),
                         ("classifier", classifier or LogisticRegression())])
    pipeline.fit(list(PIPELINE_TEXTS), targets)
    skops.io.dump(pipeline, path / file_name)
    if predictor_yaml is not None:
        (path / "predictor.yaml").write_text(predictor_yaml)
    return path, pipeline


def wait_until(condition: Callable[[], Any], timeout: float = 60.0, interval: float = 0.02) -> None:
    """Poll `condition` until it is true; fail the test after `timeout` seconds (a generous deadline,
    never a fixed sleep: the machines are noisy)."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(interval)
