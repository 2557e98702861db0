"""The model-folder contract: which files a folder holds, and content digests of them."""

from __future__ import annotations

import hashlib
import importlib.metadata
import os
import platform
from pathlib import Path

CONFIG_FILE = "config.json"  # HuggingFace config: architecture, labels
PREDICTOR_FILE = "predictor.yaml"  # overrides and metadata (settings.PredictorSettings)
BUILD_INFO_FILE = "build_info.json"  # what a build measured (metrics), written by tools/build
HELDOUT_FILE = "heldout.jsonl"  # held-out {"text", "label"} rows a build recorded
REPORT_FILE = "export_report.json"  # the ONNX export gate's verdict per file (report.py)
DRIFT_REFERENCE_FILE = "drift_reference.json"  # prediction reference distribution for drift
HF_WEIGHTS_FILES = ("model.safetensors", "pytorch_model.bin")
#: ONNX files by precision, in the order the backend choice prefers them.
ONNX_FILES = {"int8": "model.int8.onnx", "fp32": "model.onnx"}

#: Libraries whose version can change what a build or an export produces.
LIBRARIES = ("torch", "transformers", "tokenizers", "onnx", "onnxruntime", "numpy")

_DIGESTS: dict[tuple[str, int, int], str] = {}


def file_sha256(path: Path | str) -> str:
    """sha256 of a file, remembered per (path, size, mtime): a weights file is hashed once per process."""
    stat = os.stat(path)
    key = (os.path.abspath(path), stat.st_size, stat.st_mtime_ns)
    if key not in _DIGESTS:
        with open(path, "rb") as handle:
            _DIGESTS[key] = hashlib.file_digest(handle, "sha256").hexdigest()
    return _DIGESTS[key]


def library_versions(names: tuple[str, ...] = LIBRARIES) -> dict[str, str]:
    """Installed versions of `names` (plus python), recorded in build and export reports."""
    versions = {"python": platform.python_version()}
    for name in names:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions
