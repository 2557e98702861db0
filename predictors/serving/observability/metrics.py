"""Prometheus metrics of every served model, on the HTTP port's /metrics next to kserve's own.

kserve 0.21 serves prometheus_client's default REGISTRY at /metrics; everything here registers
there, so one scrape holds both. Names start with `predictors_`; every series carries `model` and
`version`; other labels are bounded (protocol, outcome, stage, the model's own labels, drift
signal) -- never a text or a request id. docs/monitoring.md lists each metric and its meaning.

The serving code calls the small `observe_*` functions below; the model-state series (ready, load
seconds, info, drift) are read from the tracked models when /metrics is scraped.
"""

from __future__ import annotations

import math
import threading
import weakref
from typing import Any, Iterable

import numpy as np
from kserve.errors import InvalidInput, ModelNotFound, ModelNotReady, ServerNotReady, UnsupportedProtocol
from prometheus_client import REGISTRY, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from ...tasks import TASKS, TaskMetric
from . import drift

MODEL_LABELS = ("model", "version")
#: 1 ms .. 30 s, roughly three buckets per decade.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0)
COUNT_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
TOKEN_BUCKETS = (8, 16, 32, 64, 128, 256, 384, 512)
RATIO_BUCKETS = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)

PROTOCOLS = ("v2_rest", "v2_grpc", "v1", "openai")
OUTCOMES = ("success", "client_error", "overloaded", "not_ready", "timeout", "server_error")
STAGES = ("queue", "tokenize", "backend", "postprocess")

REQUESTS = Counter(
    "predictors_requests", "Inference requests answered, by protocol and outcome (success or error class).",
    [*MODEL_LABELS, "protocol", "outcome"],
)
TEXTS = Counter(
    "predictors_texts", "Texts in answered inference requests, by protocol and outcome.",
    [*MODEL_LABELS, "protocol", "outcome"],
)
REQUEST_SECONDS = Histogram(
    "predictors_request_duration_seconds", "Whole inference request, from arrival to the last byte of the answer.",
    [*MODEL_LABELS, "protocol"], buckets=LATENCY_BUCKETS,
)
STAGE_SECONDS = Histogram(
    "predictors_stage_duration_seconds",
    "One stage of inference: queue (waiting for a worker), tokenize (text cleaning and tokenizing; the cleaning alone "
    "for a model that takes texts), backend (model run), postprocess (task head).",
    [*MODEL_LABELS, "stage"], buckets=LATENCY_BUCKETS,
)
TEXTS_PER_REQUEST = Histogram("predictors_request_texts", "Texts per inference request.", MODEL_LABELS, buckets=COUNT_BUCKETS)
CHUNKS_PER_REQUEST = Histogram(
    "predictors_request_chunks", "Chunks (backend runs) per inference request.", MODEL_LABELS, buckets=COUNT_BUCKETS
)
BATCH_TEXTS = Histogram(
    "predictors_batch_texts", "Texts per batch a worker ran (one backend run, across requests where the backend batches).",
    MODEL_LABELS, buckets=COUNT_BUCKETS,
)
TOKENS_PER_TEXT = Histogram(
    "predictors_text_tokens", "Tokens per text after truncation, special tokens included; for a model that takes "
    "texts (a scikit-learn pipeline), the words of the cleaned text.", MODEL_LABELS,
    buckets=TOKEN_BUCKETS,
)
TRUNCATED = Counter("predictors_truncated_texts", "Texts cut at the model's max_length (or character limit).", MODEL_LABELS)
PADDING = Histogram(
    "predictors_chunk_padding_ratio", "Share of a chunk's token slots that are padding.", MODEL_LABELS,
    buckets=RATIO_BUCKETS,
)
PREDICTION_LOG_LINES = Counter(
    "predictors_prediction_log_lines",
    "Sampled requests' prediction log lines: written, dropped (the writer's queue was full) or failed (the write failed).",
    [*MODEL_LABELS, "outcome"],
)
IN_FLIGHT = Gauge("predictors_requests_in_flight", "Inference requests being served now.", MODEL_LABELS)
QUEUED = Gauge("predictors_queued_texts", "Texts waiting for a worker.", MODEL_LABELS)

