"""What the KServe webhook, Knative and kubelet's pod validation refuse that no CRD schema says,
plus this project's own rules (every container sized, quantities written as strings, probes
aimed at a declared port, a drain that fits the grace period).

Written from KServe's and Kubernetes' rules, not from the renderer: the runtime's container is
looked up here the way KServe finds it (the one named kserve-container), and only the facts the
rules need are combined (the model's ports with the runtime's, the model's preStop hook or else
the runtime's).
"""

from __future__ import annotations

import re
from decimal import Decimal
from typing import Any, Iterable

from kubernetes.utils import parse_quantity

from .documents import Document, type_name

KSERVE_CONTAINER = "kserve-container"
# The KServe webhook's InferenceService name rule (IsvcNameFmt).
ISVC_NAME = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
IANA_SVC_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
PREDICTOR_IMPLEMENTATIONS = (
    "sklearn", "xgboost", "tensorflow", "pytorch", "triton", "onnx", "huggingface", "pmml",
    "lightgbm", "paddle", "model",
)
PROBES = ("startupProbe", "readinessProbe", "livenessProbe")
PROBE_HANDLERS = ("exec", "httpGet", "tcpSocket", "grpc")
KNATIVE_MODES = ("Knative", "Serverless")
STANDARD_MODES = ("Standard", "RawDeployment")
DEPLOYMENT_MODES = (*STANDARD_MODES, *KNATIVE_MODES, "ModelMesh")
AUTOSCALER_CLASSES = ("hpa", "external", "keda", "none")
HPA_METRICS = ("cpu", "memory")
STORAGE_URI_PREFIXES = (
    "gs://", "s3://", "pvc://", "file://", "https://", "http://", "hdfs://", "webhdfs://", "oci://", "hf://",
)
DRAIN_ENV = "PREDICTORS_DRAIN_SECONDS"
RUNTIME_KINDS = ("ServingRuntime", "ClusterServingRuntime")


STANDARD_RESOURCES = ("cpu", "memory", "ephemeral-storage")


def _known_resource(name: str) -> bool:
    """The API server's rule for a container resource name: standard, hugepages, or domain-qualified."""
    return name in STANDARD_RESOURCES or name.startswith("hugepages-") or "/" in name


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _quantity(value: Any) -> Decimal | None:
    try:
        return parse_quantity(value)
    except (ValueError, TypeError):
        return None


# ---- one container ------------------------------------------------------------------------------
def resource_errors(resources: Any, path: str, require: Iterable[str] = ()) -> list[str]:
    """Quantities written as strings, requests <= limits; the `require`d resources requested and limited.
    (Their syntax is the schema's pattern.)"""
    require = tuple(require)
    if not isinstance(resources, dict):
        return [f"{path}: missing; requests and limits for {', '.join(require)} are required"] if require else []
    errors = []
    for section in ("requests", "limits"):
        values = resources.get(section)
        if not isinstance(values, dict):
            if require:
                errors.append(f"{path}.{section}: missing; {section} for {', '.join(require)} are required")
            continue
        errors += [f"{path}.{section}.{name}: missing; every container needs a {name} {section[:-1]}"
                   for name in require if name not in values]
        errors += [f"{path}.{section}.{name}: write quantities as strings (\"{value}\"), got {type_name(value)}"
                   for name, value in values.items() if not isinstance(value, str)]
        errors += [f"{path}.{section}.{name}: unknown resource (standard: {', '.join(STANDARD_RESOURCES)}, "
                   f"hugepages-<size>; any other needs a domain prefix such as nvidia.com/gpu)"
                   for name in values if not _known_resource(str(name))]
    requests, limits = resources.get("requests"), resources.get("limits")
    if isinstance(requests, dict) and isinstance(limits, dict):
        for name, request in requests.items():
            low, high = _quantity(request), _quantity(limits.get(name))
            if low is not None and high is not None and low > high:
                errors.append(f"{path}.requests.{name}: request {request} is greater than the limit {limits[name]}")
    return errors


