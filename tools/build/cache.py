"""Where builds are cached, and how a cached folder is installed into models/<name>/.

    ${XDG_CACHE_HOME:-~/.cache}/predictors/
        downloads/                   pinned wheels and .deb (sources.py)
        trained/<name>-<train key>/  fine-tuned HuggingFace folder + held-out set (train_info.json)
        <name>-<folder key>/         the complete model folder (build_info.json)

Everything is built in a temporary folder beside its target and renamed into place, so a cache
folder exists only once complete.  ``predictor.yaml`` and ``README.md`` in models/<name>/ belong
to the repository and are never touched.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from predictors.model.files import file_sha256

log = logging.getLogger("build")

#: Files in models/<name>/ that belong to the repository, never to a build.
REPO_FILES = frozenset({"predictor.yaml", "README.md"})


def cache_root_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "predictors"


def folder_cache_dir(root: Path, name: str, key: str) -> Path:
    return root / f"{name}-{key}"


def trained_cache_dir(root: Path, name: str, key: str) -> Path:
    return root / "trained" / f"{name}-{key}"


@contextmanager
def building(target: Path) -> Iterator[Path]:
    """A scratch folder that becomes `target` (replacing an older one) if the block succeeds."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}."))
    try:
        yield tmp
        # World-readable (safetensors writes 0600): the server may run as another user.
        for path in [tmp, *tmp.rglob("*")]:
            os.chmod(path, 0o755 if path.is_dir() else 0o644)
        if target.exists():  # --force: replace the previous build of the same recipe
            old = target.with_name(f".{target.name}.old-{os.getpid()}")
            os.rename(target, old)
            shutil.rmtree(old, ignore_errors=True)
        os.rename(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def cached_files(cache_dir: Path) -> list[Path]:
    """The build's files, relative to its folder (the repository's own files excepted)."""
    files = sorted(p.relative_to(cache_dir) for p in cache_dir.rglob("*") if p.is_file())
    return [p for p in files if not (len(p.parts) == 1 and p.name in REPO_FILES)]


def same_file(source: Path, dest: Path) -> bool:
    """Identical content; size + mtime (kept by copy2) avoids re-hashing on every run."""
    if not dest.is_file():
        return False
    s, d = source.stat(), dest.stat()
    if s.st_size != d.st_size:
        return False
    return s.st_mtime_ns == d.st_mtime_ns or file_sha256(source) == file_sha256(dest)


def stale_files(cache_dir: Path, dest_dir: Path) -> list[Path]:
    """The cached build's files that dest_dir lacks or holds with other content."""
    return [rel for rel in cached_files(cache_dir) if not same_file(cache_dir / rel, dest_dir / rel)]


def install(cache_dir: Path, dest_dir: Path) -> int:
    """Copy the cached build into dest_dir (atomic per file); returns how many files changed.

    Files of dest_dir that the build did not produce are reported, not deleted.
    """
    built = cached_files(cache_dir)
    if dest_dir.is_dir():
        present = sorted(p.relative_to(dest_dir) for p in dest_dir.rglob("*") if p.is_file())
        extra = [p for p in present if p not in built and str(p) not in REPO_FILES and not p.name.startswith(".")]
        if extra:
            log.info("note: %s has files this build does not produce: %s", dest_dir, ", ".join(map(str, extra)))
    changed = stale_files(cache_dir, dest_dir)
    for rel in changed:
        source, dest = cache_dir / rel, dest_dir / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(f".{dest.name}.tmp-{os.getpid()}")
        shutil.copy2(source, tmp)
        os.replace(tmp, dest)
    return len(changed)
