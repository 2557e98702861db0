"""Schema validation: the CRDs (KServe and prometheus-operator) as strict JSON Schemas checked
with jsonschema; the committed and the rendered manifests pass, broken copies fail naming the field."""

from __future__ import annotations

import copy

import pytest

from predictors.deploy.validation import (
    Document, ManifestError, SchemaRegistry, load_yaml_documents, validate_documents, validate_folder,
)
from predictors.deploy.validation.schemas import CrdSchemasNotFound, missing_crds_reason, strict_schema

from .conftest import MANIFESTS, model_of, set_field


# ---- the conversion, on small schemas (no CRD files needed) ---------------------------------------
def test_properties_become_closed_unless_unknown_fields_are_preserved():
    schema = strict_schema({"type": "object", "properties": {"a": {"type": "object", "properties": {"b": {"type": "string"}}},
                                                            "free": {"type": "object", "properties": {},
                                                                     "x-kubernetes-preserve-unknown-fields": True}}})
    assert schema["additionalProperties"] is False and schema["properties"]["a"]["additionalProperties"] is False
    assert "additionalProperties" not in schema["properties"]["free"]


def test_int_or_string_nullable_and_boolean_exclusive_bounds():
    assert strict_schema({"x-kubernetes-int-or-string": True, "anyOf": [{"type": "integer"}, {"type": "string"}],
                          "pattern": "^a"}) == {"anyOf": [{"type": "integer"}, {"type": "string"}], "pattern": "^a"}
    assert strict_schema({"type": "string", "nullable": True, "enum": ["a"]}) == {"type": ["string", "null"], "enum": ["a", None]}
    assert strict_schema({"type": "integer", "minimum": 0, "exclusiveMinimum": True}) == {"type": "integer", "exclusiveMinimum": 0}


def test_a_folder_without_crds_says_how_to_provide_them(tmp_path, monkeypatch):
    with pytest.raises(CrdSchemasNotFound, match="PREDICTORS_CRD_DIR"):
        SchemaRegistry.from_crd_dir(tmp_path)
    monkeypatch.delenv("PREDICTORS_CRD_DIR", raising=False)
    monkeypatch.delenv("KSERVE_CRD_DIR", raising=False)
    assert missing_crds_reason() == (
        "CRD schemas not found at ../shared/k8s-schemas (clone the steering repo's shared/ beside this one, "
        "or set PREDICTORS_CRD_DIR)")


# ---- against the real CRDs --------------------------------------------------------------------------
def test_the_registry_holds_kserve_and_prometheus_operator_kinds(registry):
    for api_version, kind in [("serving.kserve.io/v1beta1", "InferenceService"),
                              ("serving.kserve.io/v1alpha1", "ServingRuntime"),
                              ("serving.kserve.io/v1alpha1", "ClusterServingRuntime"),
                              ("monitoring.coreos.com/v1", "PodMonitor"),
                              ("monitoring.coreos.com/v1", "PrometheusRule")]:
        schema = registry.get(api_version, kind)
        assert schema is not None, f"{api_version} {kind} not loaded"
        type(schema.validator).check_schema(schema.validator.schema)


def test_the_committed_manifests_validate_strictly(registry):
    docs, errors = validate_folder(MANIFESTS, registry)
    assert {d.kind for d in docs} >= {"InferenceService", "ServingRuntime"}
    assert not errors, "\n".join(errors)


def test_the_rendered_manifests_and_the_canary_example_validate_strictly(rendered_docs, registry):
    base = [d for name, docs in rendered_docs.items() if "/" not in name and name != "kustomization.yaml" for d in docs]
    assert validate_documents(base, registry) == []
    canary = rendered_docs["examples/review-sentiment-canary.yaml"]
    assert [d["kind"] for d in canary] == ["ServingRuntime", "InferenceService"]
    assert validate_documents(canary, registry) == []


def test_the_rendered_multi_model_example_validates_strictly(rendered_docs, registry):
    example = rendered_docs["examples/multi-model.yaml"]
    assert [d["kind"] for d in example] == ["ServingRuntime", "InferenceService"]
    assert validate_documents(example, registry) == []


def _rename_readiness(isvc, runtime):
    model_of(isvc)["readinesProbe"] = model_of(isvc).pop("readinessProbe")


def _unknown_runtime_field(isvc, runtime):
    runtime["spec"]["containers"][0]["securityContext"]["runAsRoot"] = False


def _drop_model_format_name(isvc, runtime):
    del model_of(isvc)["modelFormat"]["name"]


def _wrong_kind(isvc, runtime):
    isvc["apiVersion"], isvc["kind"] = "apps/v1", "Deployment"