def probe_errors(probe: Any, path: str, ports: set[int] | None) -> list[str]:
    """Exactly one handler, an explicit port the container declares; thresholds kubelet accepts."""
    if not isinstance(probe, dict):
        return []
    errors = []
    handlers = [h for h in PROBE_HANDLERS if probe.get(h) is not None]
    if len(handlers) != 1:
        errors.append(f"{path}: must have exactly one handler of {list(PROBE_HANDLERS)}, has {handlers or 'none'}")
    for handler in handlers:
        if handler == "exec":
            errors.append(f"{path}.exec: an exec probe has no port; use httpGet, tcpSocket or grpc with an explicit port")
            continue
        port = probe[handler].get("port") if isinstance(probe[handler], dict) else None
        where = f"{path}.{handler}.port"
        if port is None:
            errors.append(f"{where}: missing; every probe needs an explicit port")
        elif not _is_int(port):
            errors.append(f"{where}: must be an explicit port number, got {type_name(port)} {port!r}")
        elif not 1 <= port <= 65535:
            errors.append(f"{where}: {port} is not a port in 1..65535")
        elif ports and port not in ports:
            errors.append(f"{where}: {port} is not one of the container's ports {sorted(ports)}")
    kind = path.rsplit(".", 1)[-1]
    if kind in ("livenessProbe", "startupProbe") and probe.get("successThreshold", 1) != 1:
        errors.append(f"{path}.successThreshold: must be 1 for a {kind}")
    for name in ("periodSeconds", "timeoutSeconds", "failureThreshold", "successThreshold"):
        if _is_int(probe.get(name)) and probe[name] < 1:
            errors.append(f"{path}.{name}: must be at least 1, got {probe[name]}")
    if _is_int(probe.get("initialDelaySeconds")) and probe["initialDelaySeconds"] < 0:
        errors.append(f"{path}.initialDelaySeconds: must not be negative")
    return errors


def declared_ports(container: Any) -> set[int]:
    ports = container.get("ports") if isinstance(container, dict) else None
    return {p["containerPort"] for p in ports or [] if isinstance(p, dict) and _is_int(p.get("containerPort"))}


def container_errors(container: Any, path: str, require_resources: bool = False,
                     probe_ports: set[int] | None = None) -> list[str]:
    """Ports, env, probes and resources as the API server's pod validation and kubelet see them."""
    if not isinstance(container, dict):
        return []
    errors = []
    numbers: dict[int, int] = {}
    names: dict[str, int] = {}
    for i, port in enumerate(container.get("ports") or []):
        if not isinstance(port, dict):
            continue
        number, name, where = port.get("containerPort"), port.get("name"), f"{path}.ports[{i}]"
        if _is_int(number):
            if not 1 <= number <= 65535:
                errors.append(f"{where}.containerPort: {number} is not a port in 1..65535")
            if number in numbers:
                errors.append(f"{where}.containerPort: duplicate port {number}, already at {path}.ports[{numbers[number]}]")
            numbers.setdefault(number, i)
        if isinstance(name, str):
            if len(name) > 15 or not IANA_SVC_NAME.match(name) or not re.search("[a-z]", name):
                errors.append(f"{where}.name: {name!r} is not a valid port name (IANA_SVC_NAME, at most 15 characters)")
            if name in names:
                errors.append(f"{where}.name: duplicate port name {name!r}, already at {path}.ports[{names[name]}]")
            names.setdefault(name, i)
    seen_env: dict[str, int] = {}
    for i, env in enumerate(container.get("env") or []):
        if not isinstance(env, dict) or not isinstance(env.get("name"), str):
            continue
        if env["name"] in seen_env:
            errors.append(f"{path}.env[{i}].name: duplicate variable {env['name']!r}, already at {path}.env[{seen_env[env['name']]}]")
        seen_env.setdefault(env["name"], i)
        divisor = ((env.get("valueFrom") or {}).get("resourceFieldRef") or {}).get("divisor")
        if divisor is not None and not isinstance(divisor, str):
            errors.append(f"{path}.env[{i}].valueFrom.resourceFieldRef.divisor: write quantities as strings, got {type_name(divisor)}")
    ports = probe_ports if probe_ports is not None else declared_ports(container)
    for probe in PROBES:
        errors += probe_errors(container.get(probe), f"{path}.{probe}", ports)
    errors += resource_errors(container.get("resources"), f"{path}.resources",
                              require=("cpu", "memory") if require_resources else ())
    return errors


