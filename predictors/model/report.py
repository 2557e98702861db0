"""`export_report.json`: the ONNX export gate's verdict per file, and what the backend choice reads.

Written by `predictors.export`; read here so that choosing a backend at serve time never imports
export code.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .files import REPORT_FILE, file_sha256


def read_report(folder: Path | str) -> dict[str, Any] | None:
    path = Path(folder) / REPORT_FILE
    try:
        report = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None
    return report if isinstance(report, dict) else None


def write_report(folder: Path | str, report: dict[str, Any]) -> Path:
    """Write atomically: a server reading the folder never sees half a report."""
    path = Path(folder) / REPORT_FILE
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    os.replace(tmp, path)
    return path


@dataclass(frozen=True)
class GateStatus:
    """What export_report.json says about one installed ONNX file."""

    # "passed" | "forced" (failed, installed with --force) | "failed" | "stale" (the file changed since)
    # | "other-weights" (gated against HuggingFace weights that have been replaced since)
    state: str
    precision: str
    summary: str

    @property
    def servable(self) -> bool:
        return self.state in ("passed", "forced")


def gate_status(folder: Path | str, onnx_file: Path | str) -> GateStatus | None:
    """The recorded gate of `onnx_file`, or None when the folder's report does not mention it.

    "stale" when the file is not byte for byte the one gated (sha256); "other-weights" when the
    folder's HuggingFace weights are not the ones it was gated against (a retrained model next to
    an old export)."""
    folder, onnx_file = Path(folder), Path(onnx_file)
    report = read_report(folder)
    if not report:
        return None
    try:
        key = Path(os.path.abspath(onnx_file)).relative_to(os.path.abspath(folder)).as_posix()
    except ValueError:
        return None
    entry = (report.get("files") or {}).get(key)
    if not isinstance(entry, dict):
        return None
    gate = entry.get("gate") or {}
    precision = str(entry.get("precision", "?"))
    summary = str(gate.get("summary", ""))
    try:
        same_file = entry.get("size_bytes") == onnx_file.stat().st_size and entry.get("sha256") == file_sha256(onnx_file)
    except OSError:
        return None
    if not same_file:
        if not entry.get("installed"):
            return None  # the export refused its own candidate; this file is some other one
        return GateStatus("stale", precision, f"{key} changed since {REPORT_FILE} was written")
    reference = report.get("reference") or {}
    weights = folder / str(reference.get("file", ""))
    if reference.get("sha256") and reference.get("file") and weights.is_file() and file_sha256(weights) != reference["sha256"]:
        # e.g. the model was retrained and model.safetensors replaced, but this ONNX file was not
        return GateStatus("other-weights", precision, f"gated against other weights than the current {weights.name}")
    if gate.get("passed"):
        return GateStatus("passed", precision, summary)
    if entry.get("forced") and entry.get("installed"):
        return GateStatus("forced", precision, "; ".join(gate.get("failures") or []) or summary)
    return GateStatus("failed", precision, "; ".join(gate.get("failures") or []) or summary)
