"""The model repository: model folders by name, each with its loaded versions, and the lifecycle
(load, hot swap, unload, watch) that never drops an accepted request.

A model `models/<name>/` has versions (numbered sub-folders, or the folder itself as version 1);
its `version_policy` says which are served. Loading a version happens off the event loop while
the serving versions keep answering; once it has answered its warm-up, the route switches in one
step on the event loop, and the version it replaces stops admitting, drains its in-flight requests
(bounded) and is freed. A version that fails to load leaves the serving one untouched, and the
index and the load call say why. Unversioned routes reach the model's default version: the highest
one that is ready.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kserve.model_repository import ModelRepository

from ..model import (
    ModelConfigError,
    ModelNameError,
    ModelSettingsError,
    check_model_name,
    folder_fingerprint,
    is_model_folder,
    read_build_status,
    read_settings,
    select_versions,
    version_folders,
)
from ..model.files import PREDICTOR_FILE
from ..backends import load_model_config
from .errors import BadModelName, LoadFailed, ModelUnavailable, UnknownModel, UnknownVersion
from .memory import release_memory
from .observability import metrics
from .predictor import TextPredictor

logger = logging.getLogger("kserve.predictors")

READY, LOADING, UNAVAILABLE = "READY", "LOADING", "UNAVAILABLE"
VERSION_SEPARATOR = "/versions/"  # internal registry key of one version: "<name>/versions/<v>"


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
    folder: Path
    slots: dict[str, VersionSlot] = field(default_factory=dict)
    default: str | None = None  # the version unversioned routes reach
    error: str = ""  # why the model as a whole cannot load (settings, no versions...)
    unloaded: bool = False
    seen: tuple | None = None  # the folder's state at the last load attempt (see folder_state)
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    def ready_versions(self) -> list[str]:
        return sorted((v for v, s in self.slots.items() if s.state == READY and s.predictor), key=int)

    def serving(self) -> TextPredictor | None:
        slot = self.slots.get(self.default or "")
        return slot.predictor if slot and slot.state == READY else None


def folder_state(folder: Path) -> tuple:
    """What a reload depends on: the model's predictor.yaml and every version folder's files."""
    settings = folder / PREDICTOR_FILE
    stat = settings.stat() if settings.is_file() else None
    return (
        (stat.st_size, stat.st_mtime_ns) if stat else None,
        tuple((number, folder_fingerprint(path)) for number, path in version_folders(folder).items()),
    )


class PredictorRepository(ModelRepository):
    """kserve's ModelRepository over model folders, with versions and a lifecycle."""

    def __init__(self, models_dir: str | Path, drain_seconds: float = 30.0, strict: bool = False,
                 predictor_class: type[TextPredictor] = TextPredictor) -> None:
        super().__init__(str(models_dir))
        self.predictor_class = predictor_class  # what serves a loaded version (unit tests give a stand-in)
        self.root = Path(models_dir)
        self.entries: dict[str, ModelEntry] = {}
        self.drain_seconds = drain_seconds
        # Container mode (one model): a model that failed to load keeps the server unready.
        self.strict = strict
        self.enable_latency_logging = True

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
                raise UnknownVersion(f"model '{name}' has no version {version} loaded; loaded versions: {loaded}")
            return slot.predictor
        model = entry.serving()
        if model is None:
            raise ModelUnavailable(f"model '{name}' is not ready: {self.reason(entry)}")
        return model

    # ---- state for the index, readiness and errors -------------------------------------------
    def reason(self, entry: ModelEntry) -> str:
        if entry.unloaded:
            return f"unloaded; load it again with POST /v2/repository/models/{entry.name}/load"
        build = read_build_status(entry.folder)
        if build is not None:
            return build.message if build.building else f"build failed: {build.message}"  # "building: ..."
        if entry.error:
            return f"failed to load: {entry.error}"
        reasons = [f"version {v}: {s.reason}" for v, s in sorted(entry.slots.items()) if s.reason]
        return "; ".join(reasons) or "loading"

    def state(self, entry: ModelEntry) -> str:
        if entry.serving() is not None:
            return READY
        build = read_build_status(entry.folder)
        if build is not None:
            return LOADING if build.building else UNAVAILABLE
        if entry.unloaded or entry.error or (entry.slots and all(s.state == UNAVAILABLE for s in entry.slots.values())):
            return UNAVAILABLE
        return LOADING

    def index(self) -> list[dict[str, str]]:
        """Every model and version with its state and reason, as Triton's repository index."""
        self.scan()
        rows = []
        for name, entry in sorted(self.entries.items()):
            if not entry.slots or entry.unloaded or entry.error:
                rows.append({"name": name, "version": "", "state": self.state(entry), "reason": self.reason(entry)})
                continue
            for version, slot in sorted(entry.slots.items(), key=lambda item: int(item[0])):
                reason = slot.reason or ("default version" if version == entry.default else "")
                rows.append({"name": name, "version": version, "state": slot.state, "reason": reason})
        return rows

    def ready(self) -> bool:
        """Server readiness: some model serves and none that can load is still missing."""
        return bool(self.get_models()) and not self.not_ready()

    def not_ready(self) -> dict[str, str]:
        """Models that hold readiness back, with why. A model that failed to load does not (unless
        strict); one still loading or building does."""
        missing = {}
        for name, entry in self.entries.items():
            state = self.state(entry)
            if state == READY or entry.unloaded:
                continue
            if state == UNAVAILABLE and not self.strict:
                continue
            missing[name] = self.reason(entry)
        return missing

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
                self.entries[child.name] = ModelEntry(child.name, child.resolve())
                found.append(child.name)
        return found

    def add_folder(self, folder: Path, name: str) -> ModelEntry:
        """Container mode: the one model folder, under the name KServe gives it."""
        entry = ModelEntry(name, folder.resolve())
        self.entries[name] = entry
        return entry

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
            entry = self.entries[name] = ModelEntry(name, folder.resolve())
        return entry

    # ---- lifecycle -----------------------------------------------------------------------------
    async def load(self, name: str) -> dict[str, Any]:
        """(Re)read the model folder: load new or changed versions beside the serving ones, switch,
        then drain and free what is replaced. Raises LoadFailed naming each version that failed."""
        entry = self._entry(name)
        async with entry.lock:
            return await self._load(entry)

    async def _load(self, entry: ModelEntry) -> dict[str, Any]:
        build = read_build_status(entry.folder)
        if build is not None and build.building:
            raise ModelUnavailable(f"model '{entry.name}' is being built: {build.message}")
        entry.unloaded = False
        entry.seen = folder_state(entry.folder)
        try:
            settings = read_settings(entry.folder / PREDICTOR_FILE, entry.name)
            folders = version_folders(entry.folder)
            wanted = select_versions(settings.version_policy, folders)
            if not wanted:
                raise ModelConfigError(f"model '{entry.name}': no version folder matches version_policy in {entry.folder}")
            entry.error = ""
        except ModelSettingsError as exc:  # a bad predictor.yaml (ModelConfigError is one too)
            entry.error = str(exc)
            raise LoadFailed(str(exc)) from None
        failures: list[str] = []
        replaced: list[TextPredictor] = []
        for number in wanted:
            folder = folders[number]
            fingerprint = folder_fingerprint(folder)
            old = entry.slots.get(str(number))
            if old is not None and old.state == READY and old.fingerprint == fingerprint:
                continue
            error, predictor = await self._load_version(entry, number, folder)
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
        if failures:
            raise LoadFailed(f"model '{entry.name}': " + "; ".join(failures) + f" (serving versions: {ready})")
        return {"name": entry.name, "versions": ready, "default": entry.default}

    async def _load_version(self, entry: ModelEntry, number: int, folder: Path) -> tuple[str, TextPredictor | None]:
        slot = entry.slots.get(str(number))
        if slot is None:
            entry.slots[str(number)] = VersionSlot(str(number), LOADING, "loading")
        try:
            versioned = folder != entry.folder
            # Off the event loop: a pipeline's skops schema can take a second to read.
            config = await asyncio.to_thread(load_model_config, folder, entry.name, number if versioned else None)
            predictor = self.predictor_class(config, entry.name)
            predictor.enable_latency_logging = self.enable_latency_logging
            await asyncio.to_thread(predictor.load)
            return "", predictor
        except Exception as exc:  # one broken version must not stop the others
            error = f"{type(exc).__name__}: {exc}" if not isinstance(exc, ModelConfigError) else str(exc)
            logger.error("model %s version %s failed to load from %s: %s", entry.name, number, folder, error)
            if slot is None:
                entry.slots.pop(str(number), None)
            return error, None

    async def _retire(self, predictor: TextPredictor, reason: str) -> None:
        """Stop admitting, drain what was accepted (bounded), then free."""
        predictor.refuse_new_requests(reason)
        drained = await predictor.drain(self.drain_seconds)
        if not drained:
            logger.warning("%s: %d request(s) still running after %.0fs; freeing anyway", reason, predictor.inflight, self.drain_seconds)
        await asyncio.to_thread(predictor.stop)
        release_memory()
        logger.info("%s: freed", reason)

    async def unload_model(self, name: str) -> dict[str, Any]:
        """Repository unload: new requests get 503 at once, in-flight ones finish, memory is freed."""
        entry = self._entry(name)
        async with entry.lock:
            entry.unloaded = True
            entry.default = None
            metrics.serve_default(name, None)
            slots, entry.slots = entry.slots, {}
            reason = f"model '{name}' is unloaded; load it again with POST /v2/repository/models/{name}/load"
            await asyncio.gather(*(self._retire(s.predictor, reason) for s in slots.values() if s.predictor))
        return {"name": name, "unloaded": sorted(slots, key=int)}

    def unload(self, name: str) -> None:  # kserve's synchronous API, used at shutdown only
        entry = self.entries.get(name)
        if entry is None:
            raise KeyError(name)
        for slot in entry.slots.values():
            if slot.predictor is not None:
                slot.predictor.stop()

    async def load_all(self) -> None:
        """Start-up: every model found, one after another, without blocking the event loop."""
        for name in list(self.entries):
            entry = self.entries[name]
            if entry.slots or entry.unloaded or read_build_status(entry.folder) is not None:
                continue
            try:
                await self.load(name)
            except Exception as exc:  # reported by the index, readiness and the model's 503s
                logger.error("model %s is unavailable: %s", name, exc)

    async def watch(self, interval: float, stopping: asyncio.Event) -> None:
        """Poll the models folder: new folders, finished builds and changed versions are (re)loaded."""
        while not stopping.is_set():
            self.scan()
            for name, entry in list(self.entries.items()):
                if entry.unloaded or entry.lock.locked():
                    continue
                build = read_build_status(entry.folder)
                if build is not None:
                    continue
                if self._changed(entry):
                    try:
                        await self.load(name)
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