def pre_stop_seconds(container: Any) -> int | None:
    """Seconds a `sleep N` (exec or native sleep) preStop hook holds the container."""
    if not isinstance(container, dict):
        return None
    hook = (container.get("lifecycle") or {}).get("preStop") or {}
    seconds = (hook.get("sleep") or {}).get("seconds")
    command = (hook.get("exec") or {}).get("command") or []
    if len(command) == 2 and command[0] in ("sleep", "/bin/sleep") and str(command[1]).isdigit():
        seconds = int(command[1])
    return seconds if _is_int(seconds) else None


# ---- documents -----------------------------------------------------------------------------------
def kserve_container(runtime: dict[str, Any]) -> dict[str, Any] | None:
    containers = (runtime.get("spec") or {}).get("containers") or []
    return next((c for c in containers if isinstance(c, dict) and c.get("name") == KSERVE_CONTAINER), None)


def runtime_support_errors(model: dict[str, Any], runtime: dict[str, Any]) -> list[str]:
    errors = []
    spec = runtime.get("spec") or {}
    wanted = model.get("modelFormat") or {}
    formats = [f for f in spec.get("supportedModelFormats") or [] if isinstance(f, dict)]
    matching = [f for f in formats if f.get("name") == wanted.get("name")]
    if not matching:
        errors.append(f"spec.predictor.model.modelFormat.name: {wanted.get('name')!r} is not supported by runtime "
                      f"{(runtime.get('metadata') or {}).get('name')!r} ({[f.get('name') for f in formats]})")
    elif wanted.get("version") and not any(f.get("version") == wanted["version"] for f in matching):
        errors.append(f"spec.predictor.model.modelFormat.version: {wanted['version']!r} is not supported by the runtime")
    protocol = model.get("protocolVersion")
    if protocol and protocol not in (spec.get("protocolVersions") or []):
        errors.append(f"spec.predictor.model.protocolVersion: {protocol!r} is not in the runtime's protocolVersions")
    return errors


def _scaling_errors(predictor: dict[str, Any], mode: Any, autoscaler: Any) -> list[str]:
    errors = []
    metric, target = predictor.get("scaleMetric"), predictor.get("scaleTarget")
    if mode in STANDARD_MODES and autoscaler in (None, "hpa"):
        if metric is not None and metric not in HPA_METRICS:
            errors.append(f"spec.predictor.scaleMetric: {metric!r} is not an HPA metric {list(HPA_METRICS)}")
        if _is_int(target) and metric in (None, "cpu") and not 1 <= target <= 100:
            errors.append(f"spec.predictor.scaleTarget: {target} must be a utilization percentage in 1..100")
    low, high = predictor.get("minReplicas"), predictor.get("maxReplicas")
    if _is_int(low) and low < 0:
        errors.append(f"spec.predictor.minReplicas: must not be negative, got {low}")
    if _is_int(low) and _is_int(high) and high < low:
        errors.append(f"spec.predictor.maxReplicas: {high} is less than minReplicas {low}")
    canary = predictor.get("canaryTrafficPercent")
    if canary is not None:
        if mode not in KNATIVE_MODES:
            errors.append("spec.predictor.canaryTrafficPercent: traffic splitting works only in Knative mode "
                          "(annotation serving.kserve.io/deploymentMode: Knative)")
        if _is_int(canary) and not 0 <= canary <= 100:
            errors.append(f"spec.predictor.canaryTrafficPercent: {canary} is not a percentage in 0..100")
    return errors


