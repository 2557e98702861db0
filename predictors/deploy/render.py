"""Kubernetes manifests rendered from the model configs: one InferenceService per model, the
ServingRuntime they share, a kustomization, and a canary example.

Why a ServingRuntime + storageUri instead of a custom `kserve-container` per InferenceService: the
image, command, args, ports, security context and shutdown hook are written once and shared by
every model, the args are KServe's own `{{.Name}}` template (so they cannot drift from the
InferenceService name), and `storageUri` is first-class: KServe's storage initializer (or a PVC
mount) puts the model folder at /mnt/models. Each InferenceService carries only what differs per
model: storageUri, resources, thread and drain env, probes and autoscaling (see sizing.py).

The canary example (examples/<model>-canary.yaml) is the same model's InferenceService at version
2 with `canaryTrafficPercent`. KServe splits traffic between revisions only in Knative mode, and
Knative allows one container port and no lifecycle hook, so the example carries its own
single-port runtime; it is not in the kustomization (it replaces the model's InferenceService).

The multi-model example (examples/multi-model.yaml) is one InferenceService serving every model
from the one storageUri prefix their folders sit under: the server runs on the whole folder
(`--models-dir /mnt/models`, its own runtime), loads each model on its first request, and keeps the
models inside a memory budget taken from the container's limit (Downward API), evicting the least
recently used idle ones (docs/deploy.md, "Many models in one pod").

Every InferenceService turns the repository's write routes (load, unload) off
(PREDICTORS_REPOSITORY_API=read-only) unless the model's predictor.yaml asks for
`deploy: {repository_api: read-write}`.
"""

from __future__ import annotations

import math
from pathlib import Path, PurePosixPath
from typing import Any

import yaml

from ..model import ModelConfig, ModelConfigError
from ..model.environment import ServerEnvironment
from ..backends import discover_models
from .runtime import (
    COMMAND, CONTAINER_NAME, DRAIN_ENV, GRPC_PORT, HTTP_PORT, IMAGE, IMAGE_TAG, LOADING_ENV, MODEL_DIR, MODEL_FORMAT,
    MODEL_FORMAT_VERSION, MODEL_MEMORY_ENV, PRESTOP_SECONDS, PROMETHEUS_PATH, REPOSITORY_API_ENV, RUN_AS_USER,
    RUNTIME_NAME,
)
from .sizing import (
    RESIDENT_MODELS, STARTUP_PERIOD_SECONDS, DeploySettings, deploy_settings, multi_model_memory, storage_prefix,
)
from .monitoring import render_monitoring

RUNTIME_FILE = "servingruntime.yaml"
KUSTOMIZATION_FILE = "kustomization.yaml"
EXAMPLES_DIR = "examples"
CANARY_MODEL = "review-sentiment"
CANARY_TRAFFIC_PERCENT = 10
CANARY_VERSION = "2"
KNATIVE_RUNTIME_NAME = f"{RUNTIME_NAME}-knative"
#: The server's own defaults for the keys a model's prediction_log may leave out.
DEFAULT_LOG_MAX_MB = ServerEnvironment.model_fields["prediction_log_max_mb"].default
DEFAULT_LOG_BACKUPS = ServerEnvironment.model_fields["prediction_log_backups"].default
MULTI_MODEL_FILE = "multi-model.yaml"
MULTI_MODEL_NAME = "text-models"
MULTI_MODEL_RUNTIME_NAME = f"{RUNTIME_NAME}-multi-model"
SERVER_READY_PATH = "/v2/health/ready"  # lazy models never hold it back
HEADER = (
    "# Rendered by `python -m predictors manifests render` from {source}.\n"
    "# Do not edit: change the source and re-render.\n"
)
DEFAULT_IMAGE = f"{IMAGE}:{IMAGE_TAG}"
PART_OF = {"app.kubernetes.io/part-of": "predictors"}


def thread_env() -> list[dict[str, Any]]:
    """Thread settings tied to the cpu limit: one worker per CPU, one intra-op thread per worker."""
    return [
        {"name": "PREDICTORS_WORKERS", "valueFrom": {"resourceFieldRef": {
            "containerName": CONTAINER_NAME, "resource": "limits.cpu", "divisor": "1"}}},
        {"name": "OMP_NUM_THREADS", "value": "1"},
        {"name": "MKL_NUM_THREADS", "value": "1"},
        {"name": "TOKENIZERS_PARALLELISM", "value": "false"},
    ]


#: The server on the one model folder KServe puts at /mnt/models (container mode); `{{.Name}}` is
#: the InferenceService's name.
CONTAINER_MODE_ARGS = ["--model_name", "{{.Name}}", "--model_dir", MODEL_DIR]
#: The server on every model folder under /mnt/models (one storageUri prefix, many models).
MULTI_MODEL_ARGS = ["--models-dir", MODEL_DIR]


