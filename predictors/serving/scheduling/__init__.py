"""Scheduling: the per-model queue and its workers, admission at the door and in the queue,
deadlines, compute slots, chunking and the response cache. Below the model core; reports to
observability only through the hooks the model core gives it."""

from .admission import DEFAULT_TIMEOUT_MS, LOAD_WAITED, REQUEST_TIMEOUT, after_load_wait, request_timeout_seconds
from .cache import ResponseCache, build_cache, lookup_then_compute
from .door import DOOR_TICKET, DoorTicket
from .scheduler import RanBatch, RequestRuns, Scheduler, SchedulerHooks, TextResult, assemble, settings_for

__all__ = [
    "DEFAULT_TIMEOUT_MS", "DOOR_TICKET", "LOAD_WAITED", "after_load_wait", "DoorTicket", "REQUEST_TIMEOUT", "RanBatch",
    "RequestRuns", "ResponseCache", "Scheduler", "SchedulerHooks",
    "TextResult", "assemble", "build_cache", "lookup_then_compute", "request_timeout_seconds", "settings_for",
]
