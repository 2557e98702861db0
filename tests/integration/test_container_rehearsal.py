"""Container rehearsal: the built image, run by podman exactly as the rendered manifests run it.

The image is built by tools/image/build.sh (what `make image` runs; layers cached, so an unchanged
tree rebuilds nothing). For every manifests/<model>.yaml, the kserve-container KServe would run
(the ServingRuntime merged with the InferenceService's model fields) is started with podman:

- the manifest's image, command (as the entrypoint), args, env (downward API resolved), user and
  group from its securityContext, no capabilities, no privilege escalation;
- a read-only root file system with only /tmp writable (readOnlyRootFilesystem);
- the model folder mounted read-only at /mnt/models, as KServe's storage initializer leaves it;
- the memory and CPU limits of the manifest (enforced by the cgroup, and the worker count
  follows the CPU limit), each declared containerPort published on a free 127.0.0.1 port.

Then, as kubelet would: the startup, readiness and liveness probes within their budgets; gRPC
live/ready; a V2 inference from tritonclient on the published HTTP port; /metrics; the preStop
hook run inside the container while it keeps serving; SIGTERM with a request in flight, which is
answered, and the container exits within terminationGracePeriodSeconds.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import time
import urllib.request
import uuid
from pathlib import Path

import numpy as np
import pytest
import yaml

from predictors.deploy.merge import effective_container, resolve_env

from ..conftest import DEMO_MODELS, free_port, free_ports, http_status
from ..rehearsal_helpers import (
    ROOT,
    RequestInFlight,
    budget,
    isvc_files,
    model_folder,
    post,
    slow_request,
    pre_stop_while_serving,
    preprocessed,
    serving_runtime,
    texts_body,
    wait_for_probe,
)

BUILD_SCRIPT = ROOT / "tools" / "image" / "build.sh"
CONTAINERS_CONF = ROOT / "tools" / "image" / "containers.conf"
BUILD_TIMEOUT_SECONDS = 3600  # a cold build installs torch; a warm one takes seconds
EMPTY_DIR_SIZE = "256m"  # a pod's emptyDir volume, as a tmpfs
#: Paths the container must not be able to write to, unless the pod mounts a volume there.
READ_ONLY_PATHS = ("/", "/app", "/opt/venv", "/mnt/models", "/home/predictors", "/tmp", "/var/tmp")


def podman_env() -> dict[str, str]:
    return {**os.environ, "CONTAINERS_CONF": os.environ.get("CONTAINERS_CONF", str(CONTAINERS_CONF))}


def podman(*args: str, timeout: float = 60, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run(["podman", *args], capture_output=True, text=True, timeout=timeout, env=podman_env())
    if check and result.returncode != 0:
        raise AssertionError(f"podman {' '.join(args)} failed ({result.returncode}):\n{result.stderr[-3000:]}")
    return result


@pytest.fixture(scope="module")
def podman_ready() -> None:
    if shutil.which("podman") is None:
        pytest.skip("podman is not installed: `make system-deps` installs podman, runc and debootstrap as root on "
                    "Debian (or apt-get install podman runc debootstrap)")
    if podman("info", check=False).returncode != 0:
        pytest.skip(f"podman cannot run containers here: {podman('info', check=False).stderr.strip()[-300:]}")


def build_image(which: str, tmp_path_factory: pytest.TempPathFactory) -> None:
    log = tmp_path_factory.mktemp("image") / f"build-{which}.log"
    started = time.monotonic()
    with log.open("w") as handle:
        result = subprocess.run(["bash", str(BUILD_SCRIPT), which], stdout=handle, stderr=subprocess.STDOUT,
                                timeout=BUILD_TIMEOUT_SECONDS, env=podman_env(), cwd=ROOT)
    assert result.returncode == 0, f"tools/image/build.sh {which} failed:\n{log.read_text()[-4000:]}"
    print(f"\nimage ({which}) built or found cached in {time.monotonic() - started:.0f}s")


@pytest.fixture(scope="module")
def image(podman_ready: None, tmp_path_factory: pytest.TempPathFactory) -> None:
    """The plain image (models from storageUri), built if its inputs changed."""
    build_image("plain", tmp_path_factory)


def memory_flag(quantity: str) -> str:
    from kubernetes.utils import parse_quantity

    return str(int(parse_quantity(quantity)))


class Container:
    """One `podman run` in the foreground, its output in a log file."""

    def __init__(self, argv: list[str], name: str, log: Path) -> None:
        self.name = name
        self.log = log
        with log.open("w") as handle:
            self.process = subprocess.Popen(["podman", *argv], stdout=handle, stderr=subprocess.STDOUT, env=podman_env())

    def exit_code(self) -> int | None:
        return self.process.poll()

    def log_tail(self) -> str:
        return self.log.read_text(errors="replace")[-3000:]

    def remove(self) -> None:
        podman("rm", "--force", "--time", "0", self.name, check=False)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def empty_dirs(container: dict, volumes: list[dict]) -> list[str]:
    """Mount paths of the container's emptyDir volumes (the only volumes a rehearsal provides)."""
    kinds = {v["name"]: v for v in volumes}
    paths = []
    for mount in container.get("volumeMounts") or []:
        volume = kinds.get(mount["name"], {})
        assert "emptyDir" in volume, f"volume {mount['name']}: only emptyDir volumes are rehearsed"
        paths.append(mount["mountPath"])
    return paths