def _knative_errors(predictor: dict[str, Any], model: dict[str, Any], runtime_container: dict[str, Any] | None) -> list[str]:
    """Knative Serving routes one port and refuses lifecycle hooks, startupProbe and a grace period."""
    errors = []
    ports = declared_ports(model) | declared_ports(runtime_container)
    if len(ports) > 1:
        errors.append(f"spec.predictor.model.ports: Knative routes a single container port, the container declares {sorted(ports)}")
    for source, container in (("spec.predictor.model", model), ("the runtime's kserve-container", runtime_container)):
        for name in ("lifecycle", "startupProbe"):
            if isinstance(container, dict) and container.get(name) is not None:
                errors.append(f"{source}.{name}: not allowed in Knative mode" if source.startswith("spec")
                              else f"spec.predictor.model.runtime: {source} sets {name}, not allowed in Knative mode")
    if predictor.get("terminationGracePeriodSeconds") is not None:
        errors.append("spec.predictor.terminationGracePeriodSeconds: not allowed in Knative mode (Knative sets it)")
    return errors


def _termination_errors(predictor: dict[str, Any], model: dict[str, Any], runtime_container: dict[str, Any] | None) -> list[str]:
    """preStop shorter than the grace period; the drain the server is told fits what is left."""
    grace = predictor.get("terminationGracePeriodSeconds")
    if not _is_int(grace):
        return []
    errors = []
    if grace < 0:
        errors.append(f"spec.predictor.terminationGracePeriodSeconds: must not be negative, got {grace}")
    sleep = pre_stop_seconds(model) if (model.get("lifecycle") or {}).get("preStop") else pre_stop_seconds(runtime_container)
    sleep = sleep or 0
    if sleep and sleep >= grace:
        errors.append(f"spec.predictor.terminationGracePeriodSeconds: {grace}s leaves no time after the {sleep}s "
                      f"preStop hook; kubelet would kill the server before it drains")
    for i, env in enumerate(model.get("env") or []):
        if isinstance(env, dict) and env.get("name") == DRAIN_ENV:
            value = str(env.get("value", ""))
            if not value.isdigit():
                errors.append(f"spec.predictor.model.env[{i}].value: {DRAIN_ENV} must be a whole number of seconds, got {value!r}")
            elif int(value) > grace - sleep:
                errors.append(f"spec.predictor.model.env[{i}].value: {DRAIN_ENV}={value} outlasts the {grace - sleep}s "
                              f"between SIGTERM and SIGKILL (terminationGracePeriodSeconds {grace} - preStop {sleep})")
    return errors