# ---- many models in one pod: loads, evictions, memory, cold starts, downloads -------------------
#: Why a model was loaded (the `reason` label of predictors_model_loads_total).
LOAD_REASONS = ("startup", "first_request", "repository_api", "watch")
#: How a load ended: loaded, failed (its files), no_room (the memory budget), or download_failed.
LOAD_OUTCOMES = ("loaded", "failed", "no_room", "download_failed")
#: Why a model was freed without an unload call: room for another model, idle (on_demand), or
#: the process's resident memory over the container's limit less the margin.
EVICTION_REASONS = ("budget", "idle", "memory_pressure")
COLD_START_BUCKETS = (0.05, 0.1, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 7.5, 10.0, 15.0, 20.0, 30.0, 60.0)
LOADS = Counter("predictors_model_loads", "Model loads, by why they happened and how they ended.", ["model", "reason", "outcome"])
EVICTIONS = Counter("predictors_model_evictions", "Models freed without an unload call, by why.", ["model", "reason"])
COLD_START_WAIT = Histogram(
    "predictors_cold_start_wait_seconds",
    "How long a request waited for its model to be loaded (a lazy or on_demand model that was not in memory).",
    ["model"], buckets=COLD_START_BUCKETS,
)
DOWNLOADED_BYTES = Counter("predictors_storage_downloaded_bytes", "Bytes downloaded from storage URIs.", ["model"])
DOWNLOAD_SECONDS = Histogram(
    "predictors_storage_download_seconds", "One model download from a storage URI.", ["model"], buckets=COLD_START_BUCKETS,
)


def _task_metric(metric: TaskMetric) -> Counter | Histogram:
    names = [*MODEL_LABELS, *metric.labels]
    if metric.kind == "counter":
        return Counter(metric.name, metric.help, names)
    return Histogram(metric.name, metric.help, names, buckets=metric.buckets)


#: The series the task heads observe (TaskHead.metrics), by name, for every registered task.
TASK_METRICS: dict[str, Counter | Histogram] = {
    metric.name: _task_metric(metric) for head in TASKS.values() for metric in head.metrics
}


def labels(model: Any) -> tuple[str, str]:
    return model.name, str(model.config.version)


# ---- model state, read at scrape time -----------------------------------------------------------
class _Tracked:
    def __init__(self, model: Any) -> None:
        self.model = weakref.ref(model)
        reference = drift.read_reference(model.config.path)
        self.drift = drift.DriftWindow(reference, model.head, drift.window_size_setting()) if reference else None


_tracked: dict[tuple[str, str], _Tracked] = {}
_default_versions: dict[str, str] = {}  # model -> the version its unversioned routes reach
_tracked_lock = threading.Lock()


def track(model: Any) -> None:
    """Report this model's state (ready, load seconds, backend, drift) on /metrics from now on. The
    repository calls it when the instance starts serving, so an instance that fails to load never
    takes over the series of the one still serving the same version."""
    entry = _Tracked(model)
    with _tracked_lock:
        _tracked[labels(model)] = entry
    _initialize_series(model)


def serve_default(name: str, version: str | None) -> None:
    """The version `name`'s unversioned routes reach now (None: none), for labelling their requests."""
    with _tracked_lock:
        if version is None:
            _default_versions.pop(name, None)
        else:
            _default_versions[name] = version


def _initialize_series(model: Any) -> None:
    """Every series of the model at 0 from the start, so ratios and alerts have data before the
    first error (Prometheus's advice for labelled metrics)."""
    key = labels(model)
    for protocol in PROTOCOLS:
        REQUEST_SECONDS.labels(*key, protocol)
        for outcome in OUTCOMES:
            REQUESTS.labels(*key, protocol, outcome)
            TEXTS.labels(*key, protocol, outcome)
    for stage in STAGES:
        STAGE_SECONDS.labels(*key, stage)
    for metric in (TEXTS_PER_REQUEST, CHUNKS_PER_REQUEST, BATCH_TEXTS, TOKENS_PER_TEXT, TRUNCATED, PADDING, IN_FLIGHT, QUEUED):
        metric.labels(*key)
    label_values = model.head.metric_label_values()
    for metric in model.head.metrics:
        for values in label_values.get(metric.name, [()]) if metric.labels else [()]:
            TASK_METRICS[metric.name].labels(*key, *values)


