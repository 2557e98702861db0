"""One model's configuration, read from its folder.

A model is a folder: HuggingFace files (config.json, tokenizer, weights and/or ONNX) plus an optional
`predictor.yaml` that holds only overrides and metadata. Everything not overridden is inferred from
the folder, so a plain HuggingFace folder dropped into `models/` is served as is. The same
`ModelConfig` drives the server, the CLI and the rendered Kubernetes manifests.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

PREDICTOR_FILE = "predictor.yaml"
BUILD_INFO_FILE = "build_info.json"
HELDOUT_FILE = "heldout.jsonl"

# Keys a predictor.yaml may set. An unknown key is an error: a typo ("batchsize") must not be
# silently ignored.
KNOWN_KEYS = {
    "version",
    "description",
    "task",
    "backend",
    "batch_size",
    "max_batch",
    "max_length",
    "pooling",
    "normalize",
    "onnx_file",
    "workers",
    "source",
    "license",
    "metrics",
    "deploy",
}

BACKEND_CHOICES = ("auto", "onnx", "hf")

# Architecture suffix in config.json -> task. A bare encoder ("BertModel") is an embedding model.
ARCHITECTURE_TASKS = (
    ("ForSequenceClassification", "classification"),
    ("ForTokenClassification", "token_classification"),
    ("Model", "embedding"),
)


class ModelConfigError(ValueError):
    """A model folder that cannot be served; the message names the model and the file."""


@dataclass(frozen=True)
class ModelConfig:
    name: str
    path: Path
    task: str
    backend: str = "auto"
    version: str = "1"
    description: str = ""
    batch_size: int = 8
    max_batch: int = 1024
    max_length: int = 512
    pooling: str = "mean"
    normalize: bool = True
    onnx_file: str | None = None
    workers: int | None = None
    labels: tuple[str, ...] = ()
    architecture: str = ""
    source: str = ""
    license: str = ""
    metrics: dict[str, Any] = field(default_factory=dict)
    deploy: dict[str, Any] = field(default_factory=dict)

    @property
    def hf_weights(self) -> Path | None:
        for candidate in ("model.safetensors", "pytorch_model.bin"):
            if (self.path / candidate).is_file():
                return self.path / candidate
        return None

    def onnx_candidates(self) -> list[Path]:
        """ONNX files present in the folder, best first (int8, then fp32), or the configured one."""
        if self.onnx_file:
            return [self.path / self.onnx_file]
        return [p for p in (self.path / "model.int8.onnx", self.path / "model.onnx") if p.is_file()]

    def heldout(self) -> list[dict[str, Any]]:
        """The model's held-out examples ({"text", "label"}), where the build recorded them."""
        path = self.path / HELDOUT_FILE
        if not path.is_file():
            return []
        with path.open(encoding="utf-8") as fh:
            return [json.loads(line) for line in fh if line.strip()]

    def recorded_metrics(self) -> dict[str, Any]:
        """Metrics measured by the last build, falling back to those committed in predictor.yaml."""
        info = self.path / BUILD_INFO_FILE
        if info.is_file():
            try:
                measured = json.loads(info.read_text()).get("metrics") or {}
            except (OSError, json.JSONDecodeError):
                measured = {}
            return {**self.metrics, **measured}
        return dict(self.metrics)


