"""Kubernetes manifests rendered from the model configs: one InferenceService per model, the
ServingRuntime they share, and a kustomization.

The numbers come from the same `ModelConfig` the server reads (`models/<name>/predictor.yaml`):
batch_size / max_batch / task from the model config, and from its `deploy:` section the values
measured by `tools/measure_deploy.py` (`startup_seconds`: process start to ready in container mode;
`peak_rss_mib`: peak resident memory under load) plus optional overrides. The rules turning
measurements into probes and resources are here, in one place:

- startupProbe on /v2/models/<name>/ready, budget (periodSeconds x failureThreshold) =
  max(STARTUP_MIN_SECONDS, 3 x measured startup + 30 s): a cold node with a slower CPU still fits.
- memory request = 1.25 x measured peak RSS, limit = max(1.5 x peak, peak + 256 Mi), in 64 Mi steps.
- cpu request = limit (a whole number of CPUs, default 2). The server runs one inference worker per
  CPU (PREDICTORS_WORKERS, from the cpu limit through the downward API) and each worker's backend
  uses one intra-op thread (OMP_NUM_THREADS=1, MKL_NUM_THREADS=1, no tokenizer thread pool), so the
  pod's compute threads equal its cpu limit.

Why a ServingRuntime + storageUri instead of a custom `kserve-container` per InferenceService: the
image, command, args, ports, security context and shutdown hook are written once and shared by
every model, the args are KServe's own `{{.Name}}` template (so they cannot drift from the
InferenceService name), and `storageUri` is first-class: KServe's storage initializer (or a PVC
mount) puts the model folder at /mnt/models. Each InferenceService carries only what differs per
model: storageUri, resources, thread env, probes and autoscaling.

KServe merges the InferenceService's `model` container fields into the runtime's
`kserve-container` (strategic merge: env by name, ports by containerPort, args appended) and then
replaces the `{{.Name}}`-style placeholders; `merge_runtime_container` does the same so the
validator and the kubelet rehearsal see the container the pod will really run.
"""

from __future__ import annotations

import copy
import math
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from .. import __version__
from ..model import ModelConfig, ModelConfigError
from ..tasks import discover_models

# ---- fixed facts of the runtime ------------------------------------------------------------------
RUNTIME_NAME = "predictors"
MODEL_FORMAT = "predictors"
MODEL_FORMAT_VERSION = "1"
CONTAINER_NAME = "kserve-container"  # the name KServe merges the InferenceService's model into
IMAGE = "predictors"
IMAGE_TAG = __version__
HTTP_PORT = 8080
GRPC_PORT = 8081
MODEL_DIR = "/mnt/models"  # where KServe's storage initializer puts storageUri
COMMAND = ["python", "-m", "predictors"]  # the Dockerfile's ENTRYPOINT, written out
RUN_AS_USER = 1000  # the Dockerfile's USER
PRESTOP_SECONDS = 5  # keep serving while the endpoints controller removes the pod
KSERVE_DRAIN_SECONDS = 30  # kserve.ModelServer's grace period for in-flight requests
PROMETHEUS_PATH = "/metrics"

RUNTIME_FILE = "servingruntime.yaml"
KUSTOMIZATION_FILE = "kustomization.yaml"
HEADER = "# Rendered by tools/render_manifests.py from {source}. Do not edit: change the source and re-render.\n"

# ---- sizing rules ----------------------------------------------------------------------------------
STARTUP_PERIOD_SECONDS = 5
STARTUP_MIN_SECONDS = 60
STARTUP_FACTOR = 3.0
STARTUP_EXTRA_SECONDS = 30
MEMORY_REQUEST_FACTOR = 1.25
MEMORY_LIMIT_FACTOR = 1.5
MEMORY_LIMIT_MIN_HEADROOM_MIB = 256
MEMORY_STEP_MIB = 64

