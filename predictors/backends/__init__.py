"""Backends, registered by name, and the rule that picks one for a model folder."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

from ..model import REPORT_FILE, ModelConfig, gate_status
from .base import Backend
from .cpus import cpu_limit, default_workers
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
    refused: tuple[str, ...] = ()  # ONNX files present but not served, with why (logged as warnings)


def choose_backend(config: ModelConfig) -> BackendChoice:
    """The best servable file: int8 ONNX, then fp32 ONNX, then HuggingFace weights.

    An ONNX file written by `python -m predictors export` is served only if export_report.json
    records that it passed its accuracy gate, or that the user installed it with --force despite a
    failed gate (the reason then says so). Files the report does not cover (no report, or put there
    by hand) keep the plain rule: present means servable, int8 before fp32, after the gated ones.
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
        status = gate_status(config.path, onnx_files[0])
        note = f"; {status.precision} gate {status.state}: {status.summary}" if status else ""
        return BackendChoice("onnx", onnx_files[0], f"forced by predictor.yaml{note}")
    gated: list[BackendChoice] = []
    ungated: list[BackendChoice] = []
    refused: list[str] = []
    for path in onnx_files:
        status = gate_status(config.path, path)
        if status is None:
            ungated.append(BackendChoice("onnx", path, f"{path.name} present (no accuracy gate recorded)"))
        elif status.state == "passed":
            gated.append(BackendChoice("onnx", path, f"{path.name} passed the {status.precision} accuracy gate: {status.summary}"))
        elif status.state == "forced":
            gated.append(BackendChoice(
                "onnx", path,
                f"{path.name} FAILED its {status.precision} accuracy gate ({status.summary}); "
                "served only because it was installed with --force",
            ))
        elif status.state == "stale":
            ungated.append(BackendChoice("onnx", path, f"{path.name} present ({status.summary}; gate not re-run)"))
        elif status.state == "other-weights":
            refused.append(f"{path.name} was {status.summary}")
        else:
            refused.append(f"{path.name} failed its {status.precision} accuracy gate ({status.summary})")
    if gated or ungated:
        return replace((gated or ungated)[0], refused=tuple(refused))
    skipped = f"; not served: {'; '.join(refused)} (see {REPORT_FILE})" if refused else ""
    if hf is not None:
        reason = "no ONNX file that passed its gate for these weights" if refused else "no ONNX file"
        return BackendChoice("hf", hf, f"{reason}; HuggingFace weights present{skipped}", tuple(refused))
    raise NoBackendError(
        f"model '{config.name}': no weights in {config.path} (expected model.onnx, model.int8.onnx or model.safetensors)"
        f"{skipped}"
    )


__all__ = ["BACKENDS", "Backend", "BackendChoice", "NoBackendError", "choose_backend", "cpu_limit", "default_workers"]
