"""Monitoring manifests rendered from the model folders, written under manifests/monitoring/:

- podmonitor.yaml: a prometheus-operator PodMonitor scraping /metrics of every predictor pod;
- prometheusrule.yaml: alerts (model not ready, error ratio, p99 over the model's budget, queue
  saturation, prediction drift);
- dashboard.json: a Grafana dashboard (requests, errors, latency per stage, batches and tokens,
  label distribution, drift) to import into Grafana, or to load through Grafana's dashboard sidecar
  as a ConfigMap labelled grafana_dashboard=1 (docs/monitoring.md has the kubectl commands; the
  manifest validator knows only CRD kinds, so no ConfigMap is rendered).

Every PromQL expression lives in QUERIES / the alert table below, so the tests can run each one
against a real Prometheus (tests/integration/test_prometheus.py).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import yaml

from ..model import ModelConfig
from ..tasks import TASKS

HEADER = "# Rendered by `python -m predictors manifests render` from {source}. Do not edit: change the source and re-render.\n"
PART_OF = {"app.kubernetes.io/part-of": "predictors"}
HTTP_PORT = 8080
DEFAULT_P99_BUDGET_SECONDS = 2.0
DRIFT_ALERT_PSI = 0.25
DRIFT_MIN_WINDOW_TEXTS = 100  # fewer texts than this: PSI is mostly sampling noise
ERROR_RATIO = 0.05
QUEUE_WAIT_SECONDS = 1.0
SERVER_SIDE_ERRORS = 'outcome=~"server_error|timeout|not_ready"'

# Grafana variables: $model (a regex of model names) and $__rate_interval; expand() fills them in.
SEL = 'model=~"$model"'
RATE = "$__rate_interval"


def quantile(q: float, metric: str, by: str = "model", extra: str = "") -> str:
    matchers = ", ".join(m for m in (SEL, extra) if m)
    return f"histogram_quantile({q}, sum by ({by}, le) (rate({metric}_bucket{{{matchers}}}[{RATE}])))"


#: Dashboard panel title -> PromQL expressions (the README's operator questions are among them).
QUERIES: dict[str, list[str]] = {
    "Requests per second by protocol and outcome": [
        f"sum by (model, protocol, outcome) (rate(predictors_requests_total{{{SEL}}}[{RATE}]))"],
    "Texts per second": [f"sum by (model) (rate(predictors_texts_total{{{SEL}, outcome=\"success\"}}[{RATE}]))"],
    "Server-side error ratio": [
        f"sum by (model) (rate(predictors_requests_total{{{SEL}, {SERVER_SIDE_ERRORS}}}[{RATE}]))"
        f" / sum by (model) (rate(predictors_requests_total{{{SEL}}}[{RATE}]))"],
    "Client error ratio": [
        f"sum by (model) (rate(predictors_requests_total{{{SEL}, outcome=\"client_error\"}}[{RATE}]))"
        f" / sum by (model) (rate(predictors_requests_total{{{SEL}}}[{RATE}]))"],
    "Refused as overloaded (429) per second": [
        f"sum by (model, protocol) (rate(predictors_requests_total{{{SEL}, outcome=\"overloaded\"}}[{RATE}]))"],
    "Request latency p50 / p95 / p99": [
        quantile(q, "predictors_request_duration_seconds") for q in (0.5, 0.95, 0.99)],
    "p99 latency per stage": [quantile(0.99, "predictors_stage_duration_seconds", by="model, stage")],
    "Texts per request (p50 / p99)": [quantile(q, "predictors_request_texts") for q in (0.5, 0.99)],
    "Chunks per request (p99)": [quantile(0.99, "predictors_request_chunks")],
    "Tokens per text (p50 / p99)": [quantile(q, "predictors_text_tokens") for q in (0.5, 0.99)],
    "Padding ratio of chunks (mean)": [
        f"sum by (model) (rate(predictors_chunk_padding_ratio_sum{{{SEL}}}[{RATE}]))"
        f" / sum by (model) (rate(predictors_chunk_padding_ratio_count{{{SEL}}}[{RATE}]))"],
    "Truncated texts ratio": [
        f"sum by (model) (rate(predictors_truncated_texts_total{{{SEL}}}[{RATE}]))"
        f" / sum by (model) (rate(predictors_texts_total{{{SEL}, outcome=\"success\"}}[{RATE}]))"],
    "In flight and queued": [
        f"sum by (model) (predictors_requests_in_flight{{{SEL}}})", f"sum by (model) (predictors_queued_texts{{{SEL}}})"],
    # each task's own panels (its dashboard_panels), in the registry's order
    **{title: [expression.format(sel=SEL, rate=RATE) for expression in expressions]
       for head in TASKS.values() for title, expressions in head.dashboard_panels.items()},
    "Drift (PSI per signal)": [f"max by (model, signal) (predictors_drift_psi{{{SEL}}})"],
    "Drift window (texts)": [f"predictors_drift_window_texts{{{SEL}}}"],
    "Models: ready, load seconds, backend": [
        f"predictors_model_ready{{{SEL}}}", f"predictors_model_load_seconds{{{SEL}}}",
        f"predictors_model_info{{{SEL}}}"],
}


def expand(expression: str, model: str = ".+", rate_interval: str = "1m") -> str:
    """A dashboard expression with Grafana's variables filled in, as Grafana sends it."""
    return expression.replace("$model", model).replace("$__rate_interval", rate_interval)


