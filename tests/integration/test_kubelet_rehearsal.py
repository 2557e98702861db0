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
  the process exits within terminationGracePeriodSeconds of the start of termination. The drain
  the server is given (PREDICTORS_DRAIN_SECONDS) is the grace period minus the preStop sleep.
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest
import yaml

from predictors.deploy.merge import effective_container, local_command, local_port_map, resolve_env
from predictors.deploy.runtime import DEFAULT_DRAIN_SECONDS, DRAIN_ENV
from tests.helpers import linked_model_folder
from tests.rehearsal_helpers import (
    MANIFESTS_DIR, MODELS_DIR, ROOT, RequestInFlight, budget, isvc_files, model_folder, post, pre_stop_while_serving,
    serving_runtime, slow_request, texts_body, wait_for_probe,
)
from tests.unit.deploy.dockerfile_parser import parse


def container_env(container: dict, pod_name: str) -> dict[str, str]:
    """Image ENV (Dockerfile final stage) + the container's env; PATH (and PYTHONPATH, where a
    checkout runs its own tree without installing it) stay this machine's."""
    env = {k: os.environ[k] for k in ("PATH", "PYTHONPATH", "LANG", "TMPDIR", "SYSTEMROOT") if k in os.environ}
    image_env = parse(ROOT / "Dockerfile").final.env()
    image_env.pop("PATH", None)
    env.update(image_env)
    env.update(resolve_env(container, pod_name=pod_name))
    return env


@pytest.mark.parametrize("manifest", isvc_files(), ids=lambda p: p.stem)
def test_kubelet_rehearsal(manifest: Path, tmp_path: Path):
    isvc = yaml.safe_load(manifest.read_text())
    name = isvc["metadata"]["name"]
    annotations = isvc["metadata"].get("annotations") or {}
    predictor = isvc["spec"]["predictor"]
    model = predictor["model"]
    container = effective_container(isvc, serving_runtime(model["runtime"]))
    folder = model_folder(isvc)

    declared = {p["name"]: p["containerPort"] for p in container["ports"]}
    port_map = local_port_map(container)
    argv = local_command(container, folder, port_map)
    env = container_env(container, pod_name=f"{name}-predictor-rehearsal")
    log = tmp_path / "container.log"
    workdir = tmp_path / "workdir"  # not the repository: the container sees only /mnt/models
    workdir.mkdir()
    with log.open("w") as handle:
        process = subprocess.Popen(argv, cwd=workdir, env=env, stdout=handle, stderr=subprocess.STDOUT)
    try:
        # -- start-up: startupProbe gates the others ------------------------------------------
        exit_code, log_tail = process.poll, lambda: log.read_text()[-3000:]
        startup = wait_for_probe(container["startupProbe"], port_map, exit_code, log_tail, f"{name} startupProbe")
        readiness = wait_for_probe(container["readinessProbe"], port_map, exit_code, log_tail, f"{name} readinessProbe")
        liveness = wait_for_probe(container["livenessProbe"], port_map, exit_code, log_tail, f"{name} livenessProbe")
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
        # the server bounds its drain by what is left of the grace period after the preStop sleep
        drain = int(env.get(DRAIN_ENV, DEFAULT_DRAIN_SECONDS))
        assert drain == grace - int(hook[-1]), f"{DRAIN_ENV}={drain} is not terminationGracePeriodSeconds - preStop"
        terminating = time.monotonic()
        pre_stop_while_serving(hook, url, name, grace)

        in_flight = RequestInFlight(url, name, *slow_request(config)).start()  # SIGTERM once it is computing
        sigterm = time.monotonic()
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=max(1.0, terminating + grace - time.monotonic()))
        except subprocess.TimeoutExpired:
            pytest.fail(f"{name} still running {grace}s after termination began; kubelet would SIGKILL it:\n{log.read_text()[-3000:]}")
        exited = time.monotonic()
        answered = in_flight.check_answered(sigterm, log.read_text()[-3000:])
        print(f"{name}: in-flight request completed {answered:.2f}s after SIGTERM; "
              f"exited {exited - terminating:.1f}s into a {grace}s grace period (code {process.returncode})")
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_the_multi_model_example_serves_twelve_models_from_a_pod_sized_for_fewer(tmp_path: Path):
    """examples/multi-model.yaml's container as written (its runtime, --models-dir /mnt/models, the
    budget from limits.memory through the Downward API), on a folder of 12 models, with a memory
    limit lowered to about four of them: ready at once, every model answers, the least recently used
    idle ones are evicted, and no request fails."""
    runtime, isvc = yaml.safe_load_all((MANIFESTS_DIR / "examples" / "multi-model.yaml").read_text())
    isvc["spec"]["predictor"]["model"]["resources"]["limits"]["memory"] = "600Mi"  # a pod sized for about four
    isvc["spec"]["predictor"]["model"]["resources"]["requests"]["memory"] = "600Mi"
    container = effective_container(isvc, runtime)
    folder = tmp_path / "mnt-models"  # what the storage initializer puts at /mnt/models from the one prefix
    names = [f"{source}-{i}" for source in ("review-sentiment", "news-topic", "pii-ner") for i in range(1, 5)]
    for name in names:
        source = MODELS_DIR / name.rsplit("-", 1)[0]
        if not (source / "config.json").is_file():
            pytest.fail(f"demo model {source.name} is not built; run `make models`")
        linked_model_folder(source, folder / name)
    port_map = local_port_map(container)
    env = container_env(container, pod_name="text-models-predictor-rehearsal")
    assert env["PREDICTORS_MODEL_MEMORY"] == str(600 * 2**20) and env["PREDICTORS_LOADING"] == "lazy"
    log = tmp_path / "container.log"
    workdir = tmp_path / "workdir"
    workdir.mkdir()
    with log.open("w") as handle:
        process = subprocess.Popen(local_command(container, folder, port_map), cwd=workdir, env=env, stdout=handle,
                                   stderr=subprocess.STDOUT)
    try:
        exit_code, log_tail = process.poll, lambda: log.read_text()[-3000:]
        wait_for_probe(container["startupProbe"], port_map, exit_code, log_tail, "text-models startupProbe")
        wait_for_probe(container["readinessProbe"], port_map, exit_code, log_tail, "text-models readinessProbe")
        url = f"http://127.0.0.1:{port_map[8080]}"
        failures = []
        for name in names + names:  # every model twice, in turn: each turn evicts the least recently used
            status, reply = post(f"{url}/v2/models/{name}/infer", texts_body(["A text for the model."]))
            if status != 200:
                failures.append((name, status, reply))
        assert failures == []
        memory = json.loads(urllib.request.urlopen(f"{url}/v2/repository/memory", timeout=10).read())
        assert memory["budget_bytes"] == 600 * 2**20 and len(memory["models"]) < len(names)
        metrics = urllib.request.urlopen(f"{url}/metrics", timeout=10).read().decode()
        evicted = sum(float(line.rsplit(" ", 1)[1]) for line in metrics.splitlines()
                      if line.startswith("predictors_model_evictions_total{") and 'reason="budget"' in line)
        assert evicted >= len(names) - len(memory["models"])
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=isvc["spec"]["predictor"]["terminationGracePeriodSeconds"])
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
