"""Kubelet rehearsal: run each InferenceService's container here exactly as written and hold it to
its own probes, ports and termination budget.

For every manifests/<model>.yaml: the container KServe would run (the ServingRuntime's
kserve-container merged with the InferenceService's model fields, `{{.Name}}` replaced), its
command + args + env as written (image ENV from the Dockerfile, downward-API env resolved from
the container's own resources), `python` being this interpreter, /mnt/models mapped to
models/<basename of storageUri>, and each declared containerPort mapped to a free local port.
Then, as kubelet would:

- the startupProbe succeeds within initialDelaySeconds + periodSeconds x failureThreshold, each
  probe answering within timeoutSeconds; then the readinessProbe within its own budget and the
  livenessProbe at once;
- every declared port listens (HTTP on `http`, gRPC on `grpc`), a V2 inference on the declared
  HTTP port answers, and /v2/models/<name>/config shows the manifest's batch_size / max_batch and
  one worker per CPU of the limit;
- termination: the preStop hook runs (while it runs the pod still serves), then SIGTERM arrives
  while a 300-text request is in flight; the request completes with 200 and every output, and
  the process exits within terminationGracePeriodSeconds of the start of termination.
"""

from __future__ import annotations

import json
import math
import os
import signal
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import yaml

from predictors.deploy import effective_container, local_command, resolve_env

from .conftest import free_port
from .dockerfile_parser import parse

ROOT = Path(__file__).resolve().parent.parent
MANIFESTS_DIR = Path(os.environ.get("PREDICTORS_MANIFESTS_DIR", ROOT / "manifests"))
MODELS_DIR = Path(os.environ.get("PREDICTORS_MODELS_DIR", ROOT / "models"))
POLL_SECONDS = 0.25
SLOW_REQUEST_TEXTS = 300


def isvc_files() -> list[Path]:
    files = []
    for path in sorted(MANIFESTS_DIR.glob("*.yaml")):
        body = yaml.safe_load(path.read_text())
        if isinstance(body, dict) and body.get("kind") == "InferenceService":
            files.append(path)
    return files


def _runtime(name: str) -> dict:
    for path in sorted(MANIFESTS_DIR.glob("*.yaml")):
        body = yaml.safe_load(path.read_text())
        if isinstance(body, dict) and body.get("kind") == "ServingRuntime" and body["metadata"]["name"] == name:
            return body
    raise AssertionError(f"no ServingRuntime {name!r} in {MANIFESTS_DIR}")


# ---- kubelet's probe ----------------------------------------------------------------------------
def run_probe(probe: dict, port_map: dict[int, int]) -> tuple[bool, float, str]:
    """One probe as kubelet runs it: (success, seconds taken, detail)."""
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
    return probe.get("initialDelaySeconds", 0) + probe.get("periodSeconds", 10) * probe.get("failureThreshold", 3)


def wait_for_probe(probe: dict, port_map: dict[int, int], process: subprocess.Popen, log: Path, what: str) -> float:
    """Seconds until the probe first succeeds; fails the test once its budget is spent."""
    limit = budget(probe)
    timeout = probe.get("timeoutSeconds", 1)
    started = time.monotonic()
    detail = "never probed"
    while True:
        elapsed = time.monotonic() - started
        if process.poll() is not None:
            pytest.fail(f"{what}: the container exited with {process.returncode} after {elapsed:.1f}s:\n{log.read_text()[-3000:]}")
        ok, took, detail = run_probe(probe, port_map)
        if ok:
            assert took <= timeout, f"{what}: answered after {took:.2f}s, over timeoutSeconds={timeout}"
            return time.monotonic() - started
        if elapsed > limit:
            pytest.fail(
                f"{what}: still failing after {elapsed:.1f}s, over its budget of {limit:.0f}s "
                f"(initialDelaySeconds + periodSeconds x failureThreshold); kubelet would restart the container. "
                f"Last: {detail}\n{log.read_text()[-3000:]}"
            )
        time.sleep(POLL_SECONDS)


# ---- the container as kubelet starts it ---------------------------------------------------------
def container_env(container: dict, pod_name: str) -> dict[str, str]:
    """Image ENV (Dockerfile final stage) + the container's env; PATH stays this machine's."""
    env = {k: os.environ[k] for k in ("PATH", "LANG", "TMPDIR", "SYSTEMROOT") if k in os.environ}
    image_env = parse(ROOT / "Dockerfile").final.env()
    image_env.pop("PATH", None)
    env.update(image_env)
    env.update(resolve_env(container, pod_name=pod_name))
    return env


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


