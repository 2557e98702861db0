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
#: A scikit-learn pipeline saved with skops.io (`model.skops`, or a folder's only `.skops` file).
SKOPS_FILE = "model.skops"
SKOPS_SUFFIX = ".skops"
#: Pickle files (pickle, joblib): never loaded, since loading one runs whatever code it holds; a
#: folder that holds one is reported with the command that converts it to skops.
PICKLE_SUFFIXES = (".pkl", ".pickle", ".joblib")

#: Libraries whose version can change what a build or an export produces.
LIBRARIES = ("torch", "transformers", "tokenizers", "onnx", "onnxruntime", "numpy")

_DIGESTS: dict[tuple[str, int, int], str] = {}


def skops_file(folder: Path) -> Path | None:
    """The folder's skops file: model.skops, else its only .skops file."""
    preferred = folder / SKOPS_FILE
    if preferred.is_file():
        return preferred
    found = sorted(p for p in folder.glob(f"*{SKOPS_SUFFIX}") if p.is_file()) if folder.is_dir() else []
    return found[0] if len(found) == 1 else None


def pickle_files(folder: Path) -> list[Path]:
    """The folder's pickle and joblib files (by suffix; never opened here)."""
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in PICKLE_SUFFIXES)


def holds_a_model(folder: Path) -> bool:
    """A folder with a HuggingFace config.json, a predictor.yaml, a skops file or a pickle file."""
    return (folder / CONFIG_FILE).exists() or (folder / PREDICTOR_FILE).exists() or (
        folder.is_dir() and any(folder.glob(f"*{SKOPS_SUFFIX}"))) or bool(pickle_files(folder))


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
