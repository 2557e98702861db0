"""What a kubelet does to a container, for the rehearsals that run one: the rendered manifests,
probes with their budgets, and the V2 requests used to check serving and graceful termination.
Shared by the container rehearsal (podman) and usable by the local-process rehearsal."""

from __future__ import annotations

import json
import os
import socket
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Callable

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
MANIFESTS_DIR = Path(os.environ.get("PREDICTORS_MANIFESTS_DIR", ROOT / "manifests"))
MODELS_DIR = Path(os.environ.get("PREDICTORS_MODELS_DIR", ROOT / "models"))
POLL_SECONDS = 0.25
SLOW_REQUEST_TEXTS = 300


# ---- the rendered manifests ---------------------------------------------------------------------
def manifests_of_kind(kind: str) -> list[tuple[Path, dict]]:
    found = []
    for path in sorted(MANIFESTS_DIR.glob("*.yaml")):
        body = yaml.safe_load(path.read_text())
        if isinstance(body, dict) and body.get("kind") == kind:
            found.append((path, body))
    return found


def isvc_files() -> list[Path]:
    return [path for path, _ in manifests_of_kind("InferenceService")]


def serving_runtime(name: str) -> dict:
    for _, body in manifests_of_kind("ServingRuntime"):
        if body["metadata"]["name"] == name:
            return body
    raise AssertionError(f"no ServingRuntime {name!r} in {MANIFESTS_DIR}")


def model_folder(isvc: dict) -> Path:
    """models/<last part of storageUri>: what KServe's storage initializer would put at /mnt/models."""
    uri = isvc["spec"]["predictor"]["model"]["storageUri"]
    folder = MODELS_DIR / uri.rstrip("/").rsplit("/", 1)[-1]
    if not (folder / "config.json").is_file():
        pytest.fail(f"storageUri {uri}: no model in {folder}; build the models with `make models`")
    return folder


# ---- kubelet's probes ---------------------------------------------------------------------------
def run_probe(probe: dict, port_map: dict[int, int]) -> tuple[bool, float, str]:
    """One probe as kubelet runs it, against 127.0.0.1:<host port of the container port>:
    (success, seconds taken, detail)."""
    timeout = probe.get("timeoutSeconds", 1)
    started = time.monotonic()
    if "httpGet" in probe:
        spec = probe["httpGet"]
        url = f"{spec.get('scheme', 'HTTP').lower()}://127.0.0.1:{port_map[spec['port']]}{spec.get('path', '/')}"
        request = urllib.request.Request(url, headers={h["name"]: h["value"] for h in spec.get("httpHeaders", [])})
        try:
            with urllib.request.urlopen(request, timeout=timeout) as reply:
                status = reply.status
        except urllib.error.HTTPError as exc:
            status = exc.code
        except OSError as exc:
            return False, time.monotonic() - started, f"{url}: {exc}"
        return 200 <= status < 400, time.monotonic() - started, f"{url}: HTTP {status}"
    if "tcpSocket" in probe:
        try:
            with socket.create_connection(("127.0.0.1", port_map[probe["tcpSocket"]["port"]]), timeout=timeout):
                return True, time.monotonic() - started, "connected"
        except OSError as exc:
            return False, time.monotonic() - started, str(exc)
    raise AssertionError(f"probe handler not rehearsed: {sorted(probe)}")


def budget(probe: dict) -> float:
    """How long kubelet lets a probe fail before acting: initialDelay + period x failureThreshold."""
    return probe.get("initialDelaySeconds", 0) + probe.get("periodSeconds", 10) * probe.get("failureThreshold", 3)


def wait_for_probe(probe: dict, port_map: dict[int, int], exit_code: Callable[[], int | None],
                   log_tail: Callable[[], str], what: str) -> float:
    """Seconds until the probe first succeeds; fails the test once its budget is spent or the
    container exits (`exit_code()` not None)."""
    limit = budget(probe)
    timeout = probe.get("timeoutSeconds", 1)
    started = time.monotonic()
    while True:
        elapsed = time.monotonic() - started
        code = exit_code()
        if code is not None:
            pytest.fail(f"{what}: the container exited with {code} after {elapsed:.1f}s:\n{log_tail()}")
        ok, took, detail = run_probe(probe, port_map)
        if ok:
            assert took <= timeout, f"{what}: answered after {took:.2f}s, over timeoutSeconds={timeout}"
            return time.monotonic() - started
        if elapsed > limit:
            pytest.fail(
                f"{what}: still failing after {elapsed:.1f}s, over its budget of {limit:.0f}s "
                f"(initialDelaySeconds + periodSeconds x failureThreshold); kubelet would restart the container. "
                f"Last: {detail}\n{log_tail()}"
            )
        time.sleep(POLL_SECONDS)


# ---- requests -----------------------------------------------------------------------------------
def post(url: str, body: dict, timeout: float = 300) -> tuple[int, dict | str]:
    request = urllib.request.Request(url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as reply:
            return reply.status, json.loads(reply.read())
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode(errors="replace")


def texts_body(texts: list[str]) -> dict:
    return {"inputs": [{"name": "text", "datatype": "BYTES", "shape": [len(texts)], "data": texts}]}


def slow_texts(count: int) -> list[str]:
    """Medium-length texts: enough work to be in flight for a second or more, not for the whole grace period."""
    sentence = ("Jane Doe from Berlin emailed jane.doe@example.com about the quarterly results and a refund; "
                "the support team answered that the new phone ships next week with a longer battery life.")
    return [f"{i}: {sentence}" for i in range(count)]


def preprocessed(url: str, name: str) -> float:
    """kserve's count of requests that finished preprocessing (and so are in predict) for a model."""
    text = urllib.request.urlopen(f"{url}/metrics", timeout=5).read().decode()
    for line in text.splitlines():
        if line.startswith("request_preprocess_seconds_count{") and f'model_name="{name}"' in line:
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def wait_until_in_flight(url: str, name: str, before: float, finished: Callable[[], bool], seconds: float = 30) -> None:
    """Returns once a request sent after `before` was counted has been decoded and is computing."""
    deadline = time.monotonic() + seconds
    while preprocessed(url, name) <= before:
        assert time.monotonic() < deadline and not finished(), "the slow request never reached the model"
        time.sleep(0.02)
