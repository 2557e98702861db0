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
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import yaml

from ..model import ModelConfig, ModelConfigError
from ..backends import discover_models
from .runtime import (
    COMMAND, CONTAINER_NAME, DRAIN_ENV, GRPC_PORT, HTTP_PORT, IMAGE, IMAGE_TAG, MODEL_DIR, MODEL_FORMAT,
    MODEL_FORMAT_VERSION, PRESTOP_SECONDS, PROMETHEUS_PATH, RUN_AS_USER, RUNTIME_NAME,
)
from .sizing import STARTUP_PERIOD_SECONDS, DeploySettings, deploy_settings
from .monitoring import render_monitoring

RUNTIME_FILE = "servingruntime.yaml"
KUSTOMIZATION_FILE = "kustomization.yaml"
EXAMPLES_DIR = "examples"
CANARY_MODEL = "review-sentiment"
CANARY_TRAFFIC_PERCENT = 10
CANARY_VERSION = "2"
KNATIVE_RUNTIME_NAME = f"{RUNTIME_NAME}-knative"
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


def runtime_container(image: str = DEFAULT_IMAGE, knative: bool = False) -> dict[str, Any]:
    ports = [{"name": "http", "containerPort": HTTP_PORT, "protocol": "TCP"}]
    if not knative:  # Knative routes one port; gRPC stays reachable only inside the pod there
        ports.append({"name": "grpc", "containerPort": GRPC_PORT, "protocol": "TCP"})
    container: dict[str, Any] = {
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


def render_runtime(image: str = DEFAULT_IMAGE, knative: bool = False) -> dict[str, Any]:
    name = KNATIVE_RUNTIME_NAME if knative else RUNTIME_NAME
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
                # autoSelect only on the default runtime: a model names the Knative one explicitly
                {"name": MODEL_FORMAT, "version": MODEL_FORMAT_VERSION, "autoSelect": not knative, "priority": 1},
            ],
            "protocolVersions": ["v2"] if knative else ["v2", "grpc-v2"],
            "containers": [runtime_container(image, knative)],
        },
    }


def _probes(name: str, settings: DeploySettings, knative: bool = False) -> dict[str, Any]:
    ready = {"path": f"/v2/models/{name}/ready", "port": HTTP_PORT, "scheme": "HTTP"}
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


def render_inference_service(config: ModelConfig) -> dict[str, Any]:
    """Standard mode (Deployment + Service + HPA): startupProbe, two ports, cpu autoscaling."""
    s = deploy_settings(config)
    # The server stops waiting for in-flight requests when the grace period would end.
    env = [*thread_env(), {"name": DRAIN_ENV, "value": str(s.drain_seconds)}]
    return {
        "apiVersion": "serving.kserve.io/v1beta1",
        "kind": "InferenceService",
        "metadata": _metadata(config.name, s, "Standard", s.version),
        "spec": {
            "predictor": {
                "minReplicas": s.min_replicas,
                "maxReplicas": s.max_replicas,
                "scaleMetric": s.scale_metric,
                "scaleTarget": s.scale_target,
                "terminationGracePeriodSeconds": s.termination_grace_seconds,
                "model": _model(s, RUNTIME_NAME, s.storage_uri, env, _probes(config.name, s)),
            },
        },
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


def render_kustomization(model_files: list[str]) -> dict[str, Any]:
    return {
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        "resources": [RUNTIME_FILE, *model_files],
        # `kustomize edit set image predictors=REGISTRY/predictors:TAG` points every model at your image.
        "images": [{"name": IMAGE, "newName": IMAGE, "newTag": IMAGE_TAG}],
    }


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
            files[f"{EXAMPLES_DIR}/{config.name}-canary.yaml"] = (
                HEADER.format(source=f"{source} and {rules}")
                + "# Version 2 of the model as a canary (docs/deploy.md, \"How a new version reaches a pod\").\n"
                + "# Traffic splitting needs Knative mode, and an InferenceService cannot change mode: deploy\n"
                + "# version 1 with this file (storageUri of version 1, no canaryTrafficPercent), then apply it.\n"
                + to_yaml(render_runtime(knative=True), render_canary(config))
            )
    files[RUNTIME_FILE] = HEADER.format(source=rules) + to_yaml(render_runtime())
    model_files = [f"{c.name}.yaml" for c in configs]
    files[KUSTOMIZATION_FILE] = HEADER.format(source=rules) + to_yaml(render_kustomization(model_files))
    files.update(render_monitoring(configs))  # manifests/monitoring/ (predictors/deploy/monitoring.py)
    return files