# Defaults for every model; a model's predictor.yaml `deploy:` section may override each key.
DEFAULTS: dict[str, Any] = {
    "cpu": 2,
    "min_replicas": 1,
    "max_replicas": 3,
    "scale_metric": "cpu",
    "scale_target": 70,
    "storage_prefix": "pvc://text-models",
    "termination_grace_seconds": PRESTOP_SECONDS + KSERVE_DRAIN_SECONDS + 25,
}
MEASURED_KEYS = ("startup_seconds", "peak_rss_mib")
DEPLOY_KEYS = {
    # measured by tools/measure_deploy.py
    "startup_seconds": "number",
    "peak_rss_mib": "number",
    "measured": "string",
    # overrides
    "cpu": "integer",
    "memory_request": "quantity",
    "memory_limit": "quantity",
    "startup_budget_seconds": "integer",
    "min_replicas": "integer",
    "max_replicas": "integer",
    "scale_metric": "string",
    "scale_target": "integer",
    "storage_uri": "string",
    "storage_prefix": "string",
    "termination_grace_seconds": "integer",
}


PREDICTOR_FILE_COMMENT = (
    "Kubernetes sizing for manifests/ (rules: predictors/deploy.py). startup_seconds and peak_rss_mib\n"
    "are measured by `tools/measure_deploy.py --write`; other keys override the defaults there."
)


class DeployConfigError(ModelConfigError):
    """A `deploy:` section that cannot be rendered; the message names the model and the key."""


@dataclass(frozen=True)
class DeploySettings:
    name: str
    task: str
    version: str
    batch_size: int
    max_batch: int
    max_length: int
    startup_seconds: float
    peak_rss_mib: float
    cpu: int
    memory_request: str
    memory_limit: str
    startup_budget_seconds: int
    min_replicas: int
    max_replicas: int
    scale_metric: str
    scale_target: int
    storage_uri: str
    termination_grace_seconds: int


def _ceil_to(value: float, step: int) -> int:
    return int(math.ceil(value / step) * step)


def memory_for(peak_rss_mib: float) -> tuple[str, str]:
    """(request, limit) for a measured peak RSS, as Kubernetes quantity strings."""
    request = _ceil_to(peak_rss_mib * MEMORY_REQUEST_FACTOR, MEMORY_STEP_MIB)
    limit = _ceil_to(max(peak_rss_mib * MEMORY_LIMIT_FACTOR, peak_rss_mib + MEMORY_LIMIT_MIN_HEADROOM_MIB), MEMORY_STEP_MIB)
    return f"{request}Mi", f"{limit}Mi"


def startup_budget_for(startup_seconds: float) -> int:
    """Seconds the startupProbe allows: the measured start-to-ready time plus a generous margin."""
    budget = max(STARTUP_MIN_SECONDS, STARTUP_FACTOR * startup_seconds + STARTUP_EXTRA_SECONDS)
    return _ceil_to(budget, STARTUP_PERIOD_SECONDS)


def _checked(name: str, source: str, key: str, value: Any, kind: str) -> Any:
    ok = {
        "number": isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0,
        "integer": isinstance(value, int) and not isinstance(value, bool) and value >= 0,
        "string": isinstance(value, str) and bool(value),
        "quantity": isinstance(value, str) and bool(re.fullmatch(r"\d+(\.\d+)?(Ki|Mi|Gi|Ti|k|M|G|T)?", value)),
    }[kind]
    if not ok:
        wanted = {"number": "a positive number", "integer": "a non-negative integer", "string": "a non-empty string",
                  "quantity": "a quantity string such as \"1536Mi\""}[kind]
        raise DeployConfigError(f"model '{name}': deploy.{key} in {source} must be {wanted}, got {value!r}")
    return value