def tracked(name: str, version: str | None = None) -> tuple[str, str] | None:
    """The (model, version) label values for a request naming `name` (and maybe a version), or
    None for a model this server does not serve (never a label: names are client input)."""
    with _tracked_lock:
        version = version if version is not None else _default_versions.get(name)
        entry = _tracked.get((name, version)) if version is not None else None
        return (name, version) if entry is not None and entry.model() is not None else None


def drift_window(model: Any) -> drift.DriftWindow | None:
    entry = _tracked.get(labels(model))
    return entry.drift if entry is not None else None


class ModelStateCollector(Collector):
    def collect(self) -> Iterable[Metric]:
        ready = GaugeMetricFamily("predictors_model_ready", "1 once the model loaded and answered its warm-up.", labels=MODEL_LABELS)
        load = GaugeMetricFamily("predictors_model_load_seconds", "Seconds the last load took (weights, tokenizer, warm-up).", labels=MODEL_LABELS)
        info = GaugeMetricFamily(
            "predictors_model_info", "Always 1; the labels say which backend, weights file and task serve the model.",
            labels=[*MODEL_LABELS, "backend", "weights", "task"],
        )
        psi = GaugeMetricFamily(
            "predictors_drift_psi", "Population stability index of a prediction signal: the window vs the build's reference.",
            labels=[*MODEL_LABELS, "signal"],
        )
        window = GaugeMetricFamily("predictors_drift_window_texts", "Texts in the drift window.", labels=MODEL_LABELS)
        with _tracked_lock:
            entries = list(_tracked.items())
        for key, entry in entries:
            model = entry.model()
            if model is None:
                continue
            ready.add_metric(key, 1.0 if model.ready else 0.0)
            if model.load_seconds is not None:
                load.add_metric(key, float(model.load_seconds))
            if model.choice is not None:
                info.add_metric([*key, model.choice.name, model.choice.weights.name, model.config.task], 1.0)
            if entry.drift is not None:
                window.add_metric(key, float(len(entry.drift)))
                for signal in entry.drift.reference.signals:
                    value = entry.drift.psi(signal)
                    if not math.isnan(value):
                        psi.add_metric([*key, signal], value)
        return [ready, load, info, psi, window]


REGISTRY.register(ModelStateCollector())


def known_model(model: str) -> None:
    """A model the repository knows (loaded or not): its load, eviction and cold-start series exist
    from now on at 0, so rates and alerts have data before the first eviction."""
    for outcome in ("loaded", "no_room"):  # the series an alert on cold starts or a full budget reads
        LOADS.labels(model, "first_request", outcome)
    for reason in EVICTION_REASONS:
        EVICTIONS.labels(model, reason)
    COLD_START_WAIT.labels(model)


def observe_load(model: str, reason: str, outcome: str) -> None:
    LOADS.labels(model, reason, outcome).inc()


def observe_eviction(model: str, reason: str) -> None:
    EVICTIONS.labels(model, reason).inc()


def observe_cold_start(model: str, seconds: float) -> None:
    COLD_START_WAIT.labels(model).observe(seconds)


def observe_download(model: str, size: int, seconds: float) -> None:
    DOWNLOADED_BYTES.labels(model).inc(size)
    DOWNLOAD_SECONDS.labels(model).observe(seconds)


#: The repository's memory report, read at scrape time: {"budget": bytes | None, "used": bytes,
#: "models": {(model, version): resident bytes}}.
MemoryReport = dict[str, Any]
_memory_report: list[Callable[[], MemoryReport]] = []


def report_memory(source: Callable[[], MemoryReport]) -> None:
    """Serve the models' memory on /metrics from `source` (the repository's), from now on."""
    _memory_report[:] = [source]


