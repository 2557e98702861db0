"""The rendering: one InferenceService per model carrying its settings and sizing, the shared
ServingRuntime, the kustomization, the canary example, and `manifests render|check`."""

from __future__ import annotations

import argparse
import shutil

import yaml

from kubernetes.utils import parse_quantity

from predictors.cli import build_parser
from predictors.deploy import cli as manifests_cli
from predictors.deploy.merge import effective_container
from predictors.deploy.render import render_all
from predictors.deploy.runtime import DRAIN_ENV, MODEL_DIR, PRESTOP_SECONDS
from predictors.deploy.sizing import STARTUP_EXTRA_SECONDS, STARTUP_FACTOR, STARTUP_MIN_SECONDS

from tests.helpers import write_folder

from .conftest import DEPLOY, FOLDERS


def services(rendered_docs) -> list[dict]:
    return [rendered_docs[f"{name}.yaml"][0] for name in FOLDERS]


def test_the_files_rendered(rendered):
    ours = [name for name in rendered if not name.startswith("monitoring/")]  # monitoring.py's are tested there
    assert sorted(ours) == sorted([
        "examples/review-sentiment-canary.yaml", "examples/multi-model.yaml", "kustomization.yaml", "servingruntime.yaml",
        *(f"{name}.yaml" for name in FOLDERS),
    ])
    assert all(rendered[name].startswith("# Rendered by `python -m predictors manifests render`") for name in ours)


def test_kustomization_lists_the_runtime_and_every_model_but_not_the_example(rendered_docs):
    kustomization = rendered_docs["kustomization.yaml"][0]
    assert sorted(kustomization["resources"]) == sorted(["servingruntime.yaml", *(f"{n}.yaml" for n in FOLDERS)])


def test_container_args_are_the_serve_commands_container_mode(rendered_docs):
    runtime = rendered_docs["servingruntime.yaml"][0]
    for isvc in services(rendered_docs):
        name = isvc["metadata"]["name"]
        container = effective_container(isvc, runtime)
        ports = {p["name"]: p["containerPort"] for p in container["ports"]}
        # Standard mode's Service sends port 80 to the first containerPort: it must be HTTP.
        assert container["ports"][0]["name"] == "http"
        assert container["command"] == ["python", "-m", "predictors"]
        args = build_parser().parse_args(["serve", *container["args"]])
        assert (args.model_name, args.model_dir, args.http_port, args.grpc_port) == (name, MODEL_DIR, ports["http"], ports["grpc"])


def test_sizing_follows_each_models_measurements(rendered_docs):
    runtime = rendered_docs["servingruntime.yaml"][0]
    for isvc in services(rendered_docs):
        name = isvc["metadata"]["name"]
        measured = isvc["metadata"]["annotations"]
        container = effective_container(isvc, runtime)
        requests, limits = container["resources"]["requests"], container["resources"]["limits"]
        peak = float(parse_quantity(measured["predictors/measured-peak-rss"]))
        assert float(parse_quantity(requests["memory"])) >= peak * 1.2
        assert float(parse_quantity(limits["memory"])) >= max(peak * 1.5, peak + 256 * 2**20)
        startup = container["startupProbe"]
        allowed = startup["initialDelaySeconds"] + startup["periodSeconds"] * startup["failureThreshold"]
        needed = max(STARTUP_MIN_SECONDS, STARTUP_FACTOR * float(measured["predictors/measured-startup-seconds"])
                     + STARTUP_EXTRA_SECONDS)
        assert allowed >= needed, name
        assert requests["cpu"] == limits["cpu"] and limits["cpu"].isdigit()
        env = {e["name"]: e for e in container["env"]}
        assert env["OMP_NUM_THREADS"]["value"] == "1" and env["TOKENIZERS_PARALLELISM"]["value"] == "false"
        ref = env["PREDICTORS_WORKERS"]["valueFrom"]["resourceFieldRef"]
        assert (ref["resource"], ref["containerName"], ref["divisor"]) == ("limits.cpu", "kserve-container", "1")
    pii = rendered_docs["pii-ner.yaml"][0]["spec"]["predictor"]["model"]
    assert pii["resources"]["limits"]["cpu"] == "4"


