"""Sampled prediction logs: for a share of requests, one JSON line each with the time, request id,
model, version, protocol, latency, the input texts (or a keyed hash of each) and the outputs -- for
monitoring and debugging what a model is sent and answers.

Settings: a model's predictor.yaml `prediction_log: {sample, path, max_mb, backups, inputs}`, each
key defaulting to the server-wide PREDICTORS_PREDICTION_LOG_* variable. Models may share a file
(every line names its model).

Where a model's inputs are personal data (TaskHead.personal_data: the task's default or the model's
`personal_data`), `inputs` defaults to `hash`: each text is written as its HMAC-SHA256 under
PREDICTORS_PREDICTION_LOG_KEY (equal texts give equal hashes, across replicas with the same key;
without a key, a random one per process), and outputs that quote the input lose those quotes
(TaskHead.without_input_text). `none` writes neither.

The request path never touches the disk: a sampled request's pieces go into a bounded queue, and a
thread per file encodes and appends the lines, rotating the file by size (the standard library's
RotatingFileHandler: `path`, `path.1` ... `path.<backups>`). A full queue, a full disk or any failed
write drops the line and never fails or slows the request: each line is counted in
predictors_prediction_log_lines_total{outcome="written"|"dropped"|"failed"}, and a failure is logged
once per outage (and its end once).
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import queue
import random
import secrets
import sys
import threading
from dataclasses import dataclass
from datetime import datetime, timezone
from logging.handlers import QueueListener, RotatingFileHandler
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import orjson

from ...model import ModelConfig, ModelConfigError
from ...model.environment import server_environment
from . import metrics

logger = logging.getLogger("kserve.predictors")

QUEUE_LINES = 10_000  # lines waiting for the disk before new ones are dropped
OUTCOMES = ("written", "dropped", "failed")


@dataclass(frozen=True)
class PredictionLogSettings:
    sample: float
    path: Path
    max_bytes: int
    backups: int
    inputs: str  # "text", "hash" or "none"


def settings_for(config: ModelConfig, personal_data: bool) -> PredictionLogSettings | None:
    """A model's prediction log settings (predictor.yaml over the server-wide ones), or None when it
    logs nothing. Raises ModelConfigError when it samples requests but names no file."""
    section, environment = config.prediction_log, server_environment()
    sample = section.sample if section.sample is not None else environment.prediction_log_sample
    if not sample:
        return None
    path = section.path or environment.prediction_log_path
    if path is None:
        raise ModelConfigError(
            f"model '{config.name}': prediction_log samples {sample:g} of the requests but names no file: set "
            "prediction_log.path in its predictor.yaml or PREDICTORS_PREDICTION_LOG_PATH"
        )
    max_mb = section.max_mb if section.max_mb is not None else environment.prediction_log_max_mb
    backups = section.backups if section.backups is not None else environment.prediction_log_backups
    return PredictionLogSettings(float(sample), Path(path), max(1, int(max_mb * 2**20)), backups,
                                 section.inputs or ("hash" if personal_data else "text"))


class _Line:
    """One sampled request, encoded on the writer's thread."""

    __slots__ = ("log", "fields", "texts", "outputs", "truncated")

    def __init__(self, log: "PredictionLog", fields: dict[str, Any], texts: Sequence[str],
                 outputs: dict[str, np.ndarray], truncated: Sequence[int]) -> None:
        self.log, self.fields, self.texts, self.outputs, self.truncated = log, fields, texts, outputs, truncated

    def encode(self) -> bytes:
        log = self.log
        record = dict(self.fields)
        outputs = {name: values.tolist() for name, values in self.outputs.items()}
        if log.settings.inputs == "text":
            record["inputs"] = list(self.texts)
        else:
            outputs = log.head.without_input_text(outputs)
            if log.settings.inputs == "hash":
                record["inputs_hmac_sha256"] = [
                    hmac.new(log.key, text.encode("utf-8", "surrogatepass"), hashlib.sha256).hexdigest()
                    for text in self.texts
                ]
        record["outputs"] = outputs
        record["truncated"] = list(self.truncated)
        return orjson.dumps(record)