def deploy_settings(config: ModelConfig) -> DeploySettings:
    """The resolved deployment numbers of one model: defaults, then its `deploy:` section."""
    source = str(config.path / "predictor.yaml")
    deploy = dict(config.deploy or {})
    unknown = sorted(set(deploy) - set(DEPLOY_KEYS))
    if unknown:
        raise DeployConfigError(
            f"model '{config.name}': unknown key(s) {unknown} in the deploy section of {source}; "
            f"known keys: {sorted(DEPLOY_KEYS)}"
        )
    missing = [k for k in MEASURED_KEYS if k not in deploy]
    if missing:
        raise DeployConfigError(
            f"model '{config.name}': deploy.{missing[0]} is missing in {source}; measure it with "
            f"`python tools/measure_deploy.py --only {config.name} --write`"
        )
    values = {**DEFAULTS, **deploy}
    for key, value in values.items():
        _checked(config.name, source, key, value, DEPLOY_KEYS[key])
    if values["cpu"] < 1:
        raise DeployConfigError(f"model '{config.name}': deploy.cpu in {source} must be at least 1")
    if values["min_replicas"] > values["max_replicas"]:
        raise DeployConfigError(f"model '{config.name}': deploy.min_replicas > max_replicas in {source}")
    if values["scale_metric"] not in ("cpu", "memory"):
        raise DeployConfigError(f"model '{config.name}': deploy.scale_metric in {source} must be cpu or memory")
    if values["scale_metric"] == "cpu" and not 1 <= values["scale_target"] <= 100:
        raise DeployConfigError(f"model '{config.name}': deploy.scale_target in {source} must be a percentage 1..100")
    request, limit = memory_for(float(values["peak_rss_mib"]))
    return DeploySettings(
        name=config.name,
        task=config.task,
        version=config.version,
        batch_size=config.batch_size,
        max_batch=config.max_batch,
        max_length=config.max_length,
        startup_seconds=float(values["startup_seconds"]),
        peak_rss_mib=float(values["peak_rss_mib"]),
        cpu=int(values["cpu"]),
        memory_request=values.get("memory_request", request),
        memory_limit=values.get("memory_limit", limit),
        startup_budget_seconds=int(values.get("startup_budget_seconds") or startup_budget_for(float(values["startup_seconds"]))),
        min_replicas=int(values["min_replicas"]),
        max_replicas=int(values["max_replicas"]),
        scale_metric=values["scale_metric"],
        scale_target=int(values["scale_target"]),
        storage_uri=values.get("storage_uri") or f"{values['storage_prefix'].rstrip('/')}/{config.name}",
        termination_grace_seconds=int(values["termination_grace_seconds"]),
    )


# ---- documents ------------------------------------------------------------------------------------
def thread_env() -> list[dict[str, Any]]:
    """Thread settings tied to the cpu limit: one worker per CPU, one intra-op thread per worker."""
    return [
        {"name": "PREDICTORS_WORKERS", "valueFrom": {"resourceFieldRef": {
            "containerName": CONTAINER_NAME, "resource": "limits.cpu", "divisor": "1"}}},
        {"name": "OMP_NUM_THREADS", "value": "1"},
        {"name": "MKL_NUM_THREADS", "value": "1"},
        {"name": "TOKENIZERS_PARALLELISM", "value": "false"},
    ]


def runtime_container(image: str = f"{IMAGE}:{IMAGE_TAG}") -> dict[str, Any]:
    return {
        "name": CONTAINER_NAME,
        "image": image,
        "imagePullPolicy": "IfNotPresent",
        "command": list(COMMAND),
        # Exactly `python -m predictors` container mode; {{.Name}} is the InferenceService name.
        "args": [
            "--model_name", "{{.Name}}",
            "--model_dir", MODEL_DIR,
            "--http_port", str(HTTP_PORT),
            "--grpc_port", str(GRPC_PORT),
        ],
        "ports": [
            {"name": "http", "containerPort": HTTP_PORT, "protocol": "TCP"},
            {"name": "grpc", "containerPort": GRPC_PORT, "protocol": "TCP"},
        ],
        "env": [
            {"name": "HF_HUB_OFFLINE", "value": "1"},
            {"name": "TRANSFORMERS_OFFLINE", "value": "1"},
        ],
        "lifecycle": {"preStop": {"exec": {"command": ["sleep", str(PRESTOP_SECONDS)]}}},
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": RUN_AS_USER,
            "runAsGroup": RUN_AS_USER,
            "allowPrivilegeEscalation": False,
            "capabilities": {"drop": ["ALL"]},
            "seccompProfile": {"type": "RuntimeDefault"},
        },
    }


def render_runtime(image: str = f"{IMAGE}:{IMAGE_TAG}") -> dict[str, Any]:
    return {
        "apiVersion": "serving.kserve.io/v1alpha1",
        "kind": "ServingRuntime",
        "metadata": {
            "name": RUNTIME_NAME,
            "labels": {"app.kubernetes.io/name": RUNTIME_NAME, "app.kubernetes.io/part-of": "predictors"},
        },
        "spec": {
            "annotations": {
                "prometheus.kserve.io/port": str(HTTP_PORT),
                "prometheus.kserve.io/path": PROMETHEUS_PATH,
            },
            "supportedModelFormats": [
                {"name": MODEL_FORMAT, "version": MODEL_FORMAT_VERSION, "autoSelect": True, "priority": 1},
            ],
            "protocolVersions": ["v2", "grpc-v2"],
            "containers": [runtime_container(image)],
        },
    }