def test_drain_env_is_the_grace_period_minus_the_pre_stop_sleep(rendered_docs):
    runtime = rendered_docs["servingruntime.yaml"][0]
    assert runtime["spec"]["containers"][0]["lifecycle"]["preStop"]["exec"]["command"] == ["sleep", str(PRESTOP_SECONDS)]
    for isvc in services(rendered_docs):
        predictor = isvc["spec"]["predictor"]
        env = {e["name"]: e.get("value") for e in predictor["model"]["env"]}
        assert env[DRAIN_ENV] == str(predictor["terminationGracePeriodSeconds"] - PRESTOP_SECONDS)
    assert rendered_docs["pii-ner.yaml"][0]["spec"]["predictor"]["terminationGracePeriodSeconds"] == 90


def test_probes_are_explicit_and_aimed_right(rendered_docs):
    for isvc in services(rendered_docs):
        name = isvc["metadata"]["name"]
        model = isvc["spec"]["predictor"]["model"]
        paths = {"startupProbe": f"/v2/models/{name}/ready", "readinessProbe": f"/v2/models/{name}/ready",
                 "livenessProbe": "/v2/health/live"}
        for probe, path in paths.items():
            spec = model[probe]
            assert spec["httpGet"] == {"path": path, "port": 8080, "scheme": "HTTP"}
            assert spec["timeoutSeconds"] <= spec["periodSeconds"]


def test_model_settings_and_scaling_are_carried_through(rendered_docs):
    isvc = rendered_docs["review-sentiment.yaml"][0]
    annotations = isvc["metadata"]["annotations"]
    assert (annotations["predictors/task"], annotations["predictors/batch-size"], annotations["predictors/max-batch"]) == (
        "classification", "8", "1024")
    assert annotations["serving.kserve.io/deploymentMode"] == "Standard"
    assert annotations["serving.kserve.io/autoscalerClass"] == "hpa"
    predictor = isvc["spec"]["predictor"]
    assert predictor["model"]["storageUri"] == "pvc://text-models/review-sentiment"
    assert (predictor["scaleMetric"], predictor["scaleTarget"]) == ("cpu", 70)


def test_canary_example_is_version_2_with_a_traffic_split(rendered_docs):
    runtime, canary = rendered_docs["examples/review-sentiment-canary.yaml"]
    stable = rendered_docs["review-sentiment.yaml"][0]
    predictor = canary["spec"]["predictor"]
    assert canary["metadata"]["name"] == stable["metadata"]["name"]
    assert canary["metadata"]["annotations"]["serving.kserve.io/deploymentMode"] == "Knative"
    assert canary["metadata"]["annotations"]["predictors/model-version"] == "2"
    assert predictor["canaryTrafficPercent"] == 10
    assert predictor["model"]["storageUri"] == stable["spec"]["predictor"]["model"]["storageUri"] + "-v2"
    assert predictor["model"]["runtime"] == runtime["metadata"]["name"]
    # Knative: one port, no lifecycle hook, no startupProbe, no grace period of our own
    assert len(runtime["spec"]["containers"][0]["ports"]) == 1 and "lifecycle" not in runtime["spec"]["containers"][0]
    assert "startupProbe" not in predictor["model"] and "terminationGracePeriodSeconds" not in predictor


def _args(models_dir, out) -> argparse.Namespace:
    return argparse.Namespace(models_dir=str(models_dir), out=str(out))


def test_render_then_check_names_a_stale_and_a_leftover_file(models_dir, tmp_path, capsys):
    out = tmp_path / "manifests"
    assert manifests_cli._render(_args(models_dir, out)) == 0
    (out / "overlays").mkdir()
    (out / "overlays" / "kustomization.yaml").write_text("resources: [..]\n")  # not a folder the renderer writes
    assert manifests_cli._check(_args(models_dir, out)) == 0
    victim = out / "review-sentiment.yaml"
    victim.write_text(victim.read_text().replace("failureThreshold: 3", "failureThreshold: 4", 1))
    (out / "examples" / "old.yaml").write_text("kind: Leftover\n")
    capsys.readouterr()
    assert manifests_cli._check(_args(models_dir, out)) == 1
    stderr = capsys.readouterr().err
    assert "review-sentiment.yaml: differs" in stderr and "failureThreshold: 4" in stderr and "old.yaml" in stderr
    assert "overlays" not in stderr
    assert manifests_cli._render(_args(models_dir, out)) == 0
    assert not (out / "examples" / "old.yaml").exists() and (out / "overlays" / "kustomization.yaml").exists()
    assert manifests_cli._check(_args(models_dir, out)) == 0
    shutil.rmtree(out)


