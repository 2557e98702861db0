"""Backends, registered by name, and the rule that picks one for a model folder."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..config import ModelConfig
from .base import Backend
from .hf import HFBackend
from .onnx import OnnxBackend

BACKENDS: dict[str, type[Backend]] = {
    "onnx": OnnxBackend,
    "hf": HFBackend,
}


class NoBackendError(RuntimeError):
    pass


@dataclass(frozen=True)
class BackendChoice:
    name: str
    weights: Path
    reason: str


def choose_backend(config: ModelConfig) -> BackendChoice:
    """ONNX when an ONNX file is present (int8 before fp32), else HuggingFace weights.

    `backend: onnx` or `backend: hf` in predictor.yaml forces one; forcing one whose files are
    missing is an error rather than a silent fallback.
    """
    onnx_files = config.onnx_candidates()
    hf = config.hf_weights
    if config.backend == "hf":
        if hf is None:
            raise NoBackendError(f"model '{config.name}': backend hf forced but no model.safetensors in {config.path}")
        return BackendChoice("hf", hf, "forced by predictor.yaml")
    if config.backend == "onnx":
        if not onnx_files:
            raise NoBackendError(f"model '{config.name}': backend onnx forced but no .onnx file in {config.path}")
        return BackendChoice("onnx", onnx_files[0], "forced by predictor.yaml")
    if onnx_files:
        return BackendChoice("onnx", onnx_files[0], f"{onnx_files[0].name} present")
    if hf is not None:
        return BackendChoice("hf", hf, "no ONNX file; HuggingFace weights present")
    raise NoBackendError(
        f"model '{config.name}': no weights in {config.path} (expected model.onnx, model.int8.onnx or model.safetensors)"
    )


__all__ = ["BACKENDS", "Backend", "BackendChoice", "NoBackendError", "choose_backend"]