def run_argv(container: dict, image: str, name: str, mounts: list[str], port_map: dict[int, int],
             env: dict[str, str], args: list[str] | None = None, volumes: list[dict] | None = None) -> list[str]:
    """`podman run` flags for a Kubernetes container spec, its securityContext and limits."""
    security = container.get("securityContext") or {}
    limits = (container.get("resources") or {}).get("limits") or {}
    argv = ["run", "--name", name, "--pull=never", "--init=false"]
    if "runAsUser" in security:
        argv += ["--user", f"{security['runAsUser']}:{security.get('runAsGroup', security['runAsUser'])}"]
    if "ALL" in ((security.get("capabilities") or {}).get("drop") or []):
        argv += ["--cap-drop", "ALL"]
    if security.get("allowPrivilegeEscalation") is False:
        argv += ["--security-opt", "no-new-privileges"]
    # readOnlyRootFilesystem always (the image must cope with it): only the pod's emptyDirs are writable
    argv += ["--read-only", "--read-only-tmpfs=false"]
    for path in empty_dirs(container, volumes or []):
        argv += ["--tmpfs", f"{path}:rw,size={EMPTY_DIR_SIZE},mode=1777"]
    if "memory" in limits:
        argv += ["--memory", memory_flag(limits["memory"]), "--memory-swap", memory_flag(limits["memory"])]
    if "cpu" in limits:
        argv += ["--cpus", str(float(limits["cpu"]))]
    for mount in mounts:
        argv += ["--volume", mount]
    for container_port, host_port in port_map.items():
        argv += ["--publish", f"127.0.0.1:{host_port}:{container_port}"]
    for key, value in env.items():
        argv += ["--env", f"{key}={value}"]
    if container.get("command"):
        argv += ["--entrypoint", json.dumps(container["command"])]
    return argv + [image, *(container.get("args") or [] if args is None else args)]


def tritonclient_infer(url: str, name: str, texts: list[str]) -> dict[str, np.ndarray]:
    import tritonclient.http as httpclient

    client = httpclient.InferenceServerClient(url.removeprefix("http://"), network_timeout=120)
    try:
        text = httpclient.InferInput("text", [len(texts)], "BYTES")
        text.set_data_from_numpy(np.array([t.encode() for t in texts], dtype=np.object_), binary_data=True)
        result = client.infer(name, [text])
        return {o["name"]: result.as_numpy(o["name"]) for o in result.get_response()["outputs"]}
    finally:
        client.close()


