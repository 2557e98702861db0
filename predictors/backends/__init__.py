"""Backends, registered by name, and the rule that picks one for a model folder: every backend
ranks the files it can serve (Backend.candidates), and the best rank wins.

`load_model_config` and `discover_models` are the model layer's, bound to the task registry and to
this one: every layer above reads model folders through them, so a `backend:` that names no
registered backend is refused when the folder is read.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from ..model import ModelConfig
from ..model import discover_models as _discover_models
from ..model import load_model_config as _load_model_config
from ..tasks import TASK_TRAITS
from .base import Backend, BackendChoice, Candidates
from .cpus import cpu_limit, default_workers
from .devices import DeviceChoice
from .hf import HFBackend
from .onnx import OnnxBackend
from .sklearn_pipeline import SklearnBackend

#: In order of preference between candidates of the same rank.
BACKENDS: dict[str, type[Backend]] = {
    "onnx": OnnxBackend,
    "hf": HFBackend,
    "sklearn": SklearnBackend,
}
#: What predictor.yaml's `backend:` may say: auto, or a registered backend.
BACKEND_CHOICES = ("auto", *BACKENDS)


class NoBackendError(RuntimeError):
    pass


def choose_backend(config: ModelConfig) -> BackendChoice:
    """The best servable file of any backend (an exported file that passed its gate, then one no
    gate covers, then the framework weights). `backend: <name>` in predictor.yaml forces one;
    forcing one whose files are missing is an error rather than a silent fallback."""
    if config.backend != "auto":
        backend = BACKENDS.get(config.backend)
        if backend is None:
            raise NoBackendError(
                f"model '{config.name}': backend {config.backend!r} in predictor.yaml is not one of {list(BACKEND_CHOICES)}"
            )
        forced = backend.candidates(config, forced=True).servable
        if not forced:
            raise NoBackendError(f"model '{config.name}': backend {backend.name} forced but {backend.files} in {config.path}")
        return forced[0]
    servable: list[BackendChoice] = []
    refused: list[str] = []
    for backend in BACKENDS.values():
        found = backend.candidates(config)
        servable += found.servable
        refused += found.refused
    skipped = f"; not served: {'; '.join(refused)}" if refused else ""
    if not servable:
        raise NoBackendError(
            f"model '{config.name}': no weights in {config.path} (expected one of: "
            f"{', '.join(b.files.removeprefix('no ') for b in BACKENDS.values())}){skipped}"
        )
    best = min(servable, key=lambda choice: choice.rank)  # min is stable: registry order breaks ties
    return replace(best, reason=best.reason + skipped, refused=tuple(refused))


def complete_config(config: ModelConfig) -> ModelConfig:
    """`config` with what each backend reads from the folder's files (a pipeline's labels, features)."""
    for backend in BACKENDS.values():
        config = backend.complete(config)
    return config


def load_model_config(path: Path | str, name: str | None = None, version: int | None = None,
                      overrides: Path | None = None) -> ModelConfig:
    return _load_model_config(path, name, tasks=TASK_TRAITS, version=version, backends=tuple(BACKENDS),
                              overrides=overrides, complete=complete_config)


def discover_models(models_dir: Path | str) -> tuple[list[ModelConfig], dict[str, str]]:
    return _discover_models(models_dir, tasks=TASK_TRAITS, backends=tuple(BACKENDS), complete=complete_config)


def device_for(backend: str) -> DeviceChoice:
    """The device a model on `backend` would load onto here, without loading it."""
    return BACKENDS[backend].device()


__all__ = [
    "BACKENDS", "BACKEND_CHOICES", "Backend", "BackendChoice", "Candidates", "NoBackendError", "choose_backend",
    "cpu_limit", "default_workers", "device_for", "discover_models", "load_model_config",
]