def _read_yaml(path: Path, name: str) -> dict[str, Any]:
    if not path.is_file():
        return {}
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise ModelConfigError(f"model '{name}': {path} is not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise ModelConfigError(f"model '{name}': {path} must be a mapping of keys to values")
    unknown = sorted(set(data) - KNOWN_KEYS)
    if unknown:
        raise ModelConfigError(
            f"model '{name}': unknown key(s) {unknown} in {path}; known keys: {sorted(KNOWN_KEYS)}"
        )
    return data


def _read_hf_config(path: Path, name: str) -> dict[str, Any]:
    config_file = path / "config.json"
    if not config_file.is_file():
        raise ModelConfigError(
            f"model '{name}': {config_file} is missing; a model folder needs a HuggingFace config.json"
        )
    try:
        return json.loads(config_file.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ModelConfigError(f"model '{name}': {config_file} is not valid JSON: {exc}") from exc


def infer_task(architecture: str) -> str | None:
    for suffix, task in ARCHITECTURE_TASKS:
        if architecture.endswith(suffix):
            # "...Model" means a bare encoder only without a head ("GPT2LMHeadModel" is a generator).
            if task == "embedding" and ("For" in architecture or "Head" in architecture):
                return None
            return task
    return None


def _labels(hf_config: dict[str, Any]) -> tuple[str, ...]:
    id2label = hf_config.get("id2label") or {}
    return tuple(id2label[k] for k in sorted(id2label, key=int))


def _pooling(path: Path) -> str:
    """sentence-transformers records its pooling in 1_Pooling/config.json; default to mean."""
    pooling_file = path / "1_Pooling" / "config.json"
    if pooling_file.is_file():
        modes = json.loads(pooling_file.read_text())
        if modes.get("pooling_mode_cls_token"):
            return "cls"
        if modes.get("pooling_mode_max_tokens"):
            return "max"
    return "mean"


def _max_length(path: Path, hf_config: dict[str, Any]) -> int:
    limit = int(hf_config.get("max_position_embeddings", 512))
    st_config = path / "sentence_bert_config.json"
    if st_config.is_file():
        limit = min(limit, int(json.loads(st_config.read_text()).get("max_seq_length", limit)))
    return limit


def _positive_int(data: dict[str, Any], key: str, default: int | None, name: str) -> int | None:
    value = data.get(key, default)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ModelConfigError(f"model '{name}': {key} must be a positive integer, got {value!r}")
    return value


def load_model_config(path: Path | str, name: str | None = None) -> ModelConfig:
    """Read one model folder into a ModelConfig. Raises ModelConfigError naming model and file."""
    path = Path(path).resolve()
    name = name or path.name
    if not path.is_dir():
        raise ModelConfigError(f"model '{name}': {path} is not a folder")
    overrides = _read_yaml(path / PREDICTOR_FILE, name)
    hf_config = _read_hf_config(path, name)
    architecture = (hf_config.get("architectures") or [""])[0]

    from .tasks import TASKS  # the registry decides which tasks exist

    task = overrides.get("task") or infer_task(architecture)
    if task is None:
        raise ModelConfigError(
            f"model '{name}': cannot infer the task from architecture '{architecture}' in "
            f"{path / 'config.json'}; set 'task' in {PREDICTOR_FILE} (one of {sorted(TASKS)})"
        )
    if task not in TASKS:
        raise ModelConfigError(
            f"model '{name}': unknown task '{task}' in {path / PREDICTOR_FILE}; one of {sorted(TASKS)}"
        )
    backend = overrides.get("backend", "auto")
    if backend not in BACKEND_CHOICES:
        raise ModelConfigError(
            f"model '{name}': backend must be one of {list(BACKEND_CHOICES)}, got {backend!r}"
        )
    labels = _labels(hf_config)
    if task != "embedding" and not labels:
        raise ModelConfigError(f"model '{name}': {path / 'config.json'} has no id2label for task {task}")
    config = ModelConfig(
        name=name,
        path=path,
        task=task,
        backend=backend,
        version=str(overrides.get("version", "1")),
        description=str(overrides.get("description", "")),
        batch_size=_positive_int(overrides, "batch_size", 8, name),
        max_batch=_positive_int(overrides, "max_batch", 1024, name),
        max_length=_positive_int(overrides, "max_length", _max_length(path, hf_config), name),
        pooling=str(overrides.get("pooling", _pooling(path))),
        normalize=bool(overrides.get("normalize", True)),
        onnx_file=overrides.get("onnx_file"),
        workers=_positive_int(overrides, "workers", None, name),
        labels=labels if task != "embedding" else (),
        architecture=architecture,
        source=str(overrides.get("source", "")),
        license=str(overrides.get("license", "")),
        metrics=dict(overrides.get("metrics") or {}),
        deploy=dict(overrides.get("deploy") or {}),
    )
    if config.pooling not in ("mean", "cls", "max"):
        raise ModelConfigError(f"model '{name}': pooling must be mean, cls or max, got {config.pooling!r}")
    if config.onnx_file and not (path / config.onnx_file).is_file():
        raise ModelConfigError(f"model '{name}': onnx_file {path / config.onnx_file} does not exist")
    return config


def discover_models(models_dir: Path | str) -> tuple[list[ModelConfig], dict[str, str]]:
    """Every model folder under models_dir: the configs that load, and an error per folder that doesn't.

    A folder counts as a model when it holds a config.json or a predictor.yaml; one broken folder
    does not stop the others from being served.
    """
    models_dir = Path(models_dir)
    if not models_dir.is_dir():
        raise FileNotFoundError(f"models folder {models_dir} does not exist")
    configs: list[ModelConfig] = []
    errors: dict[str, str] = {}
    for entry in sorted(models_dir.iterdir()):
        if not entry.is_dir() or entry.name.startswith("."):
            continue
        if not ((entry / "config.json").exists() or (entry / PREDICTOR_FILE).exists()):
            continue
        try:
            configs.append(load_model_config(entry))
        except ModelConfigError as exc:
            errors[entry.name] = str(exc)
    return configs, errors


def default_workers() -> int:
    """Parallel inference workers: PREDICTORS_WORKERS when set (the manifests set it from the pod's
    cpu limit, which cgroup v1 nodes don't expose as cpu.max), else one per CPU this process may use."""
    configured = os.environ.get("PREDICTORS_WORKERS", "").strip()
    if configured:
        try:
            return max(1, int(configured))
        except ValueError:
            raise ModelConfigError(f"PREDICTORS_WORKERS must be a whole number, got {configured!r}") from None
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()
        if quota != "max":
            cpus = min(cpus, max(1, int(int(quota) // int(period))))
    except (OSError, ValueError):
        pass
    return max(1, cpus)
