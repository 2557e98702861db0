"""The model repository: model folders by name, each with its loaded versions, and the lifecycle
(load, hot swap, unload, watch, lazy loads, eviction) that never drops an accepted request.

A model `models/<name>/` has versions (numbered sub-folders, or the folder itself as version 1);
its `version_policy` says which are served. Loading a version happens off the event loop while
the serving versions keep answering; once it has answered its warm-up, the route switches in one
step on the event loop, and the version it replaces stops admitting, drains its in-flight requests
(bounded) and is freed. A version that fails to load leaves the serving one untouched, and the
index and the load call say why. Unversioned routes reach the model's default version: the highest
one that is ready.

Many models in one pod (docs/multi-model.md):

- **When a model is loaded** (`loading` in predictor.yaml, PREDICTORS_LOADING for the rest):
  `startup` at the server's start (as before), `lazy` on its first request (until then it is
  UNLOADED and holds no memory; concurrent first requests share one load, each waiting at most its
  deadline), `on_demand` like lazy and freed again after `idle_unload_seconds` without requests.
  Lazy and on-demand models never hold the server's readiness back.
- **A memory budget** (budget.py): loads run one at a time, each measured (resident memory added,
  and the peak while loading); a load that would not fit first evicts the least recently used idle
  models that are not `startup` models. Eviction drains like unload and then the model is UNLOADED
  again: its next request loads it. If nothing can be evicted, the load is refused with 503 and
  Retry-After, naming the budget.
- **Models from a storage URI** (storage/): `storage_uri` in predictor.yaml, or a repository load
  with a `storage_uri` parameter (allowed prefixes only: PREDICTORS_STORAGE_ALLOW). The files are
  downloaded with KServe's storage library into a cache folder, renamed into place when complete,
  and then loaded as any folder, versions included.
"""

from __future__ import annotations

import asyncio
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from kserve.model_repository import ModelRepository

from ..model import (
    ModelConfigError,
    ModelNameError,
    ModelSettingsError,
    PredictorSettings,
    StorageUri,
    StorageUriError,
    check_model_name,
    folder_fingerprint,
    is_model_folder,
    parse_storage_uri,
    read_build_status,
    read_settings,
    select_versions,
    version_folders,
)
from ..model.build_status import BuildStatus
from ..model.environment import ServerEnvironment
from ..model.files import PREDICTOR_FILE
from ..backends import NoBackendError, choose_backend, load_model_config
from .budget import MemoryBudget, ModelSize, Resident, format_bytes, guess_size, measured_size, plan_evictions, resolve_budget
from .errors import (
    BadModelName, BadRequest, DeadlineExceeded, LoadFailed, ModelUnavailable, NameTaken, NoMemoryForModel, Refused,
    ServingError, UnknownModel, UnknownVersion,
)
from .memory import container_memory_limit, peak_bytes, release_memory, reset_peak, resident_bytes
from .observability import metrics
from .predictor import TextPredictor
from .scheduling import LOAD_WAITED
from .scheduling.compute_slots import lower_this_threads_priority
from .storage.access import AccessRefused, StorageAccess
from .storage.cache import StorageCache

logger = logging.getLogger("kserve.predictors")

READY, LOADING, UNAVAILABLE, UNLOADED = "READY", "LOADING", "UNAVAILABLE", "UNLOADED"
STARTUP, LAZY, ON_DEMAND = "startup", "lazy", "on_demand"
LOADS_ON_REQUEST = (LAZY, ON_DEMAND)
VERSION_SEPARATOR = "/versions/"  # internal registry key of one version: "<name>/versions/<v>"
#: After a load started by a request failed, requests get that failure (503) for this long before
#: one tries again, so a broken lazy model is not loaded once per request.
RETRY_FAILED_LOAD_SECONDS = 10.0
#: How often the housekeeping loop looks for idle on_demand models and memory pressure.
HOUSEKEEPING_SECONDS = 1.0
#: Eviction rounds one load may take before giving up (each round re-measures the process).
MAX_EVICTION_ROUNDS = 8
#: A load that would fit once busy models finish their requests waits this long for them (each
#: waiting request at most its own deadline) before it is refused with 503: under a rotating
#: workload a model is busy for milliseconds at a time.
ROOM_WAIT_SECONDS = 10.0
ROOM_POLL_SECONDS = 0.02


def versioned_key(name: str, version: str) -> str:
    return f"{name}{VERSION_SEPARATOR}{version}"


@dataclass
class VersionSlot:
    version: str
    state: str
    reason: str = ""
    predictor: TextPredictor | None = None  # the instance serving this version (READY)
    fingerprint: tuple = ()


@dataclass
class ModelEntry:
    name: str
    folder: Path | None  # models/<name>/; None for a model a repository load fetched from a URI
    slots: dict[str, VersionSlot] = field(default_factory=dict)
    default: str | None = None  # the version unversioned routes reach
    error: str = ""  # why the model as a whole cannot load (settings, no versions...)
    unloaded: bool = False  # by an unload call (an evicted model is not: its next request loads it)
    seen: tuple | None = None  # the folder's state at the last load attempt (see folder_state)
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    settings: PredictorSettings | None = None  # the repository-level keys, as last read
    loading: str = STARTUP
    idle_unload_seconds: float | None = None
    source: StorageUri | None = None  # where the files come from, when not from `folder`
    source_from_api: bool = False  # given by a repository load (allow-listed), not by predictor.yaml
    content: Path | None = None  # the folder the versions are read from: `folder` or the cache copy
    last_used: float = 0.0  # monotonic time of the last request (or load): the LRU order
    pending: asyncio.Future | None = None  # a load started by requests, shared by all of them
    evicted: str = ""  # why it is not in memory any more, until its next load
    failure: str = ""  # why the last load failed (files, download), until one succeeds
    failed_at: float | None = None
    downloaded: dict[str, Any] | None = None  # the last download: bytes, files, seconds

    def ready_versions(self) -> list[str]:
        return sorted((v for v, s in self.slots.items() if s.state == READY and s.predictor), key=int)

    def serving(self) -> TextPredictor | None:
        slot = self.slots.get(self.default or "")
        return slot.predictor if slot and slot.state == READY else None

    def loaded(self) -> list[TextPredictor]:
        return [s.predictor for s in self.slots.values() if s.predictor is not None]

    @property
    def loads_lazily(self) -> bool:
        return self.loading in LOADS_ON_REQUEST