def _probes(name: str, settings: DeploySettings) -> dict[str, Any]:
    ready = {"path": f"/v2/models/{name}/ready", "port": HTTP_PORT, "scheme": "HTTP"}
    return {
        # Gates the other two while the model loads; restarts a container that never gets ready.
        "startupProbe": {
            "httpGet": dict(ready),
            "initialDelaySeconds": 0,
            "periodSeconds": STARTUP_PERIOD_SECONDS,
            "timeoutSeconds": 3,
            "successThreshold": 1,
            "failureThreshold": settings.startup_budget_seconds // STARTUP_PERIOD_SECONDS,
        },
        "readinessProbe": {
            "httpGet": dict(ready),
            "initialDelaySeconds": 0,
            "periodSeconds": 5,
            "timeoutSeconds": 3,
            "successThreshold": 1,
            "failureThreshold": 3,
        },
        "livenessProbe": {
            "httpGet": {"path": "/v2/health/live", "port": HTTP_PORT, "scheme": "HTTP"},
            "initialDelaySeconds": 0,
            "periodSeconds": 10,
            "timeoutSeconds": 5,
            "successThreshold": 1,
            "failureThreshold": 3,
        },
    }


def render_inference_service(config: ModelConfig) -> dict[str, Any]:
    s = deploy_settings(config)
    name = config.name
    cpu = str(s.cpu)
    return {
        "apiVersion": "serving.kserve.io/v1beta1",
        "kind": "InferenceService",
        "metadata": {
            "name": name,
            "labels": {"app.kubernetes.io/name": name, "app.kubernetes.io/part-of": "predictors"},
            "annotations": {
                # Plain Deployment + Service + HPA: allows startupProbe, two ports, cpu autoscaling.
                "serving.kserve.io/deploymentMode": "Standard",
                "serving.kserve.io/autoscalerClass": "hpa",
                "serving.kserve.io/enable-prometheus-scraping": "true",
                "predictors/task": s.task,
                "predictors/model-version": s.version,
                "predictors/batch-size": str(s.batch_size),
                "predictors/max-batch": str(s.max_batch),
                "predictors/max-length": str(s.max_length),
                "predictors/measured-startup-seconds": f"{s.startup_seconds:g}",
                "predictors/measured-peak-rss": f"{math.ceil(s.peak_rss_mib)}Mi",
            },
        },
        "spec": {
            "predictor": {
                "minReplicas": s.min_replicas,
                "maxReplicas": s.max_replicas,
                "scaleMetric": s.scale_metric,
                "scaleTarget": s.scale_target,
                "terminationGracePeriodSeconds": s.termination_grace_seconds,
                "model": {
                    "modelFormat": {"name": MODEL_FORMAT, "version": MODEL_FORMAT_VERSION},
                    "runtime": RUNTIME_NAME,
                    "protocolVersion": "v2",
                    "storageUri": s.storage_uri,
                    "env": thread_env(),
                    "resources": {
                        "requests": {"cpu": cpu, "memory": s.memory_request},
                        "limits": {"cpu": cpu, "memory": s.memory_limit},
                    },
                    **_probes(name, s),
                },
            },
        },
    }


def render_kustomization(model_files: list[str]) -> dict[str, Any]:
    return {
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        "resources": [RUNTIME_FILE, *model_files],
        # `kustomize edit set image predictors=REGISTRY/predictors:TAG` points every model at your image.
        "images": [{"name": IMAGE, "newName": IMAGE, "newTag": IMAGE_TAG}],
    }


def to_yaml(document: dict[str, Any]) -> str:
    return yaml.safe_dump(document, sort_keys=False, default_flow_style=False, width=120, allow_unicode=True)


def render_all(models_dir: Path | str) -> dict[str, str]:
    """file name -> text of every manifest; raises ModelConfigError naming a broken model."""
    models_dir = Path(models_dir)
    configs, errors = discover_models(models_dir)
    if errors:
        name, message = sorted(errors.items())[0]
        raise ModelConfigError(message)
    if not configs:
        raise ModelConfigError(f"no models in {models_dir}")
    files: dict[str, str] = {}
    for config in configs:
        source = f"models/{config.name}/predictor.yaml"
        files[f"{config.name}.yaml"] = HEADER.format(source=source) + to_yaml(render_inference_service(config))
    files[RUNTIME_FILE] = HEADER.format(source="predictors/deploy.py") + to_yaml(render_runtime())
    model_files = [f"{c.name}.yaml" for c in configs]
    files[KUSTOMIZATION_FILE] = HEADER.format(source="predictors/deploy.py") + to_yaml(render_kustomization(model_files))
    return files


