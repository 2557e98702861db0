"""The KServe merge emulation (model fields into the runtime's kserve-container, placeholders) and
what kubelet does with the result when the rehearsal runs it here (downward-API env, local ports)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from predictors.deploy.merge import (
    effective_container, local_command, local_port_map, merge_runtime_container, replace_placeholders, resolve_env,
)

RUNTIME = {
    "metadata": {"name": "rt"},
    "spec": {"containers": [{
        "name": "kserve-container", "image": "img", "command": ["python", "-m", "predictors"],
        "args": ["--model_name", "{{.Name}}", "--model_dir", "/mnt/models", "--http_port", "8080"],
        "ports": [{"name": "http", "containerPort": 8080, "protocol": "TCP"}],
        "env": [{"name": "A", "value": "runtime"}, {"name": "B", "value": "runtime"}],
        "securityContext": {"runAsUser": 1000, "runAsNonRoot": True},
    }]},
}


def test_model_fields_merge_by_key_and_args_append():
    model = {
        "modelFormat": {"name": "x"}, "storageUri": "pvc://a/b", "runtime": "rt",
        "args": ["--extra"],
        "env": [{"name": "B", "value": "model"}, {"name": "C", "value": "model"}],
        "ports": [{"containerPort": 8080, "name": "http", "protocol": "TCP"}, {"containerPort": 9000, "name": "metrics"}],
        "securityContext": {"runAsUser": 2000},
        "resources": {"limits": {"cpu": "2"}},
    }
    merged = merge_runtime_container(RUNTIME, model, {"name": "news"})
    assert merged["args"] == ["--model_name", "news", "--model_dir", "/mnt/models", "--http_port", "8080", "--extra"]
    assert merged["env"] == [{"name": "A", "value": "runtime"}, {"name": "B", "value": "model"}, {"name": "C", "value": "model"}]
    assert [p["containerPort"] for p in merged["ports"]] == [8080, 9000]
    assert merged["securityContext"] == {"runAsUser": 2000, "runAsNonRoot": True}
    assert "storageUri" not in merged and "modelFormat" not in merged
    assert RUNTIME["spec"]["containers"][0]["env"][1]["value"] == "runtime", "the runtime must not be modified"


def test_effective_container_replaces_the_name_placeholder():
    isvc = {"metadata": {"name": "pii-ner"}, "spec": {"predictor": {"model": {"runtime": "rt"}}}}
    assert effective_container(isvc, RUNTIME)["args"][1] == "pii-ner"


def test_placeholders_and_an_unsupported_one():
    metadata = {"name": "n", "labels": {"team": "ml"}, "annotations": {"a/b": "v"}}
    assert replace_placeholders(["{{.Name}}-{{.Namespace}}", "{{.Labels.team}}", '{{index .Annotations "a/b"}}'],
                                metadata) == ["n-default", "ml", "v"]
    with pytest.raises(ValueError, match="unsupported placeholder"):
        replace_placeholders("{{.Spec}}", metadata)


def test_a_runtime_without_kserve_container_is_refused():
    with pytest.raises(ValueError, match="kserve-container"):
        merge_runtime_container({"metadata": {"name": "rt"}, "spec": {"containers": [{"name": "other"}]}}, {})


def test_downward_api_env_resolves_like_kubelet():
    container = {
        "resources": {"limits": {"cpu": "2500m", "memory": "1Gi"}},
        "env": [
            {"name": "WORKERS", "valueFrom": {"resourceFieldRef": {"resource": "limits.cpu", "divisor": "1"}}},
            {"name": "MEMORY_MI", "valueFrom": {"resourceFieldRef": {"resource": "limits.memory", "divisor": "1Mi"}}},
            {"name": "POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
            {"name": "GREETING", "value": "pod $(POD)"},
        ],
    }
    assert resolve_env(container, pod_name="p-1") == {"WORKERS": "3", "MEMORY_MI": "1024", "POD": "p-1", "GREETING": "pod p-1"}
    with pytest.raises(ValueError, match="SECRET"):
        resolve_env({"env": [{"name": "SECRET", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}}]})


def test_local_command_maps_model_dir_and_ports(tmp_path):
    container = merge_runtime_container(RUNTIME, {}, {"name": "news"})
    ports = local_port_map(container)
    assert list(ports) == [8080] and ports[8080] != 8080
    argv = local_command(container, Path(tmp_path), ports, python="/venv/python")
    assert argv == ["/venv/python", "-m", "predictors", "--model_name", "news", "--model_dir", str(tmp_path),
                    "--http_port", str(ports[8080])]
    assert local_command(container, tmp_path, ports)[0] == sys.executable