SCHEMA_CASES = [
    # (id, mutation, text an error must contain: the field path)
    ("typo-in-a-resource-name", set_field("spec.predictor.model.resources.limits.memroy", "1Gi"),
     "spec.predictor.model.resources.limits.memroy: unknown resource"),
    ("typo-readinesProbe", _rename_readiness, "spec.predictor.model.readinesProbe: unknown field"),
    ("unknown-nested-runtime-field", _unknown_runtime_field, "spec.containers[0].securityContext.runAsRoot: unknown field"),
    ("quantity-with-space", set_field("spec.predictor.model.resources.limits.memory", "1 Gi"), "spec.predictor.model.resources.limits.memory"),
    ("string-periodSeconds", set_field("spec.predictor.model.livenessProbe.periodSeconds", "10"),
     "spec.predictor.model.livenessProbe.periodSeconds: must be integer"),
    ("cpu-as-float", set_field("spec.predictor.model.resources.requests.cpu", 1.5),
     "spec.predictor.model.resources.requests.cpu: must be an integer or a string"),
    ("wrong-apiVersion", set_field("apiVersion", "serving.kserve.io/v1alpha1"), "apiVersion: no schema"),
    ("kind-without-schema", _wrong_kind, "no schema for apiVersion 'apps/v1' kind 'Deployment'"),
    ("int32-overflow", set_field("spec.predictor.model.startupProbe.failureThreshold", 2**31),
     "spec.predictor.model.startupProbe.failureThreshold: 2147483648 is out of range for int32"),
    ("not-nullable", set_field("spec.predictor.model.env", None), "spec.predictor.model.env: must be array, got null"),
    ("enum-violation", set_field("spec.predictor.scaleMetric", "gpu"), "spec.predictor.scaleMetric: 'gpu' is not one of"),
    ("required-field", _drop_model_format_name, "spec.predictor.model.modelFormat.name: missing required field"),
    ("label-not-a-string", set_field("metadata.labels", {"app.kubernetes.io/name": True}),
     "metadata.labels[app.kubernetes.io/name]: must be string"),
    ("annotation-not-a-string", set_field("metadata.annotations", {"serving.kserve.io/enable-prometheus-scraping": True}),
     "metadata.annotations[serving.kserve.io/enable-prometheus-scraping]: must be string"),
    ("bad-label-key", set_field("metadata.labels", {"bad key": "x"}), "metadata.labels: key 'bad key'"),
    ("server-set-metadata", set_field("metadata.uid", "abc"), "metadata.uid: unknown field (written by the API server"),
    ("name-syntax", set_field("metadata.name", "News_Topic"), "metadata.name: 'News_Topic' does not match"),
    ("duplicate-list-map-key", set_field("spec.predictor.model.env", [{"name": "A", "value": "1"}, {"name": "A", "value": "2"}]),
     "spec.predictor.model.env[1]: duplicate entry (name='A')"),
]


@pytest.mark.parametrize("case, mutate, field", SCHEMA_CASES, ids=[c[0] for c in SCHEMA_CASES])
def test_broken_copy_is_rejected_naming_the_field(isvc, runtime, registry, case, mutate, field):
    assert validate_documents([isvc, runtime], registry) == []
    mutate(isvc, runtime)
    errors = validate_documents([Document("isvc.yaml", isvc), Document("runtime.yaml", runtime)], registry)
    assert any(field in error for error in errors), f"{case}: no error names {field!r}:\n" + "\n".join(errors)


def test_a_prometheus_operator_document_is_validated_too(registry):
    monitor = {"apiVersion": "monitoring.coreos.com/v1", "kind": "PodMonitor", "metadata": {"name": "predictors"},
               "spec": {"selector": {"matchLabels": {"app.kubernetes.io/part-of": "predictors"}},
                        "podMetricsEndpoints": [{"port": "http", "path": "/metrics", "interval": "15s"}]}}
    assert validate_documents([monitor], registry) == []
    broken = copy.deepcopy(monitor)
    broken["spec"]["podMetricsEndpoints"][0]["intervall"] = "15s"
    errors = validate_documents([broken], registry)
    assert any("spec.podMetricsEndpoints[0].intervall: unknown field" in e for e in errors), errors


def test_duplicate_yaml_key_is_rejected():
    text = (MANIFESTS / "servingruntime.yaml").read_text()
    broken = text.replace("  - name: kserve-container\n", "  - name: kserve-container\n    name: again\n", 1)
    assert broken != text
    with pytest.raises(ManifestError, match="duplicate field 'name'"):
        load_yaml_documents(broken, "servingruntime.yaml")
