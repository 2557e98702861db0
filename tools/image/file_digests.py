#!/usr/bin/env python3
"""`sha256sum`'s output for the files an image build copies, with build records read as content.

    python tools/image/file_digests.py FILE...

Prints `<sha256>  <path>` per file, as `sha256sum` does, except for a model folder's build
records (build_info.json, export_report.json): those are hashed without what only says when and how
fast that build ran (`created`, `date` and every `*seconds` key). The demo models build
deterministically (the same weights and ONNX bytes from an empty cache: docs/build.md), so a fresh
build of an unchanged recipe keeps the demo image's input digest and tools/image/build.sh reuses
the image instead of rebuilding it; the image then holds the records of the earlier build of the
same files. Any other change to a record (a metric, a gate, a library version) is a new digest.
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path
from typing import Any

BUILD_RECORDS = ("build_info.json", "export_report.json")
RUN_KEYS = ("created", "date")


def without_run_measurements(record: Any) -> Any:
    """The record without the keys that describe one build run rather than what it built."""
    if isinstance(record, dict):
        return {key: without_run_measurements(value) for key, value in record.items()
                if key not in RUN_KEYS and not key.endswith("seconds")}
    if isinstance(record, list):
        return [without_run_measurements(value) for value in record]
    return record


def file_digest(path: Path) -> str:
    if path.name in BUILD_RECORDS:
        try:
            record = json.loads(path.read_text())
        except (UnicodeDecodeError, json.JSONDecodeError):
            pass  # not a build record after all: hashed as bytes
        else:
            canonical = json.dumps(without_run_measurements(record), sort_keys=True, separators=(",", ":"))
            return hashlib.sha256(canonical.encode()).hexdigest()
    digest = hashlib.sha256()
    with path.open("rb") as file:
        while chunk := file.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def main(argv: list[str]) -> int:
    for name in argv:
        print(f"{file_digest(Path(name))}  {name}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
