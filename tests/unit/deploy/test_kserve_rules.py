"""The rules no CRD schema says (KServe webhook, Knative, pod validation, this project's own),
checked on broken copies of a rendered InferenceService + ServingRuntime; each error names the field."""

from __future__ import annotations

import pytest

from predictors.deploy.validation import Document
from predictors.deploy.validation.kserve_rules import rule_errors

from .conftest import model_of, set_field


def _runtime_container(runtime):
    return runtime["spec"]["containers"][0]


def _drop_limits(isvc, runtime):
    del model_of(isvc)["resources"]["limits"]


def _duplicate_port(isvc, runtime):
    _runtime_container(runtime)["ports"].append({"name": "http2", "containerPort": 8080})


def _two_handlers(isvc, runtime):
    model_of(isvc)["livenessProbe"]["tcpSocket"] = {"port": 8080}


def _no_probe_port(isvc, runtime):
    del model_of(isvc)["startupProbe"]["httpGet"]["port"]


def _two_implementations(isvc, runtime):
    isvc["spec"]["predictor"]["sklearn"] = {"storageUri": "pvc://models/iris"}


def _duplicate_env(isvc, runtime):
    model_of(isvc)["env"].append({"name": "OMP_NUM_THREADS", "value": "4"})


def _drain_too_long(isvc, runtime):
    env = next(e for e in model_of(isvc)["env"] if e["name"] == "PREDICTORS_DRAIN_SECONDS")
    env["value"] = str(isvc["spec"]["predictor"]["terminationGracePeriodSeconds"])


def _knative_with_two_ports(isvc, runtime):
    isvc["metadata"]["annotations"]["serving.kserve.io/deploymentMode"] = "Knative"


def _unsupported_format(isvc, runtime):
    runtime["spec"]["supportedModelFormats"][0]["name"] = "sklearn"


RULE_CASES = [
    ("isvc-name-syntax", set_field("metadata.name", "9-news"), "metadata.name"),
    ("two-implementations", _two_implementations, "spec.predictor: exactly one predictor implementation"),
    ("no-limits", _drop_limits, "spec.predictor.model.resources.limits: missing"),
    ("cpu-as-integer", set_field("spec.predictor.model.resources.limits", {"cpu": 2, "memory": "1Gi"}),
     "spec.predictor.model.resources.limits.cpu: write quantities as strings"),
    ("request-over-limit", set_field("spec.predictor.model.resources.requests", {"cpu": "2", "memory": "64Gi"}),
     "spec.predictor.model.resources.requests.memory: request 64Gi is greater than the limit"),
    ("unknown-resource", set_field("spec.predictor.model.resources.limits", {"cpu": "2", "memory": "1Gi", "memroy": "1Gi"}),
     "spec.predictor.model.resources.limits.memroy: unknown resource"),
    ("duplicate-port", _duplicate_port, "spec.containers[0].ports[2].containerPort: duplicate port 8080"),
    ("probe-two-handlers", _two_handlers, "spec.predictor.model.livenessProbe: must have exactly one handler"),
    ("probe-without-port", _no_probe_port, "spec.predictor.model.startupProbe.httpGet.port: missing"),
    ("probe-named-port", set_field("spec.predictor.model.readinessProbe.httpGet.port", "http"),
     "spec.predictor.model.readinessProbe.httpGet.port: must be an explicit port number"),
    ("probe-undeclared-port", set_field("spec.predictor.model.readinessProbe.httpGet.port", 9999),
     "spec.predictor.model.readinessProbe.httpGet.port: 9999 is not one of the container's ports"),
    ("liveness-success-threshold", set_field("spec.predictor.model.livenessProbe.successThreshold", 2),
     "spec.predictor.model.livenessProbe.successThreshold"),
    ("duplicate-env", _duplicate_env, "spec.predictor.model.env[6].name: duplicate variable 'OMP_NUM_THREADS'"),
    ("max-below-min", set_field("spec.predictor.maxReplicas", 0), "spec.predictor.maxReplicas: 0 is less than minReplicas"),
    ("hpa-target-over-100", set_field("spec.predictor.scaleTarget", 150), "spec.predictor.scaleTarget"),
    ("hpa-metric", set_field("spec.predictor.scaleMetric", "concurrency"), "spec.predictor.scaleMetric: 'concurrency' is not an HPA metric"),
    ("missing-runtime", set_field("spec.predictor.model.runtime", "no-such-runtime"), "spec.predictor.model.runtime"),
    ("unsupported-format", _unsupported_format, "spec.predictor.model.modelFormat.name"),
    ("bad-storage-scheme", set_field("spec.predictor.model.storageUri", "ftp://host/models"), "spec.predictor.model.storageUri"),
    ("status-in-manifest", set_field("status", {"url": "http://x"}), "status: written by the controller"),
    ("grace-shorter-than-prestop", set_field("spec.predictor.terminationGracePeriodSeconds", 3),
     "spec.predictor.terminationGracePeriodSeconds: 3s leaves no time"),
    ("drain-outlasts-grace", _drain_too_long, "PREDICTORS_DRAIN_SECONDS=60 outlasts"),
    ("canary-outside-knative", set_field("spec.predictor.canaryTrafficPercent", 10),
     "spec.predictor.canaryTrafficPercent: traffic splitting works only in Knative mode"),
    ("knative-two-ports", _knative_with_two_ports, "Knative routes a single container port"),
    ("deployment-mode", set_field("metadata.annotations", {"serving.kserve.io/deploymentMode": "Raw"}),
     "metadata.annotations[serving.kserve.io/deploymentMode]"),
]


def _errors(isvc, runtime) -> list[str]:
    return rule_errors([Document("isvc.yaml", isvc), Document("runtime.yaml", runtime)])


def test_the_rendered_pair_follows_the_rules(isvc, runtime):
    assert _errors(isvc, runtime) == []


@pytest.mark.parametrize("case, mutate, field", RULE_CASES, ids=[c[0] for c in RULE_CASES])
def test_broken_copy_is_rejected_naming_the_field(isvc, runtime, case, mutate, field):
    mutate(isvc, runtime)
    errors = _errors(isvc, runtime)
    assert any(field in error for error in errors), f"{case}: no error names {field!r}:\n" + "\n".join(errors)
    assert all(error.startswith(("InferenceService", "ServingRuntime")) for error in errors), errors


def test_knative_rules_on_the_canary_example(rendered_docs):
    runtime, canary = rendered_docs["examples/review-sentiment-canary.yaml"]
    assert rule_errors([Document("r", runtime), Document("c", canary)]) == []
    with_hook = {**runtime, "spec": {**runtime["spec"], "containers": [
        {**runtime["spec"]["containers"][0], "lifecycle": {"preStop": {"exec": {"command": ["sleep", "5"]}}}}]}}
    errors = rule_errors([Document("r", with_hook), Document("c", canary)])
    assert any("sets lifecycle, not allowed in Knative mode" in e for e in errors), errors


def test_a_duplicate_document_name_is_named():
    doc = {"apiVersion": "serving.kserve.io/v1alpha1", "kind": "ServingRuntime", "metadata": {"name": "rt"},
           "spec": {"supportedModelFormats": [{"name": "x"}], "containers": [{"name": "kserve-container", "image": "i"}]}}
    errors = rule_errors([Document("a.yaml", doc), Document("b.yaml", doc)])
    assert errors == ["ServingRuntime rt (b.yaml): metadata.name: duplicate ServingRuntime 'rt', also in a.yaml"]
