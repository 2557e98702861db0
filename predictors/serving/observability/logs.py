"""Log lines that carry the request: model and request id on every line written while a request
runs, in kserve's text format or (`serve --log-format json`) one JSON object per line."""

from __future__ import annotations

import json
import logging
from datetime import datetime, timezone

from kserve.logging import configure_logging as configure_kserve_logging

from ..request_context import current

LOG_FORMATS = ("text", "json")
#: The loggers kserve's configuration gives handlers to (predictors' own log through "kserve").
LOGGERS = ("kserve", "kserve.trace", "uvicorn", "uvicorn.access")


class RequestContextFilter(logging.Filter):
    """Adds `request_id` and `model` to every record (None outside a request)."""

    def filter(self, record: logging.LogRecord) -> bool:
        context = current()
        record.request_id = context.request_id if context else None
        record.model = context.model if context else None
        return True


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "timestamp": datetime.fromtimestamp(record.created, timezone.utc).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "model": getattr(record, "model", None),
            "request_id": getattr(record, "request_id", None),
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


class RequestTextFormatter(logging.Formatter):
    """kserve's own format, with ` [model=... request_id=...]` appended inside a request."""

    def __init__(self, inner: logging.Formatter) -> None:
        super().__init__()
        self.inner = inner

    def format(self, record: logging.LogRecord) -> str:
        line = self.inner.format(record)
        request_id = getattr(record, "request_id", None)
        if request_id is None:
            return line
        return f"{line} [model={getattr(record, 'model', None) or '-'} request_id={request_id}]"


def configure_logging(log_format: str = "text", log_config_file: str | None = None) -> None:
    """kserve's logging configuration (or the --log_config_file it reads), every handler of it
    tagged with the request context. Call before the server starts."""
    if log_format not in LOG_FORMATS:
        raise ValueError(f"log format must be one of {LOG_FORMATS}, got {log_format!r}")
    configure_kserve_logging(log_config_file)
    for name in LOGGERS:
        for handler in logging.getLogger(name).handlers:
            if any(isinstance(f, RequestContextFilter) for f in handler.filters):
                continue
            handler.addFilter(RequestContextFilter())
            inner = handler.formatter or logging.Formatter()
            handler.setFormatter(JsonFormatter() if log_format == "json" else RequestTextFormatter(inner))