@pytest.mark.parametrize("manifest", isvc_files(), ids=lambda p: p.stem)
def test_kubelet_rehearsal(manifest: Path, tmp_path: Path):
    isvc = yaml.safe_load(manifest.read_text())
    name = isvc["metadata"]["name"]
    annotations = isvc["metadata"].get("annotations") or {}
    predictor = isvc["spec"]["predictor"]
    model = predictor["model"]
    container = effective_container(isvc, _runtime(model["runtime"]))
    model_folder = MODELS_DIR / model["storageUri"].rstrip("/").rsplit("/", 1)[-1]
    if not (model_folder / "config.json").is_file():
        pytest.fail(f"storageUri {model['storageUri']}: no model in {model_folder}; build the models with `make models`")

    declared = {p["name"]: p["containerPort"] for p in container["ports"]}
    port_map = {port: free_port() for port in declared.values()}
    argv = local_command(container, model_folder, port_map)
    env = container_env(container, pod_name=f"{name}-predictor-rehearsal")
    log = tmp_path / "container.log"
    workdir = tmp_path / "workdir"  # not the repository: the container sees only /mnt/models
    workdir.mkdir()
    with log.open("w") as handle:
        process = subprocess.Popen(argv, cwd=workdir, env=env, stdout=handle, stderr=subprocess.STDOUT)
    try:
        # -- start-up: startupProbe gates the others ------------------------------------------
        startup = wait_for_probe(container["startupProbe"], port_map, process, log, f"{name} startupProbe")
        readiness = wait_for_probe(container["readinessProbe"], port_map, process, log, f"{name} readinessProbe")
        liveness = wait_for_probe(container["livenessProbe"], port_map, process, log, f"{name} livenessProbe")
        print(f"\n{name}: startupProbe ok after {startup:.1f}s of {budget(container['startupProbe']):.0f}s budget; "
              f"readiness {readiness:.2f}s, liveness {liveness:.2f}s")

        # -- every declared port serves what its name says ------------------------------------
        url = f"http://127.0.0.1:{port_map[declared['http']]}"
        # kserve's gRPC client: tritonclient.grpc can't share a process with kserve (protobuf clash)
        import asyncio

        from kserve import InferenceGRPCClient

        async def grpc_health() -> bool:
            client = InferenceGRPCClient(f"127.0.0.1:{port_map[declared['grpc']]}", timeout=30)
            try:
                return await client.is_server_live() and await client.is_model_ready(name)
            finally:
                await client.close()

        assert asyncio.run(grpc_health())

        status, reply = post(f"{url}/v2/models/{name}/infer", texts_body(["A first text to serve.", "And a second one."]))
        assert status == 200, reply
        assert reply["model_name"] == name and reply["outputs"]
        assert all(o["shape"][0] == 2 for o in reply["outputs"]), reply["outputs"]

        # -- what the manifest says the model does, it does -----------------------------------
        config = json.loads(urllib.request.urlopen(f"{url}/v2/models/{name}/config", timeout=10).read())
        assert str(config["batch_size"]) == annotations["predictors/batch-size"]
        assert str(config["max_batch"]) == annotations["predictors/max-batch"]
        cpu_limit = math.ceil(float(container["resources"]["limits"]["cpu"]))
        assert env["PREDICTORS_WORKERS"] == str(cpu_limit)
        assert config["workers"] == cpu_limit, f"{config['workers']} workers for a cpu limit of {cpu_limit}"

        # -- termination: preStop, then SIGTERM with a request in flight ----------------------
        grace = predictor["terminationGracePeriodSeconds"]
        hook = container["lifecycle"]["preStop"]["exec"]["command"]
        terminating = time.monotonic()
        pre_stop = subprocess.Popen(hook)
        status, _ = post(f"{url}/v2/models/{name}/infer", texts_body(["Still serving during preStop."]))
        assert status == 200, "the pod must keep serving while its preStop hook runs"
        try:
            assert pre_stop.wait(timeout=grace) == 0, f"preStop {hook} failed"
        except subprocess.TimeoutExpired:
            pre_stop.kill()
            pytest.fail(f"preStop {hook} outlasts terminationGracePeriodSeconds={grace}; kubelet would SIGKILL the pod")

        outcome: dict = {}
        slow_count = min(SLOW_REQUEST_TEXTS, int(config["max_batch"]))  # the largest request the model accepts

        def slow_request() -> None:
            outcome["status"], outcome["reply"] = post(f"{url}/v2/models/{name}/infer", texts_body(slow_texts(slow_count)))
            outcome["done"] = time.monotonic()

        before = preprocessed(url, name)
        client = threading.Thread(target=slow_request)
        client.start()
        deadline = time.monotonic() + 30
        while preprocessed(url, name) <= before:  # SIGTERM once the request is decoded and computing
            assert time.monotonic() < deadline and "done" not in outcome, "the slow request never reached the model"
            time.sleep(0.02)
        sigterm = time.monotonic()
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=max(1.0, terminating + grace - time.monotonic()))
        except subprocess.TimeoutExpired:
            pytest.fail(f"{name} still running {grace}s after termination began; kubelet would SIGKILL it:\n{log.read_text()[-3000:]}")
        exited = time.monotonic()
        client.join(timeout=30)
        assert outcome.get("status") == 200, f"in-flight request dropped by SIGTERM: {outcome}\n{log.read_text()[-3000:]}"
        assert outcome["done"] > sigterm, "the request finished before SIGTERM; it was not in flight (make it slower)"
        assert all(o["shape"][0] == slow_count for o in outcome["reply"]["outputs"])
        print(f"{name}: in-flight request completed {outcome['done'] - sigterm:.1f}s after SIGTERM; "
              f"exited {exited - terminating:.1f}s into a {grace}s grace period (code {process.returncode})")
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