def test_api_docs_kserves_logger_and_a_prediction_log_folder_from_predictor_yaml(tmp_path, registry):
    from predictors.deploy.render import render_inference_service
    from predictors.deploy.validation import Document, validate_documents
    from predictors.tasks import load_model_config
    from tests.helpers import write_folder

    architecture, settings = FOLDERS["review-sentiment"]
    folder = write_folder(tmp_path / "logged", architecture=architecture, predictor_yaml=settings + (
        "  api_docs: true\n  logger: {mode: response, url: http://payload-logger.monitoring.svc/events}\n"
        "prediction_log: {sample: 0.01, path: /var/log/predictions/logged.jsonl, max_mb: 50, backups: 2}\n"))
    isvc = render_inference_service(load_model_config(folder))
    predictor = isvc["spec"]["predictor"]
    assert predictor["logger"] == {"mode": "response", "url": "http://payload-logger.monitoring.svc/events"}
    assert predictor["model"]["args"] == ["--enable_docs_url", "true"]
    from predictors.deploy.render import render_runtime
    assert effective_container(isvc, render_runtime())["args"][-2:] == ["--enable_docs_url", "true"]  # after the runtime's
    assert predictor["model"]["volumeMounts"] == [{"name": "prediction-log", "mountPath": "/var/log/predictions"}]
    assert predictor["volumes"] == [{"name": "prediction-log", "emptyDir": {"sizeLimit": "151Mi"}}]
    assert validate_documents([Document("runtime.yaml", render_runtime()), Document("logged.yaml", isvc)], registry) == []
    plain = render_inference_service(load_model_config(write_folder(tmp_path / "plain", architecture=architecture,
                                                                    predictor_yaml=settings)))
    assert {"logger", "volumes"}.isdisjoint(plain["spec"]["predictor"]) and "args" not in plain["spec"]["predictor"]["model"]
def test_the_repository_write_routes_are_off_unless_a_model_asks(rendered_docs, tmp_path):
    for isvc in services(rendered_docs):
        env = {e["name"]: e.get("value") for e in isvc["spec"]["predictor"]["model"]["env"]}
        assert env["PREDICTORS_REPOSITORY_API"] == "read-only"
    write_folder(tmp_path / "hot-swapped", predictor_yaml="task: classification\n" + DEPLOY.format(startup=3, peak=500)
                 + "  repository_api: read-write\n")
    rendered = yaml.safe_load(render_all(tmp_path)["hot-swapped.yaml"])
    env = {e["name"]: e.get("value") for e in rendered["spec"]["predictor"]["model"]["env"]}
    assert env["PREDICTORS_REPOSITORY_API"] == "read-write"


def test_the_multi_model_example_serves_every_model_lazily_from_one_prefix(rendered_docs):
    runtime, isvc = rendered_docs["examples/multi-model.yaml"]
    container = effective_container(isvc, runtime)
    args = build_parser().parse_args(["serve", *container["args"]])
    assert args.models_dir == MODEL_DIR and args.model_dir is None  # the whole folder, not container mode
    model = isvc["spec"]["predictor"]["model"]
    assert model["storageUri"] == "pvc://text-models"  # the prefix every model folder sits under
    assert isvc["metadata"]["annotations"]["predictors/models"] == ",".join(sorted(FOLDERS))
    env = {e["name"]: e for e in container["env"]}
    assert env["PREDICTORS_LOADING"]["value"] == "lazy" and env["PREDICTORS_REPOSITORY_API"]["value"] == "read-only"
    ref = env["PREDICTORS_MODEL_MEMORY"]["valueFrom"]["resourceFieldRef"]
    assert (ref["resource"], ref["containerName"], ref["divisor"]) == ("limits.memory", "kserve-container", "1")
    for probe in ("startupProbe", "readinessProbe"):  # lazy models never hold the pod unready
        assert container[probe]["httpGet"]["path"] == "/v2/health/ready"
    memory = container["resources"]["limits"]["memory"]
    assert container["resources"]["requests"]["memory"] == memory
    two_largest = sum(sorted((1400, 900, 536), reverse=True)[:2])  # FOLDERS' measured peaks, MiB
    assert float(parse_quantity(memory)) >= two_largest * 2**20
