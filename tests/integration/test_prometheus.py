"""The monitoring set-up checked with the real tools: promtool (metrics lint, rules, rule unit tests),
a real prometheus scraping the running server, and the strict CRD validation of the manifests.

Needs Debian's `prometheus` package (prometheus + promtool; `make test` installs it through
tools/install_system_deps.sh) and the CRDs in ../shared/k8s-schemas."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
import yaml

from predictors.deploy import monitoring
from predictors.backends import discover_models
from tests.conftest import DEMO_MODELS, ROOT, free_port, http_status
from tests.integration.test_metrics import EVERY_MODEL_METRICS, TASK_METRICS, mixed_load

DOCS = ROOT / "docs" / "monitoring.md"


def tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.skip(f"{name} not installed: `bash tools/install_system_deps.sh` (Debian package prometheus), "
                    f"or install Prometheus 2.x from prometheus.io and put {name} on PATH")
    return path


@pytest.fixture(scope="module")
def configs(demo_models: Path):
    found, errors = discover_models(demo_models)
    assert not errors
    return found


def test_monitoring_manifests_validate_strictly_and_match_the_rendering(configs, tmp_path):
    from predictors.deploy.validation import CrdSchemasNotFound, SchemaRegistry, validate_documents

    try:
        registry = SchemaRegistry.from_crd_dir()
    except CrdSchemasNotFound as exc:
        pytest.skip(f"CRD schemas missing: {exc}")
    rendered = monitoring.render_monitoring(configs)
    docs = [yaml.safe_load(rendered[f"monitoring/{name}.yaml"]) for name in ("podmonitor", "prometheusrule")]
    assert validate_documents(docs, registry) == []
    broken = json.loads(json.dumps(docs[0]))
    broken["spec"]["podMetricsEndpoints"][0]["portNumbr"] = 8080  # a typo the API server would refuse
    assert any("portNumbr" in e for e in validate_documents([broken], registry))
    for name, text in rendered.items():  # manifests/monitoring/ is the committed rendering
        assert (ROOT / "manifests" / name).read_text() == text, f"manifests/{name} is stale: re-render"
    dashboard = json.loads(rendered["monitoring/dashboard.json"])
    assert {p["title"] for p in dashboard["panels"]} == set(monitoring.QUERIES)
    build = subprocess.run([tool("kubectl"), "kustomize", str(ROOT / "manifests" / "monitoring")],
                           capture_output=True, text=True, timeout=60)
    assert build.returncode == 0, build.stderr
    kinds = [d["kind"] for d in yaml.safe_load_all(build.stdout)]
    assert sorted(kinds) == ["PodMonitor", "PrometheusRule"]


def rule_unit_tests(configs) -> dict:
    """One promtool test case per alert: synthetic series that fire it, and one that must not."""
    model = configs[0].name
    key = f'model="{model}",version="1"'
    budget = monitoring.p99_budget_seconds(configs[0])
    series = [
        {"series": f"predictors_model_ready{{{key}}}", "values": "0x30"},
        {"series": f'predictors_model_ready{{model="healthy",version="1"}}', "values": "1x30"},
        {"series": f'predictors_requests_total{{{key},protocol="v1",outcome="success"}}', "values": "0+60x30"},
        {"series": f'predictors_requests_total{{{key},protocol="v1",outcome="server_error"}}', "values": "0+30x30"},
        {"series": f'predictors_stage_duration_seconds_bucket{{{key},stage="queue",le="1.0"}}', "values": "0x30"},
        {"series": f'predictors_stage_duration_seconds_bucket{{{key},stage="queue",le="2.5"}}', "values": "0+10x30"},
        {"series": f'predictors_stage_duration_seconds_bucket{{{key},stage="queue",le="+Inf"}}', "values": "0+10x30"},
        {"series": f'predictors_drift_psi{{{key},signal="label"}}', "values": "0.4x30"},
        {"series": f'predictors_drift_psi{{{key},signal="score"}}', "values": "0.05x30"},
        {"series": f"predictors_drift_window_texts{{{key}}}", "values": "1000x30"},
        {"series": f'predictors_drift_psi{{model="young",version="1",signal="label"}}', "values": "0.9x30"},
        {"series": f'predictors_drift_window_texts{{model="young",version="1"}}', "values": "20x30"},
        {"series": f'predictors_request_duration_seconds_bucket{{{key},protocol="v1",le="{budget}"}}', "values": "0x30"},
        {"series": f'predictors_request_duration_seconds_bucket{{{key},protocol="v1",le="30.0"}}', "values": "0+10x30"},
        {"series": f'predictors_request_duration_seconds_bucket{{{key},protocol="v1",le="+Inf"}}', "values": "0+10x30"},
    ]
    by_name = {a.name: a for a in monitoring.alerts(configs) if dict(a.labels).get("model") in (None, model)}
    severity = {r["alert"]: r["labels"] for r in monitoring.render_prometheus_rule(configs)["spec"]["groups"][0]["rules"]}

    def expected(name: str, **labels: str) -> dict:
        summary = by_name[name].summary
        labels = {"model": model, "version": "1", **labels}
        for label, value in labels.items():
            summary = summary.replace(f"{{{{ $labels.{label} }}}}", value)
        return {
            "exp_labels": {**severity[name], **labels},
            "exp_annotations": {"summary": summary, "description": f"{name}: what to do is in docs/monitoring.md"},
        }

    cases = {
        "PredictorsModelNotReady": [expected("PredictorsModelNotReady")],
        "PredictorsErrorRatio": [expected("PredictorsErrorRatio")],
        "PredictorsQueueSaturated": [expected("PredictorsQueueSaturated")],
        "PredictorsPredictionDrift": [expected("PredictorsPredictionDrift", signal="label")],
        "PredictorsLatencyOverBudget": [expected("PredictorsLatencyOverBudget")],
    }
    return {
        "rule_files": ["rules.yaml"],
        "evaluation_interval": "1m",
        "tests": [{
            "interval": "1m",
            "input_series": series,
            "alert_rule_test": [{"eval_time": "25m", "alertname": name, "exp_alerts": alerts}
                                for name, alerts in cases.items()],
        }],
    }


def test_promtool_checks_the_rules_and_every_alert_fires_in_its_unit_test(configs, tmp_path):
    promtool = tool("promtool")
    rule = monitoring.render_prometheus_rule(configs)
    (tmp_path / "rules.yaml").write_text(monitoring.rules_file(rule))
    (tmp_path / "rules.test.yaml").write_text(yaml.safe_dump(rule_unit_tests(configs), sort_keys=False))
    check = subprocess.run([promtool, "check", "rules", "rules.yaml"], cwd=tmp_path, capture_output=True, text=True)
    assert check.returncode == 0 and "SUCCESS" in check.stdout, check.stdout + check.stderr
    test = subprocess.run([promtool, "test", "rules", "rules.test.yaml"], cwd=tmp_path, capture_output=True, text=True)
    assert test.returncode == 0, test.stdout + test.stderr


def test_promtool_finds_no_problem_in_a_live_scrape(server):
    mixed_load(server)
    with urllib.request.urlopen(f"{server.url}/metrics", timeout=30) as reply:
        scrape = reply.read()
    lint = subprocess.run([tool("promtool"), "check", "metrics"], input=scrape, capture_output=True, timeout=60)
    assert lint.returncode == 0, (lint.stdout + lint.stderr).decode()


@pytest.fixture(scope="module")
def prometheus(server, tmp_path_factory):
    """A real prometheus scraping the session server every second."""
    binary = tool("prometheus")
    folder = tmp_path_factory.mktemp("prometheus")
    port = free_port()
    config = {"global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
              "scrape_configs": [{"job_name": "predictors", "static_configs": [{"targets": [f"127.0.0.1:{server.http_port}"]}]}]}
    (folder / "prometheus.yml").write_text(yaml.safe_dump(config))
    log = (folder / "prometheus.log").open("w")
    process = subprocess.Popen(
        [binary, f"--config.file={folder / 'prometheus.yml'}", f"--storage.tsdb.path={folder / 'data'}",
         f"--web.listen-address=127.0.0.1:{port}"], stdout=log, stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while http_status(f"{url}/-/ready") != 200:
            assert process.poll() is None and time.monotonic() < deadline, (folder / "prometheus.log").read_text()
            time.sleep(0.25)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=30)


def query(prometheus_url: str, expression: str) -> list:
    url = f"{prometheus_url}/api/v1/query?" + urllib.parse.urlencode({"query": expression})
    with urllib.request.urlopen(url, timeout=30) as reply:
        answer = json.loads(reply.read())
    assert answer["status"] == "success", answer
    return answer["data"]["result"]


def readme_queries() -> list[str]:
    """Every ```promql block of docs/monitoring.md (the README's Monitoring section points there)."""
    return [block.strip() for block in re.findall(r"```promql\n(.*?)```", DOCS.read_text(), re.S)]


def test_prometheus_holds_every_metric_and_every_query_returns_data(server, prometheus, configs):
    deadline = time.monotonic() + 30
    while not query(prometheus, 'up{job="predictors"} == 1'):
        assert time.monotonic() < deadline, "prometheus never scraped the server"
        time.sleep(0.5)
    mixed_load(server)  # traffic between scrapes, so rates are not all zero

    def missing_metrics() -> list[str]:
        return [name for name in EVERY_MODEL_METRICS + list(TASK_METRICS)
                if not TASK_METRICS.get(name, set(DEMO_MODELS)) <= {r["metric"]["model"] for r in query(prometheus, name)}]

    expressions = [monitoring.expand(e, rate_interval="1m") for group in monitoring.QUERIES.values() for e in group]
    expressions += [alert.signal for alert in monitoring.alerts(configs)]
    expressions += readme_queries()
    assert len(readme_queries()) >= 3
    deadline = time.monotonic() + 60  # until a scrape after the traffic (and a second one, for rates) is in
    while (missing := missing_metrics()) or (empty := [e for e in expressions if not query(prometheus, e)]):
        assert time.monotonic() < deadline, f"metrics missing: {missing}; no data for {len(empty)} of {len(expressions)}: {empty}"
        time.sleep(0.5)
