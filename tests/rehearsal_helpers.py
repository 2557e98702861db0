"""What a kubelet does to a container, for the rehearsals that run one: the rendered manifests,
probes with their budgets, and the V2 requests used to check serving and graceful termination.
Shared by the container rehearsal (podman) and usable by the local-process rehearsal."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Callable

import pytest
import yaml

from predictors.model.settings import DEFAULT_MAX_BODY_BYTES

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
    if not (folder / "build_info.json").is_file():  # every built folder has it (config.json only the transformers)
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


def slow_texts(count: int, chars: int | None = None) -> list[str]:
    """Medium-length texts: enough work to be in flight for a second or more, not for the whole grace
    period. `chars`: each text that long instead (a model that takes texts, such as a TF-IDF
    pipeline, costs per character rather than per token up to max_length, and little per sentence)."""
    sentence = ("Jane Doe from Berlin emailed jane.doe@example.com about the quarterly results and a refund; "
                "the support team answered that the new phone ships next week with a longer battery life.")
    if chars:
        sentence = (sentence + " ") * (chars // (len(sentence) + 1))
    return [f"{i}: {sentence}"[: chars or None] for i in range(count)]


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


# ---- termination --------------------------------------------------------------------------------
def pre_stop_while_serving(hook: list[str], url: str, name: str, grace: float, env: dict[str, str] | None = None) -> None:
    """Runs the preStop hook (`hook`: the argv that runs it, here or inside the container) and
    checks that the pod keeps serving while it runs and that it ends within the grace period."""
    pre_stop = subprocess.Popen(hook, env=env)
    status, _ = post(f"{url}/v2/models/{name}/infer", texts_body(["Still serving during preStop."]))
    assert status == 200, "the pod must keep serving while its preStop hook runs"
    try:
        assert pre_stop.wait(timeout=grace) == 0, f"preStop {hook} failed"
    except subprocess.TimeoutExpired:
        pre_stop.kill()
        pytest.fail(f"preStop {hook} outlasts terminationGracePeriodSeconds={grace}; kubelet would SIGKILL the pod")


def slow_request(config: dict) -> tuple[int, int | None]:
    """(texts, characters per text) of a request slow enough to be in flight at SIGTERM, for a model
    with this /config: SLOW_REQUEST_TEXTS medium texts; for a model that takes texts (a TF-IDF
    pipeline, which costs about 0.2 us a character) as many characters as the body limit allows."""
    count = min(SLOW_REQUEST_TEXTS, int(config["max_batch"]))
    if config.get("inputs_taken") != "texts":
        return count, None
    count = min(1024, int(config["max_batch"]))
    return count, min(int(config["max_text_chars"]), int(0.9 * DEFAULT_MAX_BODY_BYTES / count))


class RequestInFlight:
    """A request of `count` slow texts on a thread; `start()` returns once the model is computing it."""

    def __init__(self, url: str, name: str, count: int, chars: int | None = None) -> None:
        self.url, self.name, self.count, self.chars = url, name, count, chars
        self.outcome: dict = {}
        self.thread = threading.Thread(target=self._send)

    def _send(self) -> None:
        self.outcome["status"], self.outcome["reply"] = post(
            f"{self.url}/v2/models/{self.name}/infer", texts_body(slow_texts(self.count, self.chars)))
        self.outcome["done"] = time.monotonic()

    def start(self) -> "RequestInFlight":
        before = preprocessed(self.url, self.name)
        self.thread.start()
        wait_until_in_flight(self.url, self.name, before, finished=lambda: "done" in self.outcome)
        return self

    def check_answered(self, sigterm: float, log_tail: str) -> float:
        """Asserts the request was answered in full after SIGTERM; returns seconds from SIGTERM to its answer."""
        self.thread.join(timeout=30)
        assert self.outcome.get("status") == 200, f"in-flight request dropped by SIGTERM: {self.outcome}\n{log_tail}"
        assert self.outcome["done"] > sigterm, "the request finished before SIGTERM; it was not in flight (make it slower)"
        assert all(o["shape"][0] == self.count for o in self.outcome["reply"]["outputs"])
        return self.outcome["done"] - sigterm