def grpc_live_and_ready(address: str, name: str) -> bool:
    # kserve's gRPC client: tritonclient.grpc can't share a process with kserve (protobuf clash)
    import asyncio

    from kserve import InferenceGRPCClient

    async def check() -> bool:
        client = InferenceGRPCClient(address, timeout=30)
        try:
            return await client.is_server_live() and await client.is_model_ready(name)
        finally:
            await client.close()

    return asyncio.run(check())


@pytest.mark.parametrize("manifest", isvc_files(), ids=lambda p: p.stem)
def test_container_rehearsal(manifest: Path, image: None, tmp_path: Path):
    isvc = yaml.safe_load(manifest.read_text())
    name = isvc["metadata"]["name"]
    predictor = isvc["spec"]["predictor"]
    container = effective_container(isvc, serving_runtime(predictor["model"]["runtime"]))
    folder = model_folder(isvc)
    config_user = podman("image", "inspect", "--format", "{{.Config.User}}", container["image"]).stdout.strip()
    assert config_user and config_user.split(":")[0] not in ("0", "root"), f"image USER {config_user!r}: not non-root"

    declared = {p["name"]: p["containerPort"] for p in container["ports"]}
    port_map = dict(zip(declared.values(), free_ports(len(declared))))
    env = resolve_env(container, pod_name=f"{name}-predictor-rehearsal")
    container_name = f"predictors-rehearsal-{name}-{uuid.uuid4().hex[:8]}"
    volumes = predictor.get("volumes") or []
    argv = run_argv(container, container["image"], container_name, [f"{folder.resolve()}:/mnt/models:ro"], port_map,
                    env, volumes=volumes)
    running = Container(argv, container_name, tmp_path / "container.log")
    try:
        # -- start-up: the startupProbe gates the others --------------------------------------
        startup = wait_for_probe(container["startupProbe"], port_map, running.exit_code, running.log_tail,
                                 f"{name} startupProbe")
        readiness = wait_for_probe(container["readinessProbe"], port_map, running.exit_code, running.log_tail,
                                   f"{name} readinessProbe")
        liveness = wait_for_probe(container["livenessProbe"], port_map, running.exit_code, running.log_tail,
                                  f"{name} livenessProbe")
        print(f"\n{name} (container): startupProbe ok after {startup:.1f}s of {budget(container['startupProbe']):.0f}s; "
              f"readiness {readiness:.2f}s, liveness {liveness:.2f}s")

        # -- what runs in there: the manifest's user, its limits, nothing writable but /tmp ----
        state = json.loads(podman("inspect", container_name).stdout)[0]
        assert state["Config"]["User"] == f"{container['securityContext']['runAsUser']}:{container['securityContext']['runAsGroup']}"
        assert state["HostConfig"]["ReadonlyRootfs"] is True
        probe = podman("exec", container_name, "python", "-c",
                       "import os, sys\n"
                       "print(os.getuid(), os.getgid())\n"
                       "for path in sys.argv[1:]:\n"
                       "    try:\n"
                       "        open(os.path.join(path, '.write-probe'), 'w').close()\n"
                       "        print('writable', path)\n"
                       "    except OSError:\n"
                       "        pass\n", *READ_ONLY_PATHS).stdout.split("\n")
        uid, gid = probe[0].split()
        assert (int(uid), int(gid)) == (container["securityContext"]["runAsUser"], container["securityContext"]["runAsGroup"])
        writable = {line.split(" ", 1)[1] for line in probe if line.startswith("writable")}
        assert writable == set(empty_dirs(container, volumes)) & set(READ_ONLY_PATHS), f"writable: {writable}"

        limits = container["resources"]["limits"]
        assert state["HostConfig"]["Memory"] == int(memory_flag(limits["memory"]))
        assert state["HostConfig"]["NanoCpus"] == int(float(limits["cpu"]) * 1e9)

        # -- every declared port serves what its name says ------------------------------------
        url = f"http://127.0.0.1:{port_map[declared['http']]}"
        assert grpc_live_and_ready(f"127.0.0.1:{port_map[declared['grpc']]}", name)
        outputs = tritonclient_infer(url, name, ["A first text to serve.", "And a second one."])
        assert outputs and all(len(value) == 2 for value in outputs.values()), outputs
        model_config = json.loads(urllib.request.urlopen(f"{url}/v2/models/{name}/config", timeout=10).read())
        cpu_limit = math.ceil(float(limits["cpu"]))
        assert env["PREDICTORS_WORKERS"] == str(cpu_limit)
        assert model_config["workers"] == cpu_limit, f"{model_config['workers']} workers for a cpu limit of {cpu_limit}"
        assert preprocessed(url, name) >= 1, "/metrics does not count the request just served"

        # -- termination: preStop inside the container, then SIGTERM with a request in flight ---
        grace = predictor["terminationGracePeriodSeconds"]
        hook = container["lifecycle"]["preStop"]["exec"]["command"]
        terminating = time.monotonic()
        pre_stop_while_serving(["podman", "exec", container_name, *hook], url, name, grace, env=podman_env())
        in_flight = RequestInFlight(url, name, *slow_request(model_config)).start()
        sigterm = time.monotonic()
        podman("kill", "--signal", "TERM", container_name)
        try:
            running.process.wait(timeout=max(1.0, terminating + grace - time.monotonic()))
        except subprocess.TimeoutExpired:
            pytest.fail(f"{name} still running {grace}s after termination began; kubelet would SIGKILL it:\n"
                        f"{running.log_tail()}")
        exited = time.monotonic()
        answered = in_flight.check_answered(sigterm, running.log_tail())
        exit_code = podman("inspect", "--format", "{{.State.ExitCode}}", container_name).stdout.strip()
        assert exit_code == "0", f"exit code {exit_code} after SIGTERM:\n{running.log_tail()}"
        print(f"{name} (container): in-flight request answered {answered:.1f}s after SIGTERM; "
              f"exited {exited - terminating:.1f}s into a {grace}s grace period")
    finally:
        running.remove()


