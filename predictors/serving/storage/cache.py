"""The cache folder of models fetched from storage URIs.

Each model's copy is `<cache>/<name>-<hash of the URI>/`. A download goes into
`<cache>/.partial/<random>/` (in a child process, download.py) and is renamed into place only
once it is complete and holds a model, so a copy in the cache is always whole: an interrupted,
failed, timed-out or cancelled download leaves nothing behind (its partial folder is removed, and
any left by a killed server are removed when the next one starts). Replacing a copy renames the old
one aside first, so the name always points at a complete folder or at nothing.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import shutil
import signal
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from ...model import version_folders
from ...model.storage_uri import StorageUri
from ..errors import BadRequest, Refused, RetryLater, StorageNotFound, StorageUnreachable
from .access import HttpGuard

logger = logging.getLogger("kserve.predictors")

PARTIAL = ".partial"
RETIRED = ".retired"
#: What the server says when the cache folder cannot be written (a read-only root file system).
CACHE_HINT = "set PREDICTORS_STORAGE_CACHE to a writable folder (in a pod: an emptyDir volume)"
#: Where a pvc://<claim>/<path> URI is read from: the claim mounted at <PVC_ROOT>/<claim>. (KServe's
#: webhook mounts a storageUri's one claim at /mnt/pvc; a server fetching several keeps them apart.)
PVC_ROOT = Path("/mnt/pvc")


def download_source(uri: StorageUri) -> str:
    """What kserve-storage is given for `uri`: the URI itself, or for pvc:// the mounted claim's path
    (KServe's webhook makes the same translation before its storage initializer runs)."""
    if uri.scheme == "pvc":
        return str(PVC_ROOT / uri.host / uri.path)
    return uri.text


def default_cache_root() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "predictors" / "storage"


@dataclass(frozen=True)
class Fetched:
    """A complete copy in the cache, and what its download took (None: it was already there)."""

    folder: Path
    bytes: int | None = None
    files: int | None = None
    seconds: float | None = None  # the download itself
    wall_seconds: float | None = None  # with the download process's start (Python, kserve-storage, the SDK)


class StorageCache:
    def __init__(self, root: Path | None = None, timeout_seconds: float = 1800.0) -> None:
        self.root = Path(root) if root is not None else default_cache_root()
        self.timeout_seconds = timeout_seconds

    def folder_for(self, name: str, uri: StorageUri) -> Path:
        digest = hashlib.sha256(uri.text.encode()).hexdigest()[:12]
        return self.root / f"{name}-{digest}"

    def cached(self, name: str, uri: StorageUri) -> Path | None:
        """The complete copy of `uri` for model `name`, if one is in the cache."""
        folder = self.folder_for(name, uri)
        return folder if folder.is_dir() else None

    def clean(self, keep: set[Path] | None = None) -> None:
        """Remove what a killed server may have left: partial downloads and retired copies; with
        `keep`, also every copy not in it (models no longer fetched from a URI)."""
        for leftover in (self.root / PARTIAL, self.root / RETIRED):
            shutil.rmtree(leftover, ignore_errors=True)
        if keep is not None and self.root.is_dir():
            for child in self.root.iterdir():
                if child.is_dir() and not child.name.startswith(".") and child not in keep:
                    shutil.rmtree(child, ignore_errors=True)

    def discard(self, name: str, uri: StorageUri) -> None:
        self._retire(self.folder_for(name, uri))

    def _retire(self, folder: Path) -> None:
        if not folder.exists():
            return
        retired = self.root / RETIRED
        retired.mkdir(parents=True, exist_ok=True)
        aside = Path(tempfile.mkdtemp(prefix=f"{folder.name}-", dir=retired))
        os.rename(folder, aside / "old")  # the name stops pointing at it in one step
        shutil.rmtree(aside, ignore_errors=True)

    async def fetch(self, name: str, uri: StorageUri, guard: HttpGuard | None) -> Fetched:
        """Download `uri` afresh and rename it into the cache as model `name`'s copy. Raises the
        serving error that says why it failed; nothing half-written is left or served."""
        started = time.monotonic()
        try:
            (self.root / PARTIAL).mkdir(parents=True, exist_ok=True)
            partial = Path(tempfile.mkdtemp(prefix=f"{name}-", dir=self.root / PARTIAL))
        except OSError as exc:
            raise RetryLater(f"cannot write the storage cache {self.root}: {exc.strerror}; {CACHE_HINT}", 30) from None
        try:
            result = await self._download(uri, partial / "files", guard)
            downloaded = partial / "files"
            if not version_folders(downloaded):
                raise BadRequest(
                    f"{uri.text} holds no model: expected a config.json (or a predictor.yaml) at its root or in numbered "
                    f"version folders; found {sorted(p.name for p in downloaded.iterdir())[:10]}"
                )
            final = self.folder_for(name, uri)
            self._retire(final)
            os.rename(downloaded, final)  # complete and checked: now it is the copy
        finally:
            shutil.rmtree(partial, ignore_errors=True)
        wall = time.monotonic() - started
        logger.info("model %s: downloaded %s (%d files, %d bytes) in %.1fs (%.1fs with the download process) into %s",
                    name, uri.text, result["files"], result["bytes"], result["seconds"], wall, final)
        return Fetched(final, int(result["bytes"]), int(result["files"]), float(result["seconds"]), round(wall, 3))

    async def _download(self, uri: StorageUri, out: Path, guard: HttpGuard | None) -> dict:
        request = {"uri": download_source(uri), "out": str(out), "parent_pid": os.getpid(),
                   "guard": {"loopback_allowed": guard.loopback_allowed} if guard else None}
        started = time.monotonic()
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "predictors.serving.storage.download", json.dumps(request),
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
            start_new_session=True,  # its own process group: its S3 downloaders are stopped with it
        )
        try:
            stdout, stderr = await asyncio.wait_for(process.communicate(), timeout=self.timeout_seconds)
        except BaseException as exc:  # timeout, cancellation (shutdown, a caller gone): stop it at once
            _kill_group(process)
            await process.wait()
            if isinstance(exc, asyncio.TimeoutError):
                raise StorageUnreachable(
                    f"downloading {uri.text} did not finish within {self.timeout_seconds:.0f} s "
                    "(PREDICTORS_STORAGE_TIMEOUT); nothing was kept", 30) from None
            raise
        _kill_group(process)  # S3 pool workers that outlived it, if any
        lines = stdout.decode(errors="replace").strip().splitlines()
        try:
            result = json.loads(lines[-1]) if lines else {}
        except json.JSONDecodeError:
            result = {}
        if process.returncode == 0 and "bytes" in result:
            return result
        error = result.get("error") or {
            "kind": "failed",
            "message": f"the download process exited with code {process.returncode} after "
                       f"{time.monotonic() - started:.1f}s: {stderr.decode(errors='replace')[-500:].strip()}",
        }
        raise storage_error(uri, error.get("kind", "failed"), error.get("message", ""))


def _kill_group(process: asyncio.subprocess.Process) -> None:
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def storage_error(uri: StorageUri, kind: str, message: str) -> Exception:
    """The serving error (status, gRPC code) for a download that failed with `kind`."""
    if kind == "not_found":
        return StorageNotFound(f"nothing to load at {uri.text}: {message}")
    if kind == "denied":
        return Refused(f"the store refused the server access to {uri.text}: {message} (credentials come from the "
                       "environment, as KServe's storage initializer reads them)")
    if kind == "refused":
        return Refused(f"loading from {uri.text} is refused: {message}")
    if kind == "unreachable":
        return StorageUnreachable(f"cannot reach the store of {uri.text}: {message}", 10)
    if kind == "invalid":
        return BadRequest(f"{uri.text} cannot be fetched: {message}")
    if kind == "no_space":
        return RetryLater(f"no space left for {uri.text} in the storage cache: {message}; {CACHE_HINT}", 60)
    return RetryLater(f"downloading {uri.text} failed: {message}", 10)