@dataclass(frozen=True)
class Alert:
    name: str
    signal: str  # the PromQL whose value is compared (returns data whenever the model is scraped)
    condition: str  # appended to the signal: the firing condition
    duration: str
    summary: str  # templates use labels only (no $value), so rule unit tests can state them exactly
    labels: tuple[tuple[str, str], ...] = ()  # static labels beside severity (per-model rules name their model)

    @property
    def expr(self) -> str:
        return f"{self.signal} {self.condition}"


def p99_budget_seconds(config: ModelConfig) -> float:
    """The model's p99 latency budget: `deploy.p99_budget_seconds` where the settings have it."""
    return float(getattr(config.deploy, "p99_budget_seconds", None) or DEFAULT_P99_BUDGET_SECONDS)


def alerts(configs: list[ModelConfig]) -> list[Alert]:
    by = "model, version"
    rate = "5m"
    found = [
        Alert("PredictorsModelNotReady", "max by (model, version) (predictors_model_ready)", "== 0", "5m",
              "{{ $labels.model }} version {{ $labels.version }} is not ready (loading, failed to load or draining)"),
        Alert("PredictorsErrorRatio",
              f"sum by ({by}) (rate(predictors_requests_total{{{SERVER_SIDE_ERRORS}}}[{rate}]))"
              f" / sum by ({by}) (rate(predictors_requests_total[{rate}]))", f"> {ERROR_RATIO}", "5m",
              f"{{{{ $labels.model }}}}: over {ERROR_RATIO:.0%} of requests end in a server-side error"),
        Alert("PredictorsQueueSaturated",
              f"histogram_quantile(0.9, sum by ({by}, le) "
              f"(rate(predictors_stage_duration_seconds_bucket{{stage=\"queue\"}}[{rate}])))",
              f"> {QUEUE_WAIT_SECONDS}", "10m",
              f"{{{{ $labels.model }}}}: texts wait over {QUEUE_WAIT_SECONDS}s (p90) for a worker; add replicas or CPUs"),
        Alert("PredictorsPredictionDrift", f"max by ({by}, signal) (predictors_drift_psi)",
              # comparisons bind tighter than `and`: (psi > 0.25) and (window >= 100)
              f"> {DRIFT_ALERT_PSI} and on ({by}) predictors_drift_window_texts >= {DRIFT_MIN_WINDOW_TEXTS}", "15m",
              f"{{{{ $labels.model }}}}: {{{{ $labels.signal }}}} drifted from the build's reference (PSI over {DRIFT_ALERT_PSI})"),
    ]
    for config in configs:
        found.append(Alert(
            "PredictorsLatencyOverBudget",
            f"histogram_quantile(0.99, sum by ({by}, le) "
            f"(rate(predictors_request_duration_seconds_bucket{{model=\"{config.name}\"}}[{rate}])))",
            f"> {p99_budget_seconds(config)}", "10m",
            f"{{{{ $labels.model }}}}: p99 latency is over its budget of {p99_budget_seconds(config)}s",
            labels=(("model", config.name),),
        ))
    return found


