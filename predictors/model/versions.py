"""Model versions in a model folder, Triton's layout: `models/<name>/<version>/` holds one plain
model folder per version (`<version>` a positive integer); a folder without numbered sub-folders is
version 1. `predictor.yaml` at `models/<name>/` may set `version_policy` (latest | all |
{specific: [..]}), like Triton's version policy."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Iterable

from .files import holds_a_model
from .settings import VersionPolicy

_VERSION = re.compile(r"^[1-9][0-9]{0,8}$")


class ModelNameError(ValueError):
    """A model name that is not a folder directly under the models folder (traversal, separators...)."""


#: The longest file name the common Linux file systems allow (NAME_MAX).
MAX_NAME_BYTES = 255


def check_model_name(models_dir: Path | str, name: str) -> Path:
    """The folder of model `name`, refusing anything that is not a plain child of `models_dir`:
    '.', '..', separators (also once URL-decoded), absolute paths, NUL, and symlinks leaving it."""
    if not name or name in (".", "..") or name.startswith(".") or any(c in name for c in "/\\\x00") or os.path.isabs(name):
        raise ModelNameError(f"'{name}' is not a model name: a model is a folder directly under the models folder")
    if len(name.encode("utf-8", "surrogatepass")) > MAX_NAME_BYTES:
        raise ModelNameError(
            f"a model name is at most {MAX_NAME_BYTES} bytes (a folder name); got {len(name.encode('utf-8', 'surrogatepass'))}"
        )
    root = Path(models_dir).resolve()
    folder = root / name
    if folder.is_symlink() or folder.exists():
        if folder.resolve().parent != root:
            raise ModelNameError(f"'{name}' leaves the models folder (symlink to {folder.resolve()})")
    return folder


def version_folders(folder: Path) -> dict[int, Path]:
    """Numbered version sub-folders of a model folder, or {1: folder} when it is a plain model folder."""
    numbered = {
        int(child.name): child
        for child in (folder.iterdir() if folder.is_dir() else ())
        if child.is_dir() and _VERSION.match(child.name)
    }
    if numbered:
        return dict(sorted(numbered.items()))
    if holds_a_model(folder):
        return {1: folder}
    return {}


def select_versions(policy: VersionPolicy, available: Iterable[int]) -> list[int]:
    """The versions a policy serves, ascending. `latest` keeps the highest; `all` every one;
    `specific` those listed that exist."""
    versions = sorted(available)
    if not versions:
        return []
    if policy == "all":
        return versions
    if policy == "latest":
        return versions[-1:]
    return [v for v in versions if v in set(policy.specific)]


def folder_fingerprint(folder: Path) -> tuple[tuple[str, int, int], ...]:
    """(path, size, mtime) of every file in a version folder (not in numbered version sub-folders):
    a changed fingerprint means the version must be loaded again."""
    entries = []
    for root, dirs, files in os.walk(folder):
        if Path(root) == folder:
            dirs[:] = [d for d in dirs if not _VERSION.match(d)]
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        for name in files:
            if name.startswith("."):
                continue
            path = Path(root) / name
            try:
                stat = path.stat()
            except OSError:
                continue
            entries.append((str(path.relative_to(folder)), stat.st_size, stat.st_mtime_ns))
    return tuple(sorted(entries))