class MemoryCollector(Collector):
    def collect(self) -> Iterable[Metric]:
        resident = GaugeMetricFamily(
            "predictors_model_resident_bytes", "Resident memory a loaded model added, measured at its load.", labels=MODEL_LABELS)
        budget = GaugeMetricFamily("predictors_model_memory_budget_bytes", "What the loaded models may use together.")
        used = GaugeMetricFamily("predictors_model_memory_used_bytes",
                                 "What the loaded models use together, as the budget counts it.")
        if _memory_report:
            report = _memory_report[0]()
            for key, size in sorted(report["models"].items()):
                resident.add_metric(list(key), float(size))
            if report["budget"] is not None:
                budget.add_metric([], float(report["budget"]))
            used.add_metric([], float(report["used"]))
        return [resident, budget, used]


REGISTRY.register(MemoryCollector())


# ---- request outcome ----------------------------------------------------------------------------
def outcome_for_status(status: int) -> str:
    if status < 400:
        return "success"
    if status == 503:
        return "not_ready"
    if status == 429:  # refused by admission control: a capacity signal, not a client mistake
        return "overloaded"
    if status in (408, 504):
        return "timeout"
    return "client_error" if status < 500 else "server_error"


def outcome_for_exception(exc: BaseException | None) -> str:
    if exc is None:
        return "success"
    status = getattr(exc, "http_status", None)  # the serving layer's own errors carry their status
    if status is not None:
        return outcome_for_status(int(status))
    if isinstance(exc, (ModelNotReady, ServerNotReady)):
        return "not_ready"
    if isinstance(exc, TimeoutError):
        return "timeout"
    if isinstance(exc, (InvalidInput, UnsupportedProtocol, ModelNotFound, NotImplementedError)):
        return "client_error"
    return "server_error"


def observe_request(key: tuple[str, str], protocol: str, outcome: str, seconds: float, texts: int) -> None:
    REQUESTS.labels(*key, protocol, outcome).inc()
    if texts:
        TEXTS.labels(*key, protocol, outcome).inc(texts)
    REQUEST_SECONDS.labels(*key, protocol).observe(seconds)


def in_flight(key: tuple[str, str], change: int) -> None:
    IN_FLIGHT.labels(*key).inc(change)


# ---- inside the model ---------------------------------------------------------------------------
def observe_stage(model: Any, stage: str, seconds: float) -> None:
    """One batch's `stage` (tokenize, backend, postprocess) took `seconds`."""
    STAGE_SECONDS.labels(*labels(model), stage).observe(seconds)


def observe_queue_wait(model: Any, seconds: float, texts: int, key: tuple[str, str] | None = None) -> None:
    """A batch of `texts` left the queue after `seconds` (for a scheduler that counted them in with
    `QUEUED.labels(...).inc`)."""
    key = key or labels(model)
    QUEUED.labels(*key).dec(texts)
    STAGE_SECONDS.labels(*key, "queue").observe(seconds)
    BATCH_TEXTS.labels(*key).observe(texts)


def observe_tokens(model: Any, tokens: Any, padded_tokens: int) -> None:
    """Tokens per text of one batch a worker ran, and the share of its padded token slots that are padding."""
    key = labels(model)
    histogram = TOKENS_PER_TEXT.labels(*key)
    for count in tokens:
        histogram.observe(float(count))
    if padded_tokens:
        PADDING.labels(*key).observe(1.0 - float(sum(tokens)) / padded_tokens)


def observe_plan(model: Any, texts: int, chunks: int) -> None:
    key = labels(model)
    TEXTS_PER_REQUEST.labels(*key).observe(texts)
    CHUNKS_PER_REQUEST.labels(*key).observe(chunks)


def observe_predictions(model: Any, outputs: dict[str, Any], truncated: int) -> None:
    """What the model predicted for one request's texts: labels, scores, entities, truncation, drift."""
    key = labels(model)
    if truncated:
        TRUNCATED.labels(*key).inc(truncated)
    for name, values, value in model.head.observe(outputs):
        series = TASK_METRICS[name].labels(*key, *values)
        if isinstance(series, Counter):
            series.inc(value)
        else:
            series.observe(value)
    window = drift_window(model)
    if window is not None:
        window.observe(outputs)
