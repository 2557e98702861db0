"""What KServe and kubelet do with the rendered documents, emulated here so the kubelet rehearsal
and tools/measure_deploy.py run the container the pod will really run.

KServe merges the InferenceService's `model` container fields into the runtime's
`kserve-container` (strategic merge: env by name, ports by containerPort, maps key by key, args
appended) and then replaces the `{{.Name}}`-style placeholders; kubelet resolves the downward-API
env. `local_command` then maps /mnt/models to a local folder and each containerPort to a free
local port.
"""

from __future__ import annotations

import copy
import math
import re
import socket
import sys
from pathlib import Path
from typing import Any

from .runtime import COMMAND, CONTAINER_NAME, MODEL_DIR

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


def local_port_map(container: dict[str, Any]) -> dict[int, int]:
    """Each containerPort the container declares -> a free port on 127.0.0.1."""
    port_map: dict[int, int] = {}
    for port in container.get("ports") or []:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind(("127.0.0.1", 0))
            port_map[port["containerPort"]] = sock.getsockname()[1]
    return port_map


def local_command(container: dict[str, Any], model_folder: Path, port_map: dict[int, int],
                  python: str = sys.executable) -> list[str]:
    """command + args of a container, runnable here: `python` is this interpreter."""
    command = list(container.get("command") or COMMAND)
    if command and command[0] in ("python", "python3"):
        command[0] = python
    return localize_args(command + list(container.get("args") or []), model_folder, port_map)