def runtime_container(image: str = DEFAULT_IMAGE, knative: bool = False, serve_args: list[str] | None = None) -> dict[str, Any]:
    ports = [{"name": "http", "containerPort": HTTP_PORT, "protocol": "TCP"}]
    if not knative:  # Knative routes one port; gRPC stays reachable only inside the pod there
        ports.append({"name": "grpc", "containerPort": GRPC_PORT, "protocol": "TCP"})
    container: dict[str, Any] = {
        "name": CONTAINER_NAME,
        "image": image,
        "imagePullPolicy": "IfNotPresent",
        "command": list(COMMAND),
        # Exactly `python -m predictors` (container mode unless told otherwise).
        "args": [*(serve_args or CONTAINER_MODE_ARGS), "--http_port", str(HTTP_PORT), "--grpc_port", str(GRPC_PORT)],
        "ports": ports,
        "env": [
            {"name": "HF_HUB_OFFLINE", "value": "1"},
            {"name": "TRANSFORMERS_OFFLINE", "value": "1"},
        ],
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": RUN_AS_USER,
            "runAsGroup": RUN_AS_USER,
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,  # the server writes nothing (the container rehearsal runs it so)
            "capabilities": {"drop": ["ALL"]},
            "seccompProfile": {"type": "RuntimeDefault"},
        },
    }
    if not knative:  # Knative's queue-proxy drains instead (it forbids lifecycle hooks)
        container["lifecycle"] = {"preStop": {"exec": {"command": ["sleep", str(PRESTOP_SECONDS)]}}}
    return container


def render_runtime(image: str = DEFAULT_IMAGE, knative: bool = False, multi_model: bool = False) -> dict[str, Any]:
    name = KNATIVE_RUNTIME_NAME if knative else MULTI_MODEL_RUNTIME_NAME if multi_model else RUNTIME_NAME
    return {
        "apiVersion": "serving.kserve.io/v1alpha1",
        "kind": "ServingRuntime",
        "metadata": {"name": name, "labels": {"app.kubernetes.io/name": name, **PART_OF}},
        "spec": {
            "annotations": {
                "prometheus.kserve.io/port": str(HTTP_PORT),
                "prometheus.kserve.io/path": PROMETHEUS_PATH,
            },
            "supportedModelFormats": [
                # autoSelect only on the default runtime: a model names the Knative or multi-model one explicitly
                {"name": MODEL_FORMAT, "version": MODEL_FORMAT_VERSION, "autoSelect": not (knative or multi_model),
                 "priority": 1},
            ],
            "protocolVersions": ["v2"] if knative else ["v2", "grpc-v2"],
            "containers": [runtime_container(image, knative, MULTI_MODEL_ARGS if multi_model else None)],
        },
    }