class _LineFile(RotatingFileHandler):
    """The standard rotating file, reporting each line's outcome instead of printing a traceback."""

    def __init__(self, path: Path, max_bytes: int, backups: int) -> None:
        super().__init__(path, maxBytes=max_bytes, backupCount=backups, encoding="utf-8", delay=True)
        self.setFormatter(logging.Formatter("%(message)s"))
        self.failing = False
        self._error: BaseException | None = None

    def emit(self, record: logging.LogRecord) -> None:
        line: _Line = record.msg  # type: ignore[assignment]
        try:
            record.msg, record.args = line.encode().decode("utf-8"), None
        except Exception as exc:  # noqa: BLE001 -- an output that cannot be encoded is one failed line
            self._error = exc
        else:
            self._error = None
            super().emit(record)  # failures reach handleError
        self._outcome(line, self._error)

    def handleError(self, record: logging.LogRecord) -> None:  # noqa: N802 -- logging's name
        self._error = sys.exc_info()[1]
        self._drop_stream()  # the next line opens the file afresh (a freed disk, a file removed or rotated away)

    def _drop_stream(self) -> None:
        stream, self.stream = self.stream, None
        if stream is not None:
            try:
                stream.close()  # flushes what a failed write left buffered: fails again on a full disk
            except OSError:
                pass

    def close(self) -> None:
        try:
            super().close()
        except OSError:  # what a failed write left buffered (that line was counted as failed) cannot be flushed either
            self._drop_stream()

    def _outcome(self, line: _Line, error: BaseException | None) -> None:
        line.log.count("failed" if error else "written")
        if error is not None and not self.failing:
            self.failing = True
            logger.warning("prediction log %s: cannot write (%s: %s); requests are served as usual, lines are "
                           "dropped and counted in predictors_prediction_log_lines_total{outcome=\"failed\"}",
                           self.baseFilename, type(error).__name__, error)
        elif error is None and self.failing:
            self.failing = False
            logger.info("prediction log %s: writing again", self.baseFilename)


class _Writer:
    """One file's queue and writer thread."""

    def __init__(self, path: Path, max_bytes: int, backups: int) -> None:
        self.queue: queue.Queue[logging.LogRecord] = queue.Queue(QUEUE_LINES)
        self.file = _LineFile(path, max_bytes, backups)
        self.listener = QueueListener(self.queue, self.file)
        self.listener.start()

    def offer(self, line: _Line) -> bool:
        record = logging.LogRecord("predictors.prediction_log", logging.INFO, "", 0, line, None, None)
        try:
            self.queue.put_nowait(record)
        except queue.Full:
            return False
        return True

    def close(self) -> None:
        self.listener.stop()  # writes what is queued
        self.file.close()


_writers: dict[Path, _Writer] = {}
_writers_lock = threading.Lock()
_process_key: bytes | None = None


def _writer(settings: PredictionLogSettings) -> _Writer:
    path = settings.path.resolve()
    with _writers_lock:
        if path not in _writers:
            path.parent.mkdir(parents=True, exist_ok=True)
            _writers[path] = _Writer(path, settings.max_bytes, settings.backups)
        return _writers[path]


def _hash_key() -> bytes:
    global _process_key
    configured = server_environment().prediction_log_key
    if configured:
        return configured.encode()
    with _writers_lock:
        if _process_key is None:
            _process_key = secrets.token_bytes(32)
            logger.warning("prediction logs hash personal-data texts with a random key of this process: hashes "
                           "match only within it; set PREDICTORS_PREDICTION_LOG_KEY for hashes that match across "
                           "restarts and replicas")
        return _process_key


def close_all() -> None:
    """Write what is queued and close the files (server shutdown)."""
    with _writers_lock:
        writers = list(_writers.values())
        _writers.clear()
    for writer in writers:
        writer.close()


class PredictionLog:
    """One loaded model version's sampled log."""

    def __init__(self, config: ModelConfig, head: Any, settings: PredictionLogSettings) -> None:
        self.settings = settings
        self.head = head
        self.labels = (config.name, str(config.version))
        self.key = _hash_key() if settings.inputs == "hash" else b""
        try:
            self.writer: _Writer | None = _writer(settings)
        except OSError as exc:  # the folder cannot be made: nothing is written, requests are served
            logger.warning("prediction log %s: cannot create its folder (%s); model %s logs nothing",
                           settings.path, exc, config.name)
            self.writer = None
        for outcome in OUTCOMES:
            metrics.PREDICTION_LOG_LINES.labels(*self.labels, outcome)

    @classmethod
    def for_model(cls, config: ModelConfig, head: Any) -> "PredictionLog | None":
        settings = settings_for(config, head.personal_data)
        return cls(config, head, settings) if settings is not None else None

    def count(self, outcome: str) -> None:
        metrics.PREDICTION_LOG_LINES.labels(*self.labels, outcome).inc()

    def offer(self, request_id: str | None, protocol: str | None, texts: Sequence[str],
              outputs: dict[str, np.ndarray], truncated: Sequence[int], latency_ms: float | None) -> None:
        """Log this request if it is sampled; never raises, never waits for the disk."""
        if random.random() >= self.settings.sample:
            return
        fields = {
            "time": datetime.now(timezone.utc).isoformat(timespec="milliseconds"),
            "request_id": request_id, "model": self.labels[0], "version": self.labels[1], "protocol": protocol,
            "latency_ms": latency_ms, "texts": len(texts),
        }
        if self.writer is None or not self.writer.offer(_Line(self, fields, texts, outputs, truncated)):
            self.count("dropped" if self.writer is not None else "failed")