def inference_service_errors(doc: Document, runtimes: dict[str, dict[str, Any]]) -> list[str]:
    body = doc.body
    errors = []
    if not ISVC_NAME.match(doc.name):
        errors.append(f"metadata.name: {doc.name!r} must match {ISVC_NAME.pattern} (KServe InferenceService names)")
    annotations = (body.get("metadata") or {}).get("annotations") or {}
    spec = body.get("spec") if isinstance(body.get("spec"), dict) else {}
    predictor = spec.get("predictor")
    if not isinstance(predictor, dict):
        return errors + ["spec.predictor: missing required field"]
    implementations = [key for key in PREDICTOR_IMPLEMENTATIONS if predictor.get(key) is not None]
    if len(implementations) > 1:
        errors.append(f"spec.predictor: exactly one predictor implementation is allowed, found {implementations}")
    elif not implementations and not predictor.get("containers"):
        errors.append(f"spec.predictor: no predictor implementation; set one of {list(PREDICTOR_IMPLEMENTATIONS)} or containers")
    mode = annotations.get("serving.kserve.io/deploymentMode")
    if mode is not None and mode not in DEPLOYMENT_MODES:
        errors.append(f"metadata.annotations[serving.kserve.io/deploymentMode]: {mode!r} is not one of {list(DEPLOYMENT_MODES)}")
    autoscaler = annotations.get("serving.kserve.io/autoscalerClass")
    if autoscaler is not None and autoscaler not in AUTOSCALER_CLASSES:
        errors.append(f"metadata.annotations[serving.kserve.io/autoscalerClass]: {autoscaler!r} is not one of {list(AUTOSCALER_CLASSES)}")
    errors += _scaling_errors(predictor, mode, autoscaler)

    model = predictor.get("model")
    if isinstance(model, dict):
        if model.get("name"):
            errors.append("spec.predictor.model.name: not allowed in a predictor (KServe names the container)")
        uri = model.get("storageUri")
        if isinstance(uri, str) and not uri.startswith(STORAGE_URI_PREFIXES):
            errors.append(f"spec.predictor.model.storageUri: {uri!r} has no supported scheme {list(STORAGE_URI_PREFIXES)}")
        runtime_name = model.get("runtime")
        runtime = runtimes.get(runtime_name) if isinstance(runtime_name, str) else None
        runtime_container = kserve_container(runtime) if runtime else None
        if isinstance(runtime_name, str) and runtime is None:
            errors.append(f"spec.predictor.model.runtime: no ServingRuntime {runtime_name!r} among the manifests")
        if runtime is not None:
            errors += runtime_support_errors(model, runtime)
        if mode in KNATIVE_MODES:
            errors += _knative_errors(predictor, model, runtime_container)
        errors += _termination_errors(predictor, model, runtime_container)
        probe_ports = declared_ports(model) | declared_ports(runtime_container)
        errors += container_errors(model, "spec.predictor.model", require_resources=True, probe_ports=probe_ports or None)
    for i, container in enumerate(predictor.get("containers") or []):
        errors += container_errors(container, f"spec.predictor.containers[{i}]", require_resources=True)
    return errors


def serving_runtime_errors(doc: Document) -> list[str]:
    spec = doc.body.get("spec") if isinstance(doc.body.get("spec"), dict) else {}
    containers = [c for c in spec.get("containers") or [] if isinstance(c, dict)]
    errors = []
    main = [c for c in containers if c.get("name") == KSERVE_CONTAINER]
    if len(main) != 1:
        errors.append(f"spec.containers: needs exactly one container named \"{KSERVE_CONTAINER}\", has {len(main)}")
    for i, container in enumerate(containers):
        if not container.get("image"):
            errors.append(f"spec.containers[{i}].image: missing; a runtime container needs an image")
        errors += container_errors(container, f"spec.containers[{i}]")
    if not spec.get("supportedModelFormats"):
        errors.append("spec.supportedModelFormats: missing; the runtime must name the model formats it serves")
    return errors


def rule_errors(docs: list[Document], context: Iterable[Document] = ()) -> list[str]:
    """The rules across `docs` (an InferenceService needs its runtime, found in `docs` or `context`),
    each error prefixed with its document's label."""
    runtimes = {d.name: d.body for d in [*context, *docs] if isinstance(d.body, dict) and d.kind in RUNTIME_KINDS}
    errors: list[str] = []
    seen: dict[tuple[str, str], str] = {}
    for doc in docs:
        if not isinstance(doc.body, dict):
            continue
        found: list[str] = []
        key = (doc.kind, doc.name)
        if key in seen:
            found.append(f"metadata.name: duplicate {doc.kind} {doc.name!r}, also in {seen[key]}")
        seen.setdefault(key, doc.source)
        if "status" in doc.body:
            found.append("status: written by the controller; a manifest must not set it")
        if doc.kind == "InferenceService":
            found += inference_service_errors(doc, runtimes)
        elif doc.kind in RUNTIME_KINDS:
            found += serving_runtime_errors(doc)
        errors += [f"{doc.label}: {e}" for e in found]
    return errors
