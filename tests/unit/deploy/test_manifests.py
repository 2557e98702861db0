"""manifests/: strict schema validation against the KServe CRDs, the checks the schema cannot
express, agreement with the model configs they are rendered from, and broken copies that must be
rejected with a message naming the field."""

from __future__ import annotations

import copy
import importlib.util
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from kubernetes.utils import parse_quantity

from predictors.__main__ import _serve_parser
from predictors.config import discover_models
from predictors.deploy import (
    MODEL_DIR, STARTUP_EXTRA_SECONDS, STARTUP_FACTOR, STARTUP_MIN_SECONDS, deploy_settings,
    effective_container, render_all,
)
from predictors.k8s_validate import (
    Document, ManifestError, SchemaRegistry, load_yaml_documents, validate_documents, validate_folder,
    validate_kustomization,
)

ROOT = Path(__file__).resolve().parent.parent
# Overridable to check another rendering (an overlay, a fork's models) with the same tests.
MANIFESTS = Path(os.environ.get("PREDICTORS_MANIFESTS_DIR", ROOT / "manifests"))
MODELS = Path(os.environ.get("PREDICTORS_MODELS_DIR", ROOT / "models"))


def _load_render_tool():
    spec = importlib.util.spec_from_file_location("render_manifests", ROOT / "tools" / "render_manifests.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def registry() -> SchemaRegistry:
    return SchemaRegistry.from_crd_dir()


@pytest.fixture(scope="module")
def checked(registry):
    return validate_folder(MANIFESTS, registry)


@pytest.fixture(scope="module")
def docs(checked) -> list[Document]:
    return checked[0]


@pytest.fixture(scope="module")
def services(docs) -> list[dict]:
    return [d.body for d in docs if d.kind == "InferenceService"]


@pytest.fixture(scope="module")
def runtime(docs) -> dict:
    runtimes = [d.body for d in docs if d.kind == "ServingRuntime"]
    assert len(runtimes) == 1, f"expected one ServingRuntime, found {len(runtimes)}"
    return runtimes[0]


@pytest.fixture(scope="module")
def configs():
    found, errors = discover_models(MODELS)
    assert not errors, errors
    return {c.name: c for c in found}


# ---- the real manifests ---------------------------------------------------------------------------
def test_schemas_are_the_kserve_crds(registry):
    assert ("serving.kserve.io/v1beta1", "InferenceService") in registry.schemas
    assert ("serving.kserve.io/v1alpha1", "ServingRuntime") in registry.schemas
    spec = registry.schemas[("serving.kserve.io/v1beta1", "InferenceService")]["properties"]["spec"]
    assert "predictor" in spec["properties"]


def test_every_manifest_validates_strictly(checked):
    docs, errors = checked
    assert docs, f"no manifests in {MANIFESTS}"
    assert not errors, "\n".join(errors)


def test_one_inference_service_per_model(services, configs):
    assert sorted(s["metadata"]["name"] for s in services) == sorted(configs)
    for name in configs:
        body = load_yaml_documents((MANIFESTS / f"{name}.yaml").read_text(), f"{name}.yaml")
        assert [(d.kind, d.name) for d in body] == [("InferenceService", name)]


def test_committed_manifests_equal_the_rendering():
    problems = _load_render_tool().differences(render_all(MODELS), MANIFESTS)
    assert not problems, "manifests/ is stale; run `python tools/render_manifests.py`:\n" + "\n".join(problems)


def test_render_check_exits_non_zero_and_names_the_stale_file(tmp_path):
    out = tmp_path / "manifests"
    shutil.copytree(MANIFESTS, out)
    tool = [sys.executable, str(ROOT / "tools" / "render_manifests.py"), "--check", "--out", str(out),
            "--models-dir", str(MODELS)]
    clean = subprocess.run(tool, capture_output=True, text=True)
    assert clean.returncode == 0, clean.stderr
    victim = sorted(p for p in out.glob("*.yaml") if p.name not in ("kustomization.yaml", "servingruntime.yaml"))[0]
    victim.write_text(victim.read_text().replace("failureThreshold: 3", "failureThreshold: 4", 1))
    (out / "stale.yaml").write_text("kind: Leftover\n")
    stale = subprocess.run(tool, capture_output=True, text=True)
    assert stale.returncode == 1
    assert victim.name in stale.stderr and "failureThreshold: 4" in stale.stderr and "stale.yaml" in stale.stderr


def test_container_args_are_container_mode_exactly(services, runtime):
    for isvc in services:
        name = isvc["metadata"]["name"]
        container = effective_container(isvc, runtime)
        ports = {p["name"]: p["containerPort"] for p in container["ports"]}
        # Standard mode's Service sends port 80 to the first containerPort: it must be HTTP.
        assert container["ports"][0]["name"] == "http", container["ports"]
        assert container["command"] == ["python", "-m", "predictors"]
        assert container["args"] == [
            "--model_name", name, "--model_dir", MODEL_DIR,
            "--http_port", str(ports["http"]), "--grpc_port", str(ports["grpc"]),
        ]
        parsed, unknown = _serve_parser().parse_known_args(container["args"])
        assert unknown == []
        assert (parsed.model_name, parsed.model_dir, parsed.http_port, parsed.grpc_port) == (
            name, MODEL_DIR, ports["http"], ports["grpc"])


def test_sizing_follows_each_models_measurements(services, runtime, configs):
    for isvc in services:
        name = isvc["metadata"]["name"]
        measured = configs[name].deploy
        container = effective_container(isvc, runtime)
        requests, limits = container["resources"]["requests"], container["resources"]["limits"]
        peak = float(measured["peak_rss_mib"]) * 2**20
        assert parse_quantity(requests["memory"]) >= peak * 1.2, f"{name}: memory request below measured peak RSS + 20%"
        assert parse_quantity(limits["memory"]) >= max(peak * 1.5, peak + 256 * 2**20), f"{name}: no headroom over the peak"
        startup = container["startupProbe"]
        allowed = startup["initialDelaySeconds"] + startup["periodSeconds"] * startup["failureThreshold"]
        needed = max(STARTUP_MIN_SECONDS, STARTUP_FACTOR * float(measured["startup_seconds"]) + STARTUP_EXTRA_SECONDS)
        assert allowed >= needed, f"{name}: startup budget {allowed}s < {needed}s for a measured {measured['startup_seconds']}s"
        # threads: one worker per CPU of the limit, one intra-op thread each
        assert requests["cpu"] == limits["cpu"] and float(limits["cpu"]).is_integer(), (requests, limits)
        env = {e["name"]: e for e in container["env"]}
        assert env["OMP_NUM_THREADS"]["value"] == "1" and env["MKL_NUM_THREADS"]["value"] == "1"
        assert env["TOKENIZERS_PARALLELISM"]["value"] == "false"
        ref = env["PREDICTORS_WORKERS"]["valueFrom"]["resourceFieldRef"]
        assert (ref["resource"], ref["containerName"], ref.get("divisor")) == ("limits.cpu", "kserve-container", "1")
        settings = deploy_settings(configs[name])
        assert int(limits["cpu"]) == settings.cpu


def test_model_settings_are_carried_through(services, configs):
    for isvc in services:
        name = isvc["metadata"]["name"]
        config = configs[name]
        annotations = isvc["metadata"]["annotations"]
        assert annotations["predictors/batch-size"] == str(config.batch_size)
        assert annotations["predictors/max-batch"] == str(config.max_batch)
        assert annotations["predictors/task"] == config.task
        model = isvc["spec"]["predictor"]["model"]
        assert model["storageUri"].rstrip("/").rsplit("/", 1)[-1] == name
        assert model["protocolVersion"] == "v2"


def test_probes_are_explicit_and_aimed_right(services, runtime):
    for isvc in services:
        name = isvc["metadata"]["name"]
        container = effective_container(isvc, runtime)
        http = next(p["containerPort"] for p in container["ports"] if p["name"] == "http")
        paths = {"startupProbe": f"/v2/models/{name}/ready", "readinessProbe": f"/v2/models/{name}/ready",
                 "livenessProbe": "/v2/health/live"}
        for probe, path in paths.items():
            spec = container[probe]
            assert spec["httpGet"]["path"] == path and spec["httpGet"]["port"] == http, (name, probe)
            for field in ("initialDelaySeconds", "periodSeconds", "timeoutSeconds", "successThreshold", "failureThreshold"):
                assert isinstance(spec.get(field), int), f"{name} {probe}.{field} must be explicit"
            assert spec["timeoutSeconds"] <= spec["periodSeconds"]


def test_autoscaling_and_metrics_scraping(services, runtime):
    assert runtime["spec"]["annotations"]["prometheus.kserve.io/path"] == "/metrics"
    http = next(p["containerPort"] for p in runtime["spec"]["containers"][0]["ports"] if p["name"] == "http")
    assert runtime["spec"]["annotations"]["prometheus.kserve.io/port"] == str(http)
    for isvc in services:
        annotations = isvc["metadata"]["annotations"]
        assert annotations["serving.kserve.io/enable-prometheus-scraping"] == "true"
        assert annotations["serving.kserve.io/deploymentMode"] == "Standard"
        assert annotations["serving.kserve.io/autoscalerClass"] == "hpa"
        predictor = isvc["spec"]["predictor"]
        assert 1 <= predictor["minReplicas"] <= predictor["maxReplicas"]
        assert predictor["scaleMetric"] in ("cpu", "memory") and isinstance(predictor["scaleTarget"], int)


def test_kustomize_build_validates(tmp_path, registry):
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl (with its built-in kustomize) is not installed")
    copy_dir = tmp_path / "manifests"
    shutil.copytree(MANIFESTS, copy_dir)
    kustomization = yaml.safe_load((copy_dir / "kustomization.yaml").read_text())
    kustomization["images"][0]["newName"] = "registry.example.com/team/predictors"
    (copy_dir / "kustomization.yaml").write_text(yaml.safe_dump(kustomization))
    built = subprocess.run([kubectl, "kustomize", str(copy_dir)], capture_output=True, text=True, timeout=60)
    assert built.returncode == 0, built.stderr
    docs = load_yaml_documents(built.stdout, "kustomize build")
    assert not validate_documents(docs, registry)
    assert len(docs) == len(kustomization["resources"])
    runtime = next(d.body for d in docs if d.kind == "ServingRuntime")
    assert runtime["spec"]["containers"][0]["image"].startswith("registry.example.com/team/predictors:")


# ---- broken copies --------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def pair(services, runtime) -> tuple[dict, dict]:
    return services[0], runtime


def _model(isvc: dict) -> dict:
    return isvc["spec"]["predictor"]["model"]


def _set(path: str, value):
    """A mutation setting a dotted path (under the InferenceService) to value."""
    def mutate(isvc, runtime):
        target = isvc
        keys = path.split(".")
        for key in keys[:-1]:
            target = target[int(key)] if isinstance(target, list) else target[key]
        target[keys[-1]] = value
    return mutate


def _rename_readiness(isvc, runtime):
    _model(isvc)["readinesProbe"] = _model(isvc).pop("readinessProbe")


def _drop_limits(isvc, runtime):
    del _model(isvc)["resources"]["limits"]


def _duplicate_port(isvc, runtime):
    runtime["spec"]["containers"][0]["ports"].append({"containerPort": runtime["spec"]["containers"][0]["ports"][0]["containerPort"]})


def _two_handlers(isvc, runtime):
    _model(isvc)["livenessProbe"]["tcpSocket"] = {"port": 8080}


def _no_probe_port(isvc, runtime):
    del _model(isvc)["startupProbe"]["httpGet"]["port"]


def _two_implementations(isvc, runtime):
    isvc["spec"]["predictor"]["sklearn"] = {"storageUri": "pvc://models/iris"}


def _unknown_runtime_field(isvc, runtime):
    runtime["spec"]["containers"][0]["securityContext"]["runAsRoot"] = False


def _duplicate_env(isvc, runtime):
    _model(isvc)["env"].append({"name": "OMP_NUM_THREADS", "value": "4"})


def _request_over_limit(isvc, runtime):
    _model(isvc)["resources"]["requests"]["memory"] = "64Gi"


def _null_env(isvc, runtime):
    _model(isvc)["env"] = None


def _missing_runtime(isvc, runtime):
    _model(isvc)["runtime"] = "no-such-runtime"


def _wrong_kind(isvc, runtime):
    isvc["apiVersion"], isvc["kind"] = "apps/v1", "Deployment"


NEGATIVE_CASES = [
    # (id, mutation, text every reported error list must contain)
    ("typo-readinesProbe", _rename_readiness, "spec.predictor.model.readinesProbe"),
    ("quantity-with-space", _set("spec.predictor.model.resources.limits.memory", "1 Gi"), "resources.limits.memory"),
    ("string-periodSeconds", _set("spec.predictor.model.livenessProbe.periodSeconds", "10"), "livenessProbe.periodSeconds"),
    ("no-limits", _drop_limits, "resources.limits"),
    ("cpu-as-float", _set("spec.predictor.model.resources.requests.cpu", 1.5), "resources.requests.cpu"),
    ("cpu-as-integer", _set("spec.predictor.model.resources.limits.cpu", 2), "resources.limits.cpu"),
    ("wrong-apiVersion", _set("apiVersion", "serving.kserve.io/v1alpha1"), "apiVersion"),
    ("duplicate-port", _duplicate_port, "ports[2]"),
    ("request-over-limit", _request_over_limit, "requests.memory"),
    ("probe-two-handlers", _two_handlers, "livenessProbe"),
    ("probe-without-port", _no_probe_port, "startupProbe.httpGet.port"),
    ("probe-port-out-of-range", _set("spec.predictor.model.readinessProbe.httpGet.port", 70000), "readinessProbe.httpGet.port"),
    ("probe-named-port", _set("spec.predictor.model.readinessProbe.httpGet.port", "http"), "readinessProbe.httpGet.port"),
    ("isvc-name-syntax", _set("metadata.name", "9-news"), "metadata.name"),
    ("two-implementations", _two_implementations, "spec.predictor"),
    ("int32-overflow", _set("spec.predictor.model.startupProbe.failureThreshold", 2**31), "startupProbe.failureThreshold"),
    ("not-nullable", _null_env, "spec.predictor.model.env"),
    ("unknown-nested-runtime-field", _unknown_runtime_field, "securityContext.runAsRoot"),
    ("enum-violation", _set("spec.predictor.scaleMetric", "gpu"), "spec.predictor.scaleMetric"),
    ("duplicate-env", _duplicate_env, "env[4].name"),
    ("max-below-min", _set("spec.predictor.maxReplicas", 0), "spec.predictor.maxReplicas"),
    ("label-not-a-string", _set("metadata.labels", {"app.kubernetes.io/name": True}), "metadata.labels"),
    ("annotation-not-a-string", _set("metadata.annotations", {"serving.kserve.io/enable-prometheus-scraping": True}),
     "metadata.annotations[serving.kserve.io/enable-prometheus-scraping]"),
    ("server-set-metadata", _set("metadata.uid", "abc"), "metadata.uid"),
    ("liveness-success-threshold", _set("spec.predictor.model.livenessProbe.successThreshold", 2), "livenessProbe.successThreshold"),
    ("missing-runtime", _missing_runtime, "spec.predictor.model.runtime"),
    ("bad-storage-scheme", _set("spec.predictor.model.storageUri", "ftp://host/models"), "storageUri"),
    ("hpa-target-over-100", _set("spec.predictor.scaleTarget", 150), "spec.predictor.scaleTarget"),
    ("kind-without-schema", _wrong_kind, "no schema"),
    ("status-in-manifest", _set("status", {"url": "http://x"}), "status"),
    ("grace-shorter-than-prestop", _set("spec.predictor.terminationGracePeriodSeconds", 3),
     "spec.predictor.terminationGracePeriodSeconds"),
]


def test_the_unbroken_pair_is_clean(pair, registry):
    isvc, runtime = copy.deepcopy(pair[0]), copy.deepcopy(pair[1])
    assert validate_documents([Document("isvc.yaml", isvc), Document("runtime.yaml", runtime)], registry) == []


@pytest.mark.parametrize("case, mutate, field", NEGATIVE_CASES, ids=[c[0] for c in NEGATIVE_CASES])
def test_broken_copy_is_rejected_naming_the_field(pair, registry, case, mutate, field):
    isvc, runtime = copy.deepcopy(pair[0]), copy.deepcopy(pair[1])
    mutate(isvc, runtime)
    errors = validate_documents([Document("isvc.yaml", isvc), Document("runtime.yaml", runtime)], registry)
    assert errors, f"{case}: accepted"
    assert any(field in error for error in errors), f"{case}: no error names {field!r}:\n" + "\n".join(errors)


def test_duplicate_yaml_key_is_rejected():
    text = (MANIFESTS / "servingruntime.yaml").read_text()
    broken = text.replace("  - name: kserve-container\n", "  - name: kserve-container\n    name: again\n", 1)
    assert broken != text
    with pytest.raises(ManifestError, match="duplicate field 'name'"):
        load_yaml_documents(broken, "servingruntime.yaml")


def test_kustomization_must_list_every_manifest(tmp_path):
    kustomization = yaml.safe_load((MANIFESTS / "kustomization.yaml").read_text())
    listed = list(kustomization["resources"])
    dropped = dict(kustomization, resources=listed[:-1], imagez=[])
    errors = validate_kustomization(Document("kustomization.yaml", dropped), MANIFESTS, listed)
    assert any(listed[-1] in e and "not listed" in e for e in errors), errors
    assert any("imagez" in e for e in errors), errors
    assert validate_kustomization(Document("kustomization.yaml", kustomization), MANIFESTS, listed) == []


def test_deploy_section_rejects_unknown_keys_and_missing_measurements(tmp_path):
    from tests.helpers import write_folder

    from predictors.config import load_model_config
    from predictors.deploy import DeployConfigError

    folder = write_folder(tmp_path / "m", predictor_yaml="deploy:\n  startup_seconds: 5\n  peak_rss_mib: 500\n  memroy: 1Gi\n")
    with pytest.raises(DeployConfigError, match="memroy"):
        deploy_settings(load_model_config(folder))
    folder = write_folder(tmp_path / "n", predictor_yaml="deploy:\n  startup_seconds: 5\n")
    with pytest.raises(DeployConfigError, match="peak_rss_mib.*measure_deploy"):
        deploy_settings(load_model_config(folder))
    folder = write_folder(tmp_path / "o", predictor_yaml="deploy: {startup_seconds: 40, peak_rss_mib: 1000, cpu: 4}\n")
    settings = deploy_settings(load_model_config(folder))
    assert settings.cpu == 4 and settings.startup_budget_seconds >= 3 * 40 + 30
    assert parse_quantity(settings.memory_limit) >= 1500 * 2**20 and math.isclose(settings.peak_rss_mib, 1000)