def test_demo_image_serves_its_baked_models(podman_ready: None, tmp_path_factory: pytest.TempPathFactory,
                                            tmp_path: Path):
    """predictors:demo with no arguments serves every baked demo model, as non-root, read-only."""
    missing = [m for m in DEMO_MODELS if not (ROOT / "models" / m / "build_info.json").is_file()]
    if missing:
        pytest.fail(f"demo models not built: {missing}; run `make models` (make test does it)")
    build_image("demo", tmp_path_factory)
    runtime = serving_runtime("predictors")
    container = next(c for c in runtime["spec"]["containers"] if c["name"] == "kserve-container")
    port_map = {8080: free_port()}
    name = f"predictors-rehearsal-demo-{uuid.uuid4().hex[:8]}"
    demo = {**container, "command": None, "args": None, "resources": {}}
    argv = run_argv(demo, "predictors:demo", name, [], port_map, {}, args=[])
    running = Container(argv, name, tmp_path / "demo.log")
    try:
        url = f"http://127.0.0.1:{port_map[8080]}"
        deadline = time.monotonic() + 180
        while http_status(f"{url}/v2/health/ready") != 200:
            assert running.exit_code() is None, f"predictors:demo exited:\n{running.log_tail()}"
            assert time.monotonic() < deadline, f"predictors:demo not ready after 180s:\n{running.log_tail()}"
            time.sleep(0.5)
        for model in DEMO_MODELS:
            assert http_status(f"{url}/v2/models/{model}/ready") == 200, model
        status, reply = post(f"{url}/v2/models/news-topic/infer", texts_body(["The striker scored twice in the final."]))
        assert status == 200 and reply["outputs"], reply
    finally:
        running.remove()