def _rule(alert: Alert) -> dict[str, Any]:
    severity = "warning" if alert.name in ("PredictorsPredictionDrift", "PredictorsQueueSaturated") else "critical"
    return {
        "alert": alert.name,
        "expr": alert.expr,
        "for": alert.duration,
        "labels": {"severity": severity, **dict(alert.labels)},
        "annotations": {"summary": alert.summary, "description": f"{alert.name}: what to do is in docs/monitoring.md"},
    }


def render_prometheus_rule(configs: list[ModelConfig]) -> dict[str, Any]:
    return {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": {"name": "predictors", "labels": {"app.kubernetes.io/name": "predictors", **PART_OF}},
        "spec": {"groups": [{"name": "predictors", "rules": [_rule(a) for a in alerts(configs)]}]},
    }


def render_pod_monitor(configs: list[ModelConfig]) -> dict[str, Any]:
    return {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PodMonitor",
        "metadata": {"name": "predictors", "labels": {"app.kubernetes.io/name": "predictors", **PART_OF}},
        "spec": {
            "selector": {"matchExpressions": [
                {"key": "serving.kserve.io/inferenceservice", "operator": "In", "values": sorted(c.name for c in configs)},
            ]},
            "podMetricsEndpoints": [{"portNumber": HTTP_PORT, "path": "/metrics", "interval": "30s"}],
        },
    }


def render_dashboard() -> dict[str, Any]:
    datasource = {"type": "prometheus", "uid": "${datasource}"}
    panels = []
    for index, (title, expressions) in enumerate(QUERIES.items()):
        panels.append({
            "id": index + 1,
            "type": "timeseries",
            "title": title,
            "datasource": datasource,
            "gridPos": {"h": 8, "w": 12, "x": 12 * (index % 2), "y": 8 * (index // 2)},
            "targets": [
                {"refId": chr(ord("A") + i), "datasource": datasource, "expr": expression}
                for i, expression in enumerate(expressions)
            ],
        })
    return {
        "title": "predictors",
        "uid": "predictors",
        "schemaVersion": 39,
        "tags": ["predictors", "kserve"],
        "time": {"from": "now-1h", "to": "now"},
        "refresh": "30s",
        "templating": {"list": [
            {"name": "datasource", "type": "datasource", "query": "prometheus"},
            {"name": "model", "type": "query", "datasource": datasource, "includeAll": True, "multi": True,
             "allValue": ".+", "query": "label_values(predictors_model_info, model)", "refresh": 2},
        ]},
        "panels": panels,
    }


def render_kustomization() -> dict[str, Any]:
    return {
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        "resources": ["podmonitor.yaml", "prometheusrule.yaml"],
    }


def _yaml(document: dict[str, Any]) -> str:
    return yaml.safe_dump(document, sort_keys=False, default_flow_style=False, width=120, allow_unicode=True)


def render_monitoring(configs: list[ModelConfig]) -> dict[str, str]:
    """Path relative to manifests/ -> text of each monitoring file."""
    rules = "predictors/deploy/monitoring.py"
    dashboard = json.dumps(render_dashboard(), indent=1) + "\n"
    models = f"models/*/predictor.yaml and {rules}"
    return {
        "monitoring/podmonitor.yaml": HEADER.format(source=models) + _yaml(render_pod_monitor(configs)),
        "monitoring/prometheusrule.yaml": HEADER.format(source=models) + _yaml(render_prometheus_rule(configs)),
        "monitoring/dashboard.json": dashboard,
        "monitoring/kustomization.yaml": HEADER.format(source=rules) + _yaml(render_kustomization()),
    }


def rules_file(prometheus_rule: dict[str, Any]) -> str:
    """A PrometheusRule's groups as a Prometheus rule file (what promtool and prometheus read)."""
    return _yaml({"groups": prometheus_rule["spec"]["groups"]})
