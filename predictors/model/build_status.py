"""`.build_status.json` in a model folder while a build is writing it: what the build is doing.

The build (tools/build) writes it before it touches the folder and removes it once every file is in
place; the server shows such a folder as LOADING with the build's message ("building: fine-tuning
step 120/250") and loads it as soon as the file is gone and config.json is there.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

BUILD_STATUS_FILE = ".build_status.json"


@dataclass(frozen=True)
class BuildStatus:
    state: str  # "building" | "failed"
    message: str  # what the build is doing, or why it failed
    updated: float  # time.time() of the last update

    @property
    def building(self) -> bool:
        return self.state == "building"


def write_build_status(folder: Path | str, state: str, message: str) -> None:
    """Atomically record what the build of `folder` is doing (creates the folder)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / f"{BUILD_STATUS_FILE}.tmp-{os.getpid()}"
    tmp.write_text(json.dumps({"state": state, "message": message, "updated": time.time()}), encoding="utf-8")
    os.replace(tmp, folder / BUILD_STATUS_FILE)


def clear_build_status(folder: Path | str) -> None:
    """The build is done: the folder is complete."""
    try:
        (Path(folder) / BUILD_STATUS_FILE).unlink()
    except FileNotFoundError:
        pass


def read_build_status(folder: Path | str) -> BuildStatus | None:
    """The folder's build status, or None when no build is writing it."""
    try:
        data = json.loads((Path(folder) / BUILD_STATUS_FILE).read_text(encoding="utf-8"))
        return BuildStatus(str(data["state"]), str(data["message"]), float(data.get("updated", 0)))
    except (OSError, ValueError, KeyError, TypeError):
        return None
