"""Task heads, registered by name. A new task is one module and one entry here: the head says which
architectures mean it, how its outputs are decoded, compared in the export gate and printed.

`load_model_config` and `discover_models` are the model layer's, bound to this registry: every
layer above reads model folders through them.
"""

from __future__ import annotations

from pathlib import Path

from ..model import ModelConfig
from ..model import discover_models as _discover_models
from ..model import infer_task as _infer_task
from ..model import load_model_config as _load_model_config
from .base import DriftSignal, GateCheck, GateRun, Observation, OutputSpec, TaskHead, TaskMetric, TokenBatch
from .classification import ClassificationHead
from .embedding import EmbeddingHead
from .token_classification import TokenClassificationHead

TASKS: dict[str, type[TaskHead]] = {
    "classification": ClassificationHead,
    "token_classification": TokenClassificationHead,
    "embedding": EmbeddingHead,  # last: its architecture suffix ("Model") is the most general
}
TASK_TRAITS = {name: head.traits for name, head in TASKS.items()}


def infer_task(architecture: str) -> str | None:
    return _infer_task(architecture, TASK_TRAITS)


def load_model_config(path: Path | str, name: str | None = None, version: int | None = None) -> ModelConfig:
    return _load_model_config(path, name, tasks=TASK_TRAITS, version=version)


def discover_models(models_dir: Path | str) -> tuple[list[ModelConfig], dict[str, str]]:
    return _discover_models(models_dir, tasks=TASK_TRAITS)


def head_for(config: ModelConfig) -> TaskHead:
    return TASKS[config.task](config)


__all__ = [
    "TASKS", "TASK_TRAITS", "DriftSignal", "GateCheck", "Observation", "TaskMetric", "GateRun", "OutputSpec", "TaskHead", "TokenBatch", "discover_models", "head_for", "infer_task",
    "load_model_config",
]