def _probes(name: str, settings: DeploySettings, knative: bool = False, ready_path: str | None = None) -> dict[str, Any]:
    ready = {"path": ready_path or f"/v2/models/{name}/ready", "port": HTTP_PORT, "scheme": "HTTP"}
    probes: dict[str, Any] = {
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
    if knative:  # no startupProbe in Knative: the liveness probe waits out the start-up budget instead
        del probes["startupProbe"]
        probes["livenessProbe"]["initialDelaySeconds"] = settings.startup_budget_seconds
    return probes


def _metadata(name: str, s: DeploySettings, mode: str, version: str) -> dict[str, Any]:
    annotations = {"serving.kserve.io/deploymentMode": mode}
    if mode == "Standard":  # plain Deployment + Service + HPA
        annotations["serving.kserve.io/autoscalerClass"] = "hpa"
    annotations |= {
        "serving.kserve.io/enable-prometheus-scraping": "true",
        "predictors/task": s.task,
        "predictors/model-version": version,
        "predictors/batch-size": str(s.batch_size),
        "predictors/max-batch": str(s.max_batch),
        **({"predictors/max-length": str(s.max_length)} if s.max_length is not None else {}),
        "predictors/measured-startup-seconds": f"{s.startup_seconds:g}",
        "predictors/measured-peak-rss": f"{math.ceil(s.peak_rss_mib)}Mi",
    }
    return {"name": name, "labels": {"app.kubernetes.io/name": name, **PART_OF}, "annotations": annotations}


def _model(s: DeploySettings, runtime: str, storage_uri: str, env: list[dict[str, Any]],
           probes: dict[str, Any]) -> dict[str, Any]:
    cpu = str(s.cpu)
    return {
        "modelFormat": {"name": MODEL_FORMAT, "version": MODEL_FORMAT_VERSION},
        "runtime": runtime,
        "protocolVersion": "v2",
        "storageUri": storage_uri,
        "env": env,
        "resources": {
            "requests": {"cpu": cpu, "memory": s.memory_request},
            "limits": {"cpu": cpu, "memory": s.memory_limit},
        },
        **probes,
    }


PREDICTION_LOG_VOLUME = "prediction-log"


def _model_options(config: ModelConfig, model: dict[str, Any], predictor: dict[str, Any]) -> None:
    """What predictor.yaml asks of the pod beyond sizing: the browsable API (`deploy.api_docs`:
    the server's flag, appended to the runtime's args as KServe merges them), KServe's own payload
    logger (`deploy.logger`), and a writable folder for the prediction log (the root file system is
    read-only): an emptyDir sized for the file and its rotated copies."""
    if config.deploy.api_docs:
        model["args"] = ["--enable_docs_url", "true"]
    if config.deploy.logger is not None:
        predictor["logger"] = {"mode": config.deploy.logger.mode, "url": config.deploy.logger.url}
    log = config.prediction_log
    if log.path and log.sample:
        folder = str(PurePosixPath(log.path).parent)
        files = (log.backups or DEFAULT_LOG_BACKUPS) + 1
        size_mib = math.ceil((log.max_mb or DEFAULT_LOG_MAX_MB) * files) + 1
        model["volumeMounts"] = [{"name": PREDICTION_LOG_VOLUME, "mountPath": folder}]
        predictor["volumes"] = [{"name": PREDICTION_LOG_VOLUME, "emptyDir": {"sizeLimit": f"{size_mib}Mi"}}]


def render_inference_service(config: ModelConfig) -> dict[str, Any]:
    """Standard mode (Deployment + Service + HPA): startupProbe, two ports, cpu autoscaling."""
    s = deploy_settings(config)
    # The server stops waiting for in-flight requests when the grace period would end.
    env = [*thread_env(), {"name": DRAIN_ENV, "value": str(s.drain_seconds)},
           {"name": REPOSITORY_API_ENV, "value": s.repository_api}]
    model = _model(s, RUNTIME_NAME, s.storage_uri, env, _probes(config.name, s))
    predictor: dict[str, Any] = {
        "minReplicas": s.min_replicas,
        "maxReplicas": s.max_replicas,
        "scaleMetric": s.scale_metric,
        "scaleTarget": s.scale_target,
        "terminationGracePeriodSeconds": s.termination_grace_seconds,
    }
    _model_options(config, model, predictor)
    return {
        "apiVersion": "serving.kserve.io/v1beta1",
        "kind": "InferenceService",
        "metadata": _metadata(config.name, s, "Standard", s.version),
        "spec": {"predictor": {**predictor, "model": model}},
    }


def render_canary(config: ModelConfig, traffic_percent: int = CANARY_TRAFFIC_PERCENT,
                  version: str = CANARY_VERSION) -> dict[str, Any]:
    """The model's InferenceService moving to `version` (storageUri `<storage_uri>-v<version>`):
    KServe (Knative mode) sends `traffic_percent` of the requests to the new revision, the rest to
    the last one rolled out; raising it to 100 (or removing the field) promotes the new version."""
    s = deploy_settings(config)
    concurrency = 2 * s.cpu  # Knative's autoscaler: requests in flight per pod (two per worker)
    return {
        "apiVersion": "serving.kserve.io/v1beta1",
        "kind": "InferenceService",
        "metadata": _metadata(config.name, s, "Knative", version),
        "spec": {
            "predictor": {
                "minReplicas": s.min_replicas,
                "maxReplicas": s.max_replicas,
                "scaleMetric": "concurrency",
                "scaleTarget": concurrency,
                "canaryTrafficPercent": traffic_percent,
                "model": _model(s, KNATIVE_RUNTIME_NAME, f"{s.storage_uri.rstrip('/')}-v{version}",
                                thread_env(), _probes(config.name, s, knative=True)),
            },
        },
    }


def render_multi_model(configs: list[ModelConfig]) -> dict[str, Any]:
    """One InferenceService for every model, from the storageUri prefix their folders sit under:
    lazy loading, a memory budget from the container's limit, the repository's write routes off."""
    settings = [deploy_settings(c) for c in configs]
    largest = max(settings, key=lambda s: s.peak_rss_mib)
    slowest = max(settings, key=lambda s: s.startup_budget_seconds)
    grace = max(s.termination_grace_seconds for s in settings)
    cpu = max(s.cpu for s in settings)
    memory = multi_model_memory(settings)
    sizing = DeploySettings(
        name=MULTI_MODEL_NAME, task="many", version="1", batch_size=largest.batch_size, max_batch=largest.max_batch,
        max_length=largest.max_length, startup_seconds=slowest.startup_seconds, peak_rss_mib=largest.peak_rss_mib,
        cpu=cpu, memory_request=memory, memory_limit=memory, startup_budget_seconds=slowest.startup_budget_seconds,
        min_replicas=min(s.min_replicas for s in settings), max_replicas=max(s.max_replicas for s in settings),
        scale_metric="cpu", scale_target=70, storage_uri=storage_prefix(configs), termination_grace_seconds=grace,
    )
    env = [
        *thread_env(),
        {"name": DRAIN_ENV, "value": str(sizing.drain_seconds)},
        {"name": LOADING_ENV, "value": "lazy"},  # a model's predictor.yaml `loading` still wins
        # The whole limit, in bytes; the server lowers it by its own measured share and a margin.
        {"name": MODEL_MEMORY_ENV, "valueFrom": {"resourceFieldRef": {
            "containerName": CONTAINER_NAME, "resource": "limits.memory", "divisor": "1"}}},
        {"name": REPOSITORY_API_ENV, "value": "read-only"},
    ]
    annotations = {
        "serving.kserve.io/deploymentMode": "Standard",
        "serving.kserve.io/autoscalerClass": "hpa",
        "serving.kserve.io/enable-prometheus-scraping": "true",
        "predictors/models": ",".join(c.name for c in configs),
        "predictors/loading": "lazy",
        "predictors/resident-models": str(RESIDENT_MODELS),
        "predictors/measured-peak-rss": ",".join(f"{s.name}={math.ceil(s.peak_rss_mib)}Mi" for s in settings),
    }
    probes = _probes(MULTI_MODEL_NAME, sizing, ready_path=SERVER_READY_PATH)
    return {
        "apiVersion": "serving.kserve.io/v1beta1",
        "kind": "InferenceService",
        "metadata": {"name": MULTI_MODEL_NAME, "labels": {"app.kubernetes.io/name": MULTI_MODEL_NAME, **PART_OF},
                     "annotations": annotations},
        "spec": {
            "predictor": {
                "minReplicas": sizing.min_replicas,
                "maxReplicas": sizing.max_replicas,
                "scaleMetric": sizing.scale_metric,
                "scaleTarget": sizing.scale_target,
                "terminationGracePeriodSeconds": grace,
                "model": _model(sizing, MULTI_MODEL_RUNTIME_NAME, sizing.storage_uri, env, probes),
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


def example(source: str, about: str, *documents: dict[str, Any]) -> str:
    """An example file: the rendering header, what it is for (comment lines), then its documents."""
    return HEADER.format(source=source) + "".join(f"# {line}\n" for line in about.splitlines()) + to_yaml(*documents)


def to_yaml(*documents: dict[str, Any]) -> str:
    return "---\n".join(
        yaml.safe_dump(d, sort_keys=False, default_flow_style=False, width=120, allow_unicode=True) for d in documents
    )


def render_all(models_dir: Path | str) -> dict[str, str]:
    """Path relative to manifests/ -> text of every manifest; raises ModelConfigError naming a broken model."""
    models_dir = Path(models_dir)
    configs, errors = discover_models(models_dir)
    if errors:
        raise ModelConfigError(sorted(errors.items())[0][1])
    if not configs:
        raise ModelConfigError(f"no models in {models_dir}")
    rules = "predictors/deploy/render.py"
    files: dict[str, str] = {}
    for config in configs:
        source = f"models/{config.name}/predictor.yaml"
        files[f"{config.name}.yaml"] = HEADER.format(source=source) + to_yaml(render_inference_service(config))
        if config.name == CANARY_MODEL:
            files[f"{EXAMPLES_DIR}/{config.name}-canary.yaml"] = example(
                f"{source} and {rules}",
                "Version 2 of the model as a canary (docs/deploy.md, \"How a new version reaches a pod\").\n"
                "Traffic splitting needs Knative mode, and an InferenceService cannot change mode: deploy\n"
                "version 1 with this file (storageUri of version 1, no canaryTrafficPercent), then apply it.",
                render_runtime(knative=True), render_canary(config),
            )
    files[f"{EXAMPLES_DIR}/{MULTI_MODEL_FILE}"] = example(
        f"models/*/predictor.yaml and {rules}",
        "Every model in one pod (docs/deploy.md, \"Many models in one pod\"): the folders under one storageUri\n"
        "prefix, each loaded on its first request, the least recently used idle ones evicted to keep the\n"
        "models inside a budget taken from the container's memory limit. Instead of the per-model files.",
        render_runtime(multi_model=True), render_multi_model(configs),
    )
    files[RUNTIME_FILE] = HEADER.format(source=rules) + to_yaml(render_runtime())
    model_files = [f"{c.name}.yaml" for c in configs]
    files[KUSTOMIZATION_FILE] = HEADER.format(source=rules) + to_yaml(render_kustomization(model_files))
    files.update(render_monitoring(configs))  # manifests/monitoring/ (predictors/deploy/monitoring.py)
    return files