# ---- what KServe does with them -----------------------------------------------------------------
# ModelSpec fields that are not container fields (KServe keeps them out of the merge).
MODEL_ONLY_FIELDS = {"modelFormat", "runtime", "runtimeVersion", "protocolVersion", "storageUri", "storage", "confidential"}
LIST_MERGE_KEYS = {"env": "name", "ports": "containerPort", "volumeMounts": "mountPath", "volumeDevices": "devicePath"}


def _strategic_merge(base: Any, patch: Any, key: str | None = None) -> Any:
    if isinstance(base, dict) and isinstance(patch, dict):
        merged = dict(base)
        for k, v in patch.items():
            merged[k] = _strategic_merge(base[k], v, k) if k in base else copy.deepcopy(v)
        return merged
    if isinstance(base, list) and isinstance(patch, list) and key in LIST_MERGE_KEYS:
        merge_key = LIST_MERGE_KEYS[key]
        merged_list = [copy.deepcopy(item) for item in base]
        index = {item.get(merge_key): i for i, item in enumerate(merged_list) if isinstance(item, dict)}
        for item in patch:
            if isinstance(item, dict) and item.get(merge_key) in index:
                i = index[item.get(merge_key)]
                merged_list[i] = _strategic_merge(merged_list[i], item)
            else:
                merged_list.append(copy.deepcopy(item))
        return merged_list
    return copy.deepcopy(patch)


_PLACEHOLDER = re.compile(r"\{\{(.*?)\}\}")


def replace_placeholders(value: Any, metadata: dict[str, Any]) -> Any:
    """KServe's runtime templating: {{.Name}}, {{.Namespace}}, {{.Labels.x}}, {{index .Annotations "k"}}."""
    if isinstance(value, dict):
        return {k: replace_placeholders(v, metadata) for k, v in value.items()}
    if isinstance(value, list):
        return [replace_placeholders(v, metadata) for v in value]
    if not isinstance(value, str) or "{{" not in value:
        return value

    def one(match: re.Match) -> str:
        expr = match.group(1).strip()
        if expr == ".Name":
            return str(metadata.get("name", ""))
        if expr == ".Namespace":
            return str(metadata.get("namespace") or "default")
        dotted = re.fullmatch(r"\.(Labels|Annotations)\.([A-Za-z0-9_]+)", expr)
        indexed = re.fullmatch(r'index \.(Labels|Annotations) "([^"]+)"', expr)
        found = dotted or indexed
        if found:
            mapping = metadata.get(found.group(1).lower()) or {}
            return str(mapping.get(found.group(2), ""))
        raise ValueError(f"unsupported placeholder {match.group(0)!r}")

    return _PLACEHOLDER.sub(one, value)


def merge_runtime_container(runtime: dict[str, Any], model: dict[str, Any],
                            metadata: dict[str, Any] | None = None) -> dict[str, Any]:
    """The container KServe runs for an InferenceService `model` on `runtime`.

    Strategic merge of the model's container fields into the runtime's kserve-container (env by
    name, ports by containerPort, maps merged key by key), args appended to the runtime's, then the
    placeholders replaced from the InferenceService metadata (when given).
    """
    containers = (runtime.get("spec") or {}).get("containers") or []
    base = next((c for c in containers if isinstance(c, dict) and c.get("name") == CONTAINER_NAME), None)
    if base is None:
        raise ValueError(f"runtime {runtime.get('metadata', {}).get('name')!r} has no container named {CONTAINER_NAME!r}")
    overlay = {k: v for k, v in model.items() if k not in MODEL_ONLY_FIELDS}
    args = list(base.get("args") or []) + list(overlay.pop("args", None) or [])
    merged = _strategic_merge(base, overlay)
    if args:
        merged["args"] = args
    return replace_placeholders(merged, metadata) if metadata is not None else merged


def effective_container(isvc: dict[str, Any], runtime: dict[str, Any]) -> dict[str, Any]:
    """The kserve-container of an InferenceService's predictor pod, placeholders replaced."""
    model = isvc["spec"]["predictor"]["model"]
    return merge_runtime_container(runtime, model, isvc.get("metadata") or {})