def folder_state(folder: Path | None) -> tuple:
    """What a reload depends on: the model's predictor.yaml and every version folder's files."""
    if folder is None:
        return ()
    settings = folder / PREDICTOR_FILE
    stat = settings.stat() if settings.is_file() else None
    return (
        (stat.st_size, stat.st_mtime_ns) if stat else None,
        tuple((number, folder_fingerprint(path)) for number, path in version_folders(folder).items()),
    )


def _retrieve(future: asyncio.Future) -> None:
    """A shared load nobody awaited any more (every waiter timed out) must not log 'never retrieved'."""
    if not future.cancelled():
        future.exception()


class PredictorRepository(ModelRepository):
    """kserve's ModelRepository over model folders, with versions, lazy loads, a memory budget and
    storage URIs."""

    def __init__(self, models_dir: str | Path, drain_seconds: float = 30.0, strict: bool = False,
                 predictor_class: type[TextPredictor] = TextPredictor, *, loading: str = STARTUP,
                 idle_unload_seconds: float = 300.0, model_memory: int | None = None,
                 storage_access: StorageAccess | None = None, storage_cache: StorageCache | None = None,
                 read_only: bool = False) -> None:
        super().__init__(str(models_dir))
        self.predictor_class = predictor_class  # what serves a loaded version (unit tests give a stand-in)
        self.root = Path(models_dir)
        self.entries: dict[str, ModelEntry] = {}
        self.drain_seconds = drain_seconds
        # Container mode (one model): a model that failed to load keeps the server unready.
        self.strict = strict
        self.enable_latency_logging = True
        self.default_loading = loading
        self.default_idle_unload_seconds = idle_unload_seconds
        self.model_memory = model_memory
        self.budget: MemoryBudget = resolve_budget(model_memory, None, None)
        self.sizes: dict[tuple[str, str], ModelSize] = {}  # (model, version) -> measured (or guessed) size
        # (model, version, files' fingerprint) -> seconds per text its scheduler measured, kept when it
        # is evicted: its next load seeds the queue bound from it instead of a calibration run.
        self.throughput: dict[tuple[str, str, tuple], float] = {}
        self.access = storage_access or StorageAccess(())
        self.cache = storage_cache or StorageCache()
        self.read_only = read_only
        self._load_slot = asyncio.Lock()  # one load at a time, so each measurement is that model's own
        # Loads run on a thread of their own at the inference workers' low CPU priority: a cold start
        # shares the CPUs with the models serving meanwhile instead of pre-empting them, and the
        # event loop (probes, refusals, other models' requests) never waits behind it.
        self._loader = ThreadPoolExecutor(max_workers=1, thread_name_prefix="model-load",
                                          initializer=lower_this_threads_priority)
        self.room_wait_seconds = ROOM_WAIT_SECONDS
        metrics.report_memory(self.memory_report)

    @classmethod
    def from_environment(cls, models_dir: str | Path, environment: ServerEnvironment, **kwargs: Any) -> "PredictorRepository":
        """The repository as the PREDICTORS_* settings configure it."""
        return cls(
            models_dir, loading=environment.loading, idle_unload_seconds=environment.idle_unload_seconds,
            model_memory=environment.model_memory, storage_access=StorageAccess(environment.storage_allow),
            storage_cache=StorageCache(environment.storage_cache, environment.storage_timeout),
            read_only=environment.repository_api == "read-only", **kwargs,
        )

    # ---- kserve's repository interface -------------------------------------------------------
    def get_model(self, name: str) -> TextPredictor | None:
        base, _, version = name.partition(VERSION_SEPARATOR)
        entry = self.entries.get(base)
        if entry is None:
            return None
        if version:
            slot = entry.slots.get(version)
            return slot.predictor if slot and slot.state == READY else None
        return entry.serving()

    def get_models(self) -> dict[str, TextPredictor]:
        return {name: model for name, entry in self.entries.items() if (model := entry.serving()) is not None}

    async def is_model_ready(self, name: str) -> bool:
        return self.get_model(name) is not None

    def update(self, model: Any, name: str | None = None) -> None:  # kserve API; models come from folders
        raise NotImplementedError("models are added by putting a folder into the models folder")

    def resolve(self, name: str, version: str | None = None) -> TextPredictor:
        """The predictor serving `name` (`version`), or the error that says why there is none."""
        entry = self.entries.get(name)
        if entry is None:
            raise UnknownModel(f"model '{name}' is not in the repository; models: {sorted(self.entries)}")
        if version is not None:
            slot = entry.slots.get(str(version))
            if slot is None or slot.state != READY:
                loaded = entry.ready_versions()
                if slot is not None and slot.state == LOADING:
                    raise ModelUnavailable(f"model '{name}' version {version} is loading; ready versions: {loaded}")
                if not loaded and not entry.slots:
                    raise ModelUnavailable(f"model '{name}' is not ready: {self.reason(entry)}")
                raise UnknownVersion(f"model '{name}' has no version {version} loaded; loaded versions: {loaded}")
            return slot.predictor
        model = entry.serving()
        if model is None:
            raise ModelUnavailable(f"model '{name}' is not ready: {self.reason(entry)}")
        return model

    def check_servable(self, name: str, version: str | None = None) -> None:
        """Nothing when a request to `name` (`version`) will be answered: the model is loaded, or it
        loads on its first request; else the error resolve() gives."""
        entry = self.entries.get(name)
        if entry is not None and entry.serving() is None and self._loads_on_request(entry):
            return
        self.resolve(name, version)

    async def acquire(self, name: str, version: str | None = None,
                      deadline_seconds: Callable[[], float | None] = lambda: None) -> TextPredictor:
        """The predictor to answer a request with. A lazy or on_demand model not in memory is loaded
        first: the request joins the load already running (or starts it) and waits at most its
        deadline (`deadline_seconds()`, read only then): past it, 504, while the load goes on for the
        requests after it. The wait is taken off the request's deadline (LOAD_WAITED)."""
        entry = self.entries.get(name)
        for _ in range(3):  # a model loaded for this request may be evicted before it runs: load again
            if entry is None:
                break
            model = entry.serving() if version is None else self.get_model(versioned_key(name, version))
            if model is not None and model.accepting:
                entry.last_used = time.monotonic()
                return model
            if model is not None or entry.serving() is not None or not self._loads_on_request(entry):
                break  # loaded (a missing version is resolve's 404) or not loadable: resolve says why
            await self._wait_for_load(entry, deadline_seconds())
        model = self.resolve(name, version)
        if entry is not None:
            entry.last_used = time.monotonic()
        return model

    async def _wait_for_load(self, entry: ModelEntry, deadline: float | None) -> None:
        if entry.pending is None or entry.pending.done():
            entry.pending = asyncio.ensure_future(self._load_for_requests(entry))
            entry.pending.add_done_callback(_retrieve)
        started = time.monotonic()
        try:
            await asyncio.wait_for(asyncio.shield(entry.pending), timeout=deadline)
        except asyncio.TimeoutError:
            raise DeadlineExceeded(
                f"model '{entry.name}' ({entry.loading}) was not in memory and its load did not finish within this "
                f"request's {deadline * 1000:.0f} ms deadline (the timeout_ms parameter or header); the load goes "
                "on: retry shortly"
            ) from None
        finally:
            waited = time.monotonic() - started
            metrics.observe_cold_start(entry.name, waited)
        LOAD_WAITED.set(waited)

    async def _load_for_requests(self, entry: ModelEntry) -> None:
        async with entry.lock:
            if entry.serving() is not None or not self._loads_on_request(entry):
                return  # loaded (or unloaded) while this waited for the lock
            try:
                await self._load(entry, "first_request")
            except LoadFailed as exc:  # for a request, a model that cannot load is unavailable (503)
                if entry.serving() is None:
                    raise ModelUnavailable(f"model '{entry.name}' failed to load for this request: {exc.message}") from None

    def _loads_on_request(self, entry: ModelEntry) -> bool:
        """A lazy or on_demand model not in memory that a request may load now."""
        if not entry.loads_lazily or entry.unloaded or entry.error or self._build(entry) is not None:
            return False
        if entry.failed_at is not None and time.monotonic() - entry.failed_at < RETRY_FAILED_LOAD_SECONDS \
                and folder_state(entry.folder) == entry.seen:
            return False
        return True

    # ---- state for the index, readiness and errors -------------------------------------------
    def _build(self, entry: ModelEntry) -> BuildStatus | None:
        return read_build_status(entry.folder) if entry.folder is not None else None

    def reason(self, entry: ModelEntry) -> str:
        if entry.unloaded:
            return f"unloaded; load it again with POST /v2/repository/models/{entry.name}/load"
        build = self._build(entry)
        if build is not None:
            return build.message if build.building else f"build failed: {build.message}"  # "building: ..."
        if entry.error:
            return f"failed to load: {entry.error}"
        if entry.failure and entry.serving() is None:
            retry = ""
            if entry.loads_lazily and entry.failed_at is not None:
                left = RETRY_FAILED_LOAD_SECONDS - (time.monotonic() - entry.failed_at)
                retry = f"; the next request tries again{f' in {left:.0f} s' if left > 0 else ''}"
            return f"failed to load: {entry.failure}{retry}"
        if self.state(entry) == UNLOADED:
            source = f" from {entry.source.text}" if entry.source else ""
            if entry.evicted:
                return f"{entry.evicted}; loads{source} on its next request"
            return f"not in memory ({entry.loading}); loads{source} on its first request"
        if entry.pending is not None and not entry.pending.done() and not entry.slots:
            return "loading for its first request"
        reasons = [f"version {v}: {s.reason}" for v, s in sorted(entry.slots.items()) if s.reason]
        return "; ".join(reasons) or "loading"

    def state(self, entry: ModelEntry) -> str:
        if entry.serving() is not None:
            return READY
        build = self._build(entry)
        if build is not None:
            return LOADING if build.building else UNAVAILABLE
        if entry.unloaded or entry.error or (entry.slots and all(s.state == UNAVAILABLE for s in entry.slots.values())):
            return UNAVAILABLE
        if entry.failure and not entry.slots and not (entry.pending is not None and not entry.pending.done()):
            return UNAVAILABLE
        if entry.loads_lazily and not entry.slots and (entry.pending is None or entry.pending.done()):
            return UNLOADED
        return LOADING

    def index(self) -> list[dict[str, Any]]:
        """Every model and version with its state and reason, as Triton's repository index, plus how
        it is loaded and the memory each loaded version takes (measured at its load)."""
        self.scan()
        rows = []
        for name, entry in sorted(self.entries.items()):
            if not entry.slots or entry.unloaded or entry.error:
                rows.append({"name": name, "version": "", "state": self.state(entry), "reason": self.reason(entry),
                             "loading": entry.loading, "resident_bytes": None})
                continue
            for version, slot in sorted(entry.slots.items(), key=lambda item: int(item[0])):
                reason = slot.reason or ("default version" if version == entry.default else "")
                size = self.sizes.get((name, version)) if slot.state == READY else None
                rows.append({"name": name, "version": version, "state": slot.state, "reason": reason,
                             "loading": entry.loading, "resident_bytes": size.resident if size else None})
        return rows

    def describe(self, entry: ModelEntry) -> dict[str, Any]:
        """What /config adds about a model's lifecycle: how it loads, from where, its memory."""
        sizes = {version: self.sizes[(entry.name, version)] for version in entry.slots if (entry.name, version) in self.sizes}
        return {
            "state": self.state(entry), "reason": self.reason(entry), "loading": entry.loading,
            "idle_unload_seconds": self._idle_seconds(entry) if entry.loading == ON_DEMAND else None,
            "storage_uri": entry.source.text if entry.source else None,
            "download": entry.downloaded,
            "memory": {version: {"resident_bytes": size.resident, "load_peak_bytes": size.load_peak,
                                 "measured": size.measured} for version, size in sizes.items()},
        }

    def ready(self) -> bool:
        """Server readiness: some model serves (or loads on its first request) and none that must
        load at start is still missing."""
        servable = bool(self.get_models()) or any(self._loads_on_request(e) for e in self.entries.values())
        return servable and not self.not_ready()

    def not_ready(self) -> dict[str, str]:
        """Models that hold readiness back, with why. A model that failed to load does not (unless
        strict); one still loading or building does, unless it loads on requests (lazy, on_demand)."""
        missing = {}
        for name, entry in self.entries.items():
            state = self.state(entry)
            if state in (READY, UNLOADED) or entry.unloaded or entry.loads_lazily:
                continue
            if state == UNAVAILABLE and not self.strict:
                continue
            missing[name] = self.reason(entry)
        return missing

    def model_setting(self, name: str, key: str) -> Any:
        """A predictor.yaml setting of model `name` (max_body_bytes, timeout_ms...): the serving
        version's config, or before a lazy model is loaded, its settings; None when unknown or unset."""
        entry = self.entries.get(name)
        model = entry.serving() if entry is not None else None
        if model is not None:
            return getattr(model.config, key)
        return getattr(entry.settings, key) if entry is not None and entry.settings is not None else None

    def body_limit(self, name: str) -> int | None:
        """The REST body limit of a model's routes, also before a lazy model is loaded."""
        return self.model_setting(name, "max_body_bytes")

    def timeout_ms(self, name: str) -> int | None:
        """The model's default deadline (predictor.yaml timeout_ms), also before it is loaded."""
        return self.model_setting(name, "timeout_ms")

    # ---- memory ------------------------------------------------------------------------------
    def start_memory_accounting(self) -> MemoryBudget:
        """At the server's start, before any model loads: measure the server's own resident memory,
        read the container's limit, and decide the budget from them (budget.py)."""
        release_memory()
        self.budget = resolve_budget(self.model_memory, container_memory_limit(), resident_bytes())
        logger.info("model memory budget: %s (%s)", format_bytes(self.budget.budget), self.budget.source)
        return self.budget

    def accounted_bytes(self) -> int:
        return sum(self.sizes.get((e.name, v), ModelSize(0, 0, False)).resident
                   for e in self.entries.values() for v, s in e.slots.items() if s.predictor is not None)

    def used_bytes(self) -> int:
        """What the loaded models take, as the budget counts it: their measured sizes, or the
        process's resident memory above the server's own when that is more (memory no model's
        measurement caught still counts, so the container limit is never crossed)."""
        accounted = self.accounted_bytes()
        rss = resident_bytes()
        if rss is None or self.budget.overhead is None:
            return accounted
        return max(accounted, rss - self.budget.overhead)

    def memory_report(self) -> dict[str, Any]:
        models = {(e.name, v): self.sizes[(e.name, v)].resident for e in self.entries.values()
                  for v, s in e.slots.items() if s.state == READY and (e.name, v) in self.sizes}
        return {"budget": self.budget.budget, "used": self.used_bytes(), "models": models}

    def memory(self) -> dict[str, Any]:
        """GET /v2/repository/memory: the budget, its source, and each loaded model's measured size."""
        now = time.monotonic()
        models = []
        for entry in sorted(self.entries.values(), key=lambda e: e.name):
            for version, slot in sorted(entry.slots.items()):
                size = self.sizes.get((entry.name, version))
                if slot.predictor is None or size is None:
                    continue
                models.append({"name": entry.name, "version": version, "loading": entry.loading,
                               "resident_bytes": size.resident, "load_peak_bytes": size.load_peak,
                               "measured": size.measured, "idle_seconds": round(now - entry.last_used, 1),
                               "evictable": self._resident(entry).evictable})
        return {**self.budget.describe(), "used_bytes": self.used_bytes(), "accounted_bytes": self.accounted_bytes(),
                "process_resident_bytes": resident_bytes(), "models": models}

    def _idle_seconds(self, entry: ModelEntry) -> float:
        return float(entry.idle_unload_seconds or self.default_idle_unload_seconds)

    def _resident(self, entry: ModelEntry) -> Resident:
        """A loaded model as eviction sees it: its size, when it was last used, and whether it may go."""
        size = sum(self.sizes.get((entry.name, v), ModelSize(0, 0, False)).resident for v in entry.slots)
        if not entry.loads_lazily:
            return Resident(entry.name, size, entry.last_used, evictable=False, why_kept=f"a {entry.loading} model")
        why = ""
        if entry.lock.locked():
            why = "being loaded or unloaded"
        else:
            busy = sum(p.inflight for p in entry.loaded())
            if busy or not all(p.idle for p in entry.loaded()):
                why = f"{busy} request(s) in flight" if busy else "requests queued"
        return Resident(entry.name, size, entry.last_used, evictable=not why, why_kept=why, busy=bool(why))

    def _residents(self, exclude: ModelEntry | None = None) -> list[Resident]:
        return [self._resident(e) for e in self.entries.values() if e is not exclude and e.loaded()]

    def _estimate(self, entry: ModelEntry, version: str, predictor: TextPredictor) -> ModelSize:
        known = self.sizes.get((entry.name, version))
        if known is not None:
            return known
        try:
            weights = choose_backend(predictor.config).weights.stat().st_size
        except (NoBackendError, OSError):
            weights = 0
        return guess_size(weights)

    async def _make_room(self, entry: ModelEntry, needed: int, purpose: str) -> None:
        """Evict least recently used idle models until `needed` bytes of the budget are free. When it
        would fit only once busy models finish their requests, wait for that (room_wait_seconds);
        else, or past that, raise NoMemoryForModel naming the budget and what holds it."""
        budget = self.budget.budget
        if budget is None:
            return
        rounds = 0
        waiting_since: float | None = None
        while rounds < MAX_EVICTION_ROUNDS:
            used = self.used_bytes()
            residents = self._residents(exclude=entry)
            plan = plan_evictions(needed, budget - used, residents)
            if plan is None:
                waiting_since = waiting_since or time.monotonic()
                if plan_evictions(needed, budget - used, residents, once_idle=True) is None \
                        or time.monotonic() - waiting_since >= self.room_wait_seconds:
                    raise self._no_room(entry, needed, budget, used, residents, purpose)
                await asyncio.sleep(ROOM_POLL_SECONDS)  # a busy model goes idle in a moment
                continue
            if not plan:
                return
            rounds += 1
            for victim in plan:
                await self._evict(self.entries[victim.name], "budget",
                                  f"evicted to make room for model '{entry.name}' (least recently used, idle "
                                  f"{time.monotonic() - victim.last_used:.0f} s; {format_bytes(victim.bytes)} of the "
                                  f"{format_bytes(budget)} model memory budget)")
        raise self._no_room(entry, needed, budget, self.used_bytes(), self._residents(exclude=entry), purpose)

    def _no_room(self, entry: ModelEntry, needed: int, budget: int, used: int, residents: list[Resident],
                 purpose: str) -> NoMemoryForModel:
        held = "; ".join(f"'{r.name}' {format_bytes(r.bytes)} ({r.why_kept})" for r in residents if not r.evictable)
        waited = f" (waited {self.room_wait_seconds:g} s for the busy ones)" if any(r.busy for r in residents) else ""
        if needed > budget:
            return NoMemoryForModel(
                f"model '{entry.name}' needs {format_bytes(needed)} to {purpose}, more than the whole model memory "
                f"budget of {format_bytes(budget)} ({self.budget.source}); raise PREDICTORS_MODEL_MEMORY or the "
                "container's memory limit", 60)
        return NoMemoryForModel(
            f"model '{entry.name}' needs {format_bytes(needed)} of the model memory budget to {purpose}, but "
            f"{format_bytes(max(0, budget - used))} of {format_bytes(budget)} are free ({self.budget.source}) and no "
            f"loaded model could be evicted{waited}: {held or 'none is loaded'}; retry after 1 s", 1)

    async def _evict(self, entry: ModelEntry, reason: str, why: str) -> bool:
        """Free an idle model: new requests find it UNLOADED (and load it again), then its memory is
        given back. Checked again here, in the same step as the switch: a model that got a request
        since it was chosen is kept (False)."""
        models = entry.loaded()
        if not models or not self._resident(entry).evictable:
            return False
        for version, slot in entry.slots.items():
            scheduler = slot.predictor.scheduler if slot.predictor is not None else None
            if scheduler is not None and scheduler.seconds_per_text:
                self.throughput[(entry.name, version, slot.fingerprint)] = scheduler.seconds_per_text
        for model in models:
            model.refuse_new_requests(f"model '{entry.name}' was {why}", evicted=True)
        entry.slots = {}
        entry.default = None
        metrics.serve_default(entry.name, None)
        entry.evicted = f"{why} at {time.strftime('%H:%M:%S')}"
        metrics.observe_eviction(entry.name, reason)
        logger.info("model %s %s", entry.name, why)
        await asyncio.gather(*(self._retire(m, f"model '{entry.name}' version {m.config.version} ({reason} eviction)")
                               for m in models))
        return True

    async def housekeeping(self, stopping: asyncio.Event) -> None:
        """Until stop: free on_demand models idle past their idle_unload_seconds, and, where the
        container has a limit, evict least recently used idle models while the process's resident
        memory is over the limit less half the margin (memory no measurement foresaw)."""
        while not stopping.is_set():
            now = time.monotonic()
            for entry in list(self.entries.values()):
                if entry.loading != ON_DEMAND or not entry.loaded() or entry.lock.locked():
                    continue
                idle_for = self._idle_seconds(entry)
                if now - entry.last_used >= idle_for and self._resident(entry).evictable:
                    await self._evict(entry, "idle", f"freed after {idle_for:g} s without requests (on_demand)")
            await self._relieve_pressure()
            try:
                await asyncio.wait_for(stopping.wait(), timeout=HOUSEKEEPING_SECONDS)
            except asyncio.TimeoutError:
                pass

    async def _relieve_pressure(self) -> None:
        limit, margin = self.budget.limit, self.budget.margin
        rss = resident_bytes()
        if limit is None or rss is None or rss <= limit - margin // 2 or self._load_slot.locked():
            return
        candidates = sorted((r for r in self._residents() if r.evictable), key=lambda r: r.last_used)
        if candidates:
            victim = candidates[0]
            logger.warning("resident memory %s is over the container limit %s less half the margin; evicting '%s'",
                           format_bytes(rss), format_bytes(limit), victim.name)
            await self._evict(self.entries[victim.name], "memory_pressure",
                              f"evicted because the server's resident memory ({format_bytes(rss)}) came near the "
                              f"container's memory limit ({format_bytes(limit)})")

    # ---- discovery ---------------------------------------------------------------------------
    def scan(self) -> list[str]:
        """Register model folders that appeared under the models folder (built or being built)."""
        found = []
        if not self.root.is_dir():
            return found
        root = self.root.resolve()
        for child in sorted(self.root.iterdir()):
            if child.name in self.entries or child.name.startswith(".") or child.resolve().parent != root:
                continue
            if is_model_folder(child) or read_build_status(child) is not None or version_folders(child):
                self._register(ModelEntry(child.name, child.resolve()))
                found.append(child.name)
        return found

    def _register(self, entry: ModelEntry) -> ModelEntry:
        self.entries[entry.name] = entry
        self._refresh(entry)
        metrics.known_model(entry.name)
        return entry

    def _refresh(self, entry: ModelEntry) -> PredictorSettings | None:
        """Read the repository-level keys (loading, idle_unload_seconds, storage_uri, limits) of a
        model: its predictor.yaml in the models folder, over the fetched copy's own for a URI model.
        A file that cannot be read marks the model UNAVAILABLE with why."""
        local = entry.folder / PREDICTOR_FILE if entry.folder is not None else None
        try:
            own = read_settings(local, entry.name) if local is not None else PredictorSettings()
            if local is not None and entry.content is None and not entry.source_from_api:
                entry.source = parse_storage_uri(own.storage_uri) if own.storage_uri else None
            if entry.source is not None and entry.content is not None:
                settings = read_settings(entry.content / PREDICTOR_FILE, entry.name, overrides=local)
            else:
                settings = own
        except ModelSettingsError as exc:
            entry.error = str(exc)
            return None
        entry.error = ""
        entry.settings = settings
        entry.loading = settings.loading or self.default_loading
        entry.idle_unload_seconds = float(settings.idle_unload_seconds) if settings.idle_unload_seconds else None
        return settings

    def add_folder(self, folder: Path, name: str) -> ModelEntry:
        """Container mode: the one model folder, under the name KServe gives it."""
        return self._register(ModelEntry(name, folder.resolve()))

    def _entry(self, name: str) -> ModelEntry:
        try:
            folder = check_model_name(self.root, name)
            entry = self.entries.get(name)
            found = entry is not None or (folder.is_dir() and bool(is_model_folder(folder) or version_folders(folder)))
        except ModelNameError as exc:
            raise BadModelName(str(exc)) from None
        except OSError as exc:  # a name the file system refuses (its own limits, characters)
            raise BadModelName(f"{name[:60]!r} cannot name a model folder here: {exc.strerror}") from None
        if entry is None:
            if not found:
                raise UnknownModel(f"no model folder '{name}' in {self.root}; models: {sorted(self.entries)}")
            entry = self._register(ModelEntry(name, folder.resolve()))
        return entry

    def _uri_entry(self, name: str, uri: StorageUri) -> ModelEntry:
        """The entry a repository load from `uri` goes to: new, or a model already fetched from a URI."""
        try:
            folder = check_model_name(self.root, name)
        except ModelNameError as exc:
            raise BadModelName(str(exc)) from None
        except OSError as exc:
            raise BadModelName(f"{name[:60]!r} cannot name a model here: {exc.strerror}") from None
        entry = self.entries.get(name)
        if entry is None and folder.is_dir() and (is_model_folder(folder) or version_folders(folder)):
            entry = self._entry(name)
        if entry is not None and entry.source is None:
            raise NameTaken(
                f"model '{name}' is served from the folder {entry.folder}; a load from {uri.text} would replace it. "
                "Choose another name, or remove the folder first"
            )
        if entry is None:
            entry = self._register(ModelEntry(name, None, loading=self.default_loading))
        if entry.source != uri:
            entry.content = None
        entry.source, entry.source_from_api = uri, True
        return entry

    # ---- the repository API (REST, gRPC, `python -m predictors load|unload`) -------------------
    def _check_writable(self, action: str, name: str) -> None:
        if self.read_only:
            raise Refused(
                f"cannot {action} model '{name[:100]}': the repository API is read-only here "
                "(PREDICTORS_REPOSITORY_API=read-only; the rendered manifests set it unless the model's "
                "predictor.yaml asks for deploy.repository_api: read-write)"
            )

    async def request_load(self, name: str, storage_uri: str | None = None) -> dict[str, Any]:
        """A load asked for through the repository API: from the model's folder, or from
        `storage_uri` (allowed prefixes only). Refused with 403 in read-only mode."""
        self._check_writable("load", name)
        if storage_uri is None:
            entry = self._entry(name)
        else:
            try:
                uri = parse_storage_uri(storage_uri)
            except StorageUriError as exc:
                raise BadRequest(f"parameters.storage_uri: {exc}") from None
            try:
                self.access.check(uri, from_api=True)
            except AccessRefused as exc:
                raise Refused(str(exc)) from None
            entry = self._uri_entry(name, uri)
        async with entry.lock:
            return await self._load(entry, "repository_api")

    async def request_unload(self, name: str) -> dict[str, Any]:
        self._check_writable("unload", name)
        return await self.unload_model(name)

    # ---- lifecycle -----------------------------------------------------------------------------
    async def load(self, name: str, reason: str = "repository_api") -> dict[str, Any]:
        """(Re)read the model folder: load new or changed versions beside the serving ones, switch,
        then drain and free what is replaced. Raises LoadFailed naming each version that failed."""
        entry = self._entry(name)
        async with entry.lock:
            return await self._load(entry, reason)

    async def _fetch(self, entry: ModelEntry, reason: str) -> Path:
        """The folder a URI model's versions are read from: its cached copy for a load a request
        started (the copy it served before it was evicted), a fresh download for every other load."""
        uri = entry.source
        assert uri is not None
        try:
            guard = self.access.check(uri, from_api=entry.source_from_api)
        except AccessRefused as exc:
            raise Refused(str(exc)) from None
        cached = self.cache.cached(entry.name, uri)
        if cached is not None and reason == "first_request":
            return cached
        fetched = await self.cache.fetch(entry.name, uri, guard)
        entry.downloaded = {"uri": uri.text, "bytes": fetched.bytes, "files": fetched.files, "seconds": fetched.seconds,
                            "wall_seconds": fetched.wall_seconds}
        metrics.observe_download(entry.name, fetched.bytes or 0, fetched.seconds or 0.0)
        return fetched.folder

    def _failed(self, entry: ModelEntry, message: str) -> None:
        entry.failure = message
        entry.failed_at = time.monotonic()

    async def _load(self, entry: ModelEntry, reason: str) -> dict[str, Any]:
        build = self._build(entry)
        if build is not None and build.building:
            raise ModelUnavailable(f"model '{entry.name}' is being built: {build.message}")
        entry.unloaded = False
        entry.seen = folder_state(entry.folder)
        if entry.folder is not None and not entry.source_from_api:
            entry.content = None  # the folder may have gained or lost a storage_uri
        if self._refresh(entry) is None:
            metrics.observe_load(entry.name, reason, "failed")
            raise LoadFailed(entry.error)
        if entry.source is not None:
            try:
                entry.content = await self._fetch(entry, reason)
            except ServingError as exc:
                metrics.observe_load(entry.name, reason, "download_failed")
                if entry.serving() is None:
                    self._failed(entry, exc.message)
                raise
        else:
            entry.content = entry.folder
        overrides = entry.folder / PREDICTOR_FILE if entry.source is not None and entry.folder is not None else None
        try:
            settings = self._refresh(entry)
            if settings is None:
                raise ModelSettingsError(entry.error)
            folders = version_folders(entry.content)
            wanted = select_versions(settings.version_policy, folders)
            if not wanted:
                raise ModelConfigError(f"model '{entry.name}': no version folder matches version_policy in {entry.content}")
            entry.error = ""
        except ModelSettingsError as exc:  # a bad predictor.yaml (ModelConfigError is one too)
            entry.error = str(exc)
            metrics.observe_load(entry.name, reason, "failed")
            raise LoadFailed(str(exc)) from None
        failures: list[str] = []
        no_room: NoMemoryForModel | None = None
        replaced: list[TextPredictor] = []
        for number in wanted:
            folder = folders[number]
            fingerprint = folder_fingerprint(folder)
            old = entry.slots.get(str(number))
            if old is not None and old.state == READY and old.fingerprint == fingerprint:
                continue
            try:
                error, predictor = await self._load_version(entry, number, folder, overrides)
            except NoMemoryForModel as exc:
                no_room = no_room or exc
                failures.append(f"version {number}: {exc.message}")
                continue
            if predictor is None:
                failures.append(f"version {number}: {error}")
                if old is not None and old.state == READY:
                    old.reason = f"still serving the previous files; reloading failed: {error}"
                else:
                    entry.slots[str(number)] = VersionSlot(str(number), UNAVAILABLE, f"failed to load: {error}", None, fingerprint)
                continue
            if old is not None and old.predictor is not None:
                replaced.append(old.predictor)
            entry.slots[str(number)] = VersionSlot(str(number), READY, "", predictor, fingerprint)
            metrics.track(predictor)  # only now: a failed reload never takes over the serving one's series
        wanted_ready = [v for v in wanted if (slot := entry.slots.get(str(v))) is not None and slot.state == READY]
        for version in [v for v in entry.slots if int(v) not in wanted]:
            slot = entry.slots[version]
            if slot.predictor is not None and not wanted_ready:
                # the policy's versions all failed: keep serving what serves now rather than nothing
                slot.reason = f"still serving: {'; '.join(failures)}"
                continue
            entry.slots.pop(version)
            if slot.predictor is not None:
                replaced.append(slot.predictor)
        ready = entry.ready_versions()
        entry.default = ready[-1] if ready else None  # the atomic switch: one assignment on the loop
        metrics.serve_default(entry.name, entry.default)
        for predictor in replaced:
            asyncio.ensure_future(self._retire(predictor, f"model '{entry.name}' version {predictor.config.version} was replaced"))
        if ready:
            entry.last_used = time.monotonic()
            entry.evicted = ""
        if failures:
            outcome = "no_room" if no_room is not None else "failed"
            metrics.observe_load(entry.name, reason, outcome)
            if no_room is not None and not ready:
                if not entry.loads_lazily:  # nothing will load it later by itself: the index says why
                    self._failed(entry, no_room.message)
                raise no_room  # 503 + Retry-After: the budget, not the files, is what failed
            if not ready:
                self._failed(entry, "; ".join(failures))
            raise LoadFailed(f"model '{entry.name}': " + "; ".join(failures) + f" (serving versions: {ready})")
        entry.failure, entry.failed_at = "", None
        metrics.observe_load(entry.name, reason, "loaded")
        return {"name": entry.name, "versions": ready, "default": entry.default,
                **({"storage_uri": entry.source.text, "download": entry.downloaded} if entry.source else {})}

    async def _load_version(self, entry: ModelEntry, number: int, folder: Path,
                            overrides: Path | None) -> tuple[str, TextPredictor | None]:
        """Load one version under the process-wide load slot: make room in the budget for it, then
        load it measuring what it adds (its resident memory, and the peak while loading)."""
        slot = entry.slots.get(str(number))
        if slot is None:
            entry.slots[str(number)] = VersionSlot(str(number), LOADING, "loading")
        version = str(number)
        try:
            async with self._load_slot:
                versioned = folder != entry.content
                # Off the event loop: a pipeline's skops schema can take a second to read.
                config = await asyncio.to_thread(
                    load_model_config, folder, entry.name, number if versioned else None, overrides)
                predictor = self.predictor_class(config, entry.name)
                predictor.enable_latency_logging = self.enable_latency_logging
                predictor.known_seconds_per_text = self.throughput.get((entry.name, version, folder_fingerprint(folder)))
                estimate = self._estimate(entry, version, predictor)
                await self._make_room(entry, estimate.needed, f"load version {number} ({estimate.describe()})")
                await asyncio.to_thread(release_memory)
                before = resident_bytes()
                reset_peak()
                await asyncio.get_running_loop().run_in_executor(self._loader, predictor.load)
                await asyncio.to_thread(release_memory)  # the load's transient copies are not its size
                after = resident_bytes()
                if before is not None and after is not None:
                    self.sizes[(entry.name, version)] = measured_size(before, after, peak_bytes(), predictor.weights_bytes)
                else:
                    self.sizes[(entry.name, version)] = estimate
                logger.info("model %s version %s: %s", entry.name, version, self.sizes[(entry.name, version)].describe())
            return "", predictor
        except NoMemoryForModel:
            if slot is None:
                entry.slots.pop(str(number), None)
            raise
        except Exception as exc:  # one broken version must not stop the others
            error = f"{type(exc).__name__}: {exc}" if not isinstance(exc, ModelConfigError) else str(exc)
            logger.error("model %s version %s failed to load from %s: %s", entry.name, number, folder, error)
            if slot is None:
                entry.slots.pop(str(number), None)
            return error, None

    async def _retire(self, predictor: TextPredictor, reason: str) -> None:
        """Stop admitting, drain what was accepted (bounded), then free."""
        if predictor.accepting:
            predictor.refuse_new_requests(reason)
        drained = await predictor.drain(self.drain_seconds)
        if not drained:
            logger.warning("%s: %d request(s) still running after %.0fs; freeing anyway", reason, predictor.inflight, self.drain_seconds)
        await asyncio.to_thread(predictor.stop)
        await asyncio.to_thread(release_memory)
        logger.info("%s: freed", reason)

    async def unload_model(self, name: str) -> dict[str, Any]:
        """Repository unload: new requests get 503 at once, in-flight ones finish, memory is freed."""
        entry = self.entries.get(name) or self._entry(name)
        async with entry.lock:
            entry.unloaded = True
            entry.default = None
            metrics.serve_default(name, None)
            slots, entry.slots = entry.slots, {}
            reason = f"model '{name}' is unloaded; load it again with POST /v2/repository/models/{name}/load"
            await asyncio.gather(*(self._retire(s.predictor, reason) for s in slots.values() if s.predictor))
            if entry.source is not None:  # the copy goes too: a load fetches afresh
                await asyncio.to_thread(self.cache.discard, name, entry.source)
                entry.content = None
        return {"name": name, "unloaded": sorted(slots, key=int)}

    def unload(self, name: str) -> None:  # kserve's synchronous API, used at shutdown only
        entry = self.entries.get(name)
        if entry is None:
            raise KeyError(name)
        for slot in entry.slots.values():
            if slot.predictor is not None:
                slot.predictor.stop()

    def clean_storage_cache(self) -> None:
        """At start: remove partial downloads a killed server left, and copies no model refers to."""
        keep = {self.cache.folder_for(e.name, e.source) for e in self.entries.values() if e.source is not None}
        try:
            self.cache.clean(keep)
        except OSError as exc:
            logger.warning("cannot clean the storage cache %s: %s", self.cache.root, exc)

    async def load_all(self) -> None:
        """Start-up: every `startup` model found, one after another, without blocking the event
        loop; lazy and on_demand models wait for their first request."""
        for name in list(self.entries):
            entry = self.entries[name]
            if entry.slots or entry.unloaded or entry.loads_lazily or self._build(entry) is not None:
                continue
            try:
                await self.load(name, "startup")
            except Exception as exc:  # reported by the index, readiness and the model's 503s
                logger.error("model %s is unavailable: %s", name, exc)

    async def watch(self, interval: float, stopping: asyncio.Event) -> None:
        """Poll the models folder: new folders, finished builds and changed versions are (re)loaded;
        a lazy model not in memory only has its settings read again (its next load reads the rest)."""
        while not stopping.is_set():
            self.scan()
            for name, entry in list(self.entries.items()):
                if entry.unloaded or entry.lock.locked() or entry.folder is None:
                    continue
                build = self._build(entry)
                if build is not None:
                    continue
                if self._changed(entry):
                    if not entry.loaded() and (self._refresh(entry) is None or entry.loads_lazily):
                        entry.seen = folder_state(entry.folder)
                        entry.failed_at = None  # new files: the next request may try again at once
                        continue
                    try:
                        await self.load(name, "watch")
                    except Exception as exc:
                        logger.error("model %s: reload failed: %s", name, exc)
            try:
                await asyncio.wait_for(stopping.wait(), timeout=interval)
            except asyncio.TimeoutError:
                pass

    def _changed(self, entry: ModelEntry) -> bool:
        return folder_state(entry.folder) != entry.seen

    async def drain_all(self, timeout: float) -> None:
        """Shutdown: stop admitting everywhere (new requests get 503), let accepted ones finish (bounded)."""
        models = [s.predictor for e in self.entries.values() for s in e.slots.values() if s.predictor]
        for model in models:
            model.refuse_new_requests(f"model '{model.name}' is not serving: the server is shutting down")
        deadline = time.monotonic() + timeout
        await asyncio.gather(*(m.drain(max(0.0, deadline - time.monotonic())) for m in models))