# ---- running a rendered container here (measure_deploy, the kubelet rehearsal) -------------------
def resolve_env(container: dict[str, Any], pod_name: str = "local", namespace: str = "default") -> dict[str, str]:
    """The container's env as kubelet would set it (downward API resolved); secrets are refused."""
    from kubernetes.utils import parse_quantity

    env: dict[str, str] = {}
    resources = container.get("resources") or {}
    for item in container.get("env") or []:
        name = item["name"]
        if "value" in item:
            env[name] = re.sub(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)", lambda m: env.get(m.group(1), m.group(0)), str(item["value"]))
            continue
        source = item.get("valueFrom") or {}
        if "resourceFieldRef" in source:
            ref = source["resourceFieldRef"]
            section, _, resource = ref["resource"].partition(".")
            raw = (resources.get(section) or {}).get(resource)
            if raw is None:
                raise ValueError(f"env {name}: {ref['resource']} is not set on the container")
            divisor = parse_quantity(ref.get("divisor", "1"))
            env[name] = str(math.ceil(parse_quantity(raw) / divisor))
        elif "fieldRef" in source:
            field = source["fieldRef"]["fieldPath"]
            env[name] = {"metadata.name": pod_name, "metadata.namespace": namespace,
                         "status.podIP": "127.0.0.1", "spec.nodeName": "localhost"}.get(field, "")
        else:
            raise ValueError(f"env {name}: only value, resourceFieldRef and fieldRef can be resolved locally")
    return env


def localize_args(args: list[str], model_folder: Path, port_map: dict[int, int]) -> list[str]:
    """Map /mnt/models to a local folder and each declared containerPort to a local port."""
    out = []
    for arg in args:
        if arg == MODEL_DIR or arg.startswith(MODEL_DIR + "/"):
            arg = str(model_folder) + arg[len(MODEL_DIR):]
        elif arg.isdigit() and int(arg) in port_map:
            arg = str(port_map[int(arg)])
        else:
            flag, eq, value = arg.partition("=")
            if eq and value.isdigit() and int(value) in port_map:
                arg = f"{flag}={port_map[int(value)]}"
            elif eq and (value == MODEL_DIR or value.startswith(MODEL_DIR + "/")):
                arg = f"{flag}={model_folder}{value[len(MODEL_DIR):]}"
        out.append(arg)
    return out


def local_command(container: dict[str, Any], model_folder: Path, port_map: dict[int, int],
                  python: str = sys.executable) -> list[str]:
    """command + args of a container, runnable here: `python` is this interpreter."""
    command = list(container.get("command") or COMMAND)
    if command and command[0] in ("python", "python3"):
        command[0] = python
    return localize_args(command + list(container.get("args") or []), model_folder, port_map)


# ---- the `deploy:` section of predictor.yaml ------------------------------------------------------
def update_deploy_section(predictor_yaml: Path, updates: dict[str, Any], comment: str = "") -> str:
    """Rewrite only the top-level `deploy:` block of a predictor.yaml (appending one if absent).

    Everything outside that block is kept byte for byte. Returns the new text (also written).
    """
    text = predictor_yaml.read_text(encoding="utf-8") if predictor_yaml.is_file() else ""
    current = (yaml.safe_load(text) or {}).get("deploy") or {}
    merged = {**current, **updates}
    body = yaml.safe_dump(merged, sort_keys=False, default_flow_style=False, width=120)
    block = "deploy:\n"
    if comment:
        block += "".join(f"  # {line}\n" for line in comment.splitlines())
    block += "".join(f"  {line}\n" for line in body.splitlines())
    lines = text.splitlines(keepends=True)
    start = next((i for i, line in enumerate(lines) if re.match(r"deploy\s*:", line)), None)
    if start is None:
        new_text = text + ("" if not text or text.endswith("\n") else "\n") + block
    else:
        end = start + 1
        while end < len(lines) and (not lines[end].strip() or lines[end][0] in " \t#"):
            end += 1
        # trailing blank lines and comments belong to what follows
        while end > start + 1 and (not lines[end - 1].strip() or lines[end - 1].lstrip().startswith("#")) and lines[end - 1][:1] not in " \t":
            end -= 1
        new_text = "".join(lines[:start]) + block + "".join(lines[end:])
    predictor_yaml.write_text(new_text, encoding="utf-8")
    return new_text
