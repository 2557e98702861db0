"""One model's configuration, read from its folder.

A model is a folder: HuggingFace files (config.json, tokenizer, weights and/or ONNX), or a
scikit-learn text pipeline saved with skops (`model.skops`, no config.json), plus an optional
`predictor.yaml` (settings.PredictorSettings) that holds only overrides and metadata. Everything not
overridden is inferred from the folder, so a plain HuggingFace folder or a skops file dropped into
`models/` is served as is. The same `ModelConfig` drives the server, the CLI and the rendered manifests.

A pipeline folder's labels and features are in its skops file, which only the backend that serves
it reads: `load_model_config` takes a `complete` function (the backend registry passes one) that
fills them in.

Which tasks exist is not decided here: the caller passes each task's `TaskTraits` (the task
registry in `predictors.tasks` does, and binds these functions to itself); likewise the registered
backends' names, which `predictors.backends` adds.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from .cleaning import TextCleaner
from .files import (
    BUILD_INFO_FILE, CONFIG_FILE, HELDOUT_FILE, HF_WEIGHTS_FILES, ONNX_FILES, PREDICTOR_FILE,
    SKOPS_SUFFIX, holds_a_model, pickle_files, skops_file,
)
from .settings import (
    CHARS_PER_TOKEN, DEFAULT_MAX_BODY_BYTES, CacheSection, DeploySection, ModelSettingsError, PredictionLogSection,
    PredictorSettings, PreprocessSection, TrainingSection, VersionPolicy, read_settings,
)


class ModelConfigError(ModelSettingsError):
    """A model folder that cannot be served; the message names the model and the file."""


@dataclass(frozen=True)
class TaskTraits:
    """What the folder contract needs to know of a task: which architectures mean it, and whether
    its config.json must carry labels (id2label)."""

    architectures: tuple[str, ...]  # config.json "architectures" suffixes, e.g. "ForSequenceClassification"
    needs_labels: bool = True
    # A scikit-learn text pipeline (a folder with a .skops file and no config.json) is served as this task.
    text_pipelines: bool = False


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
    deploy: DeploySection = field(default_factory=DeploySection)
    version_policy: VersionPolicy = "latest"
    max_batch_tokens: int | None = None  # None: serving's default
    max_queue_texts: int | None = None  # None: a few seconds of measured throughput
    timeout_ms: int | None = None  # None: serving's default deadline
    cache: CacheSection = field(default_factory=CacheSection)
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES  # a REST request body's limit
    max_text_chars: int | None = None  # None: max_length x CHARS_PER_TOKEN
    personal_data: bool | None = None  # None: the task head's default
    prediction_log: PredictionLogSection = field(default_factory=PredictionLogSection)
    matryoshka_dimensions: tuple[int, ...] = ()
    preprocess: PreprocessSection = field(default_factory=PreprocessSection)
    training: TrainingSection = field(default_factory=TrainingSection)
    # A scikit-learn text pipeline's folder (a .skops or pickle file, no config.json).
    text_pipeline: bool = False
    # What the model's inputs are made of: the tokenizer and max_length, or a pipeline's vectorizer
    # (vocabulary size, n-gram range); read from the folder without loading the model.
    features: dict[str, Any] = field(default_factory=dict)

    @property
    def cleaner(self) -> TextCleaner:
        """The model's text cleaning (predictor.yaml `preprocess:`), applied before the model."""
        return TextCleaner(self.preprocess)

    @property
    def pipeline_file(self) -> Path | None:
        """The scikit-learn pipeline saved with skops, when the folder holds one."""
        return skops_file(self.path)

    @property
    def pickle_files(self) -> list[Path]:
        """Pickle/joblib files in the folder: never loaded (see files.PICKLE_SUFFIXES)."""
        return pickle_files(self.path)

    @property
    def text_char_limit(self) -> int:
        """Characters of each text kept before tokenizing: more cannot fit into max_length tokens."""
        return self.max_text_chars or self.max_length * CHARS_PER_TOKEN

    @property
    def hf_weights(self) -> Path | None:
        for candidate in HF_WEIGHTS_FILES:
            if (self.path / candidate).is_file():
                return self.path / candidate
        return None

    def onnx_candidates(self) -> list[Path]:
        """ONNX files present in the folder, best first (int8, then fp32), or the configured one."""
        if self.onnx_file:
            return [self.path / self.onnx_file]
        return [self.path / f for f in ONNX_FILES.values() if (self.path / f).is_file()]

    def heldout(self) -> list[dict[str, Any]]:
        """The model's held-out examples ({"text", "label"}), where the build recorded them."""
        path = self.path / HELDOUT_FILE
        if not path.is_file():
            return []
        with path.open(encoding="utf-8") as fh:
            return [json.loads(line) for line in fh if line.strip()]

    def build_info(self) -> dict[str, Any]:
        """What the last build recorded (build_info.json), or {} for a folder no build wrote."""
        try:
            info = json.loads((self.path / BUILD_INFO_FILE).read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            return {}
        return info if isinstance(info, dict) else {}

    def recorded_metrics(self) -> dict[str, Any]:
        """Metrics measured by the last build, falling back to those committed in predictor.yaml."""
        return {**self.metrics, **(self.build_info().get("metrics") or {})}

    def training_metadata(self) -> dict[str, Any]:
        """How the model was trained and how well it does: date, data, train and held-out sizes, and
        held-out accuracy. From predictor.yaml's `training:` and `metrics:`, overridden by what the
        build recorded in build_info.json; keys nobody recorded are left out."""
        settings = self.training.model_dump(exclude_none=True)
        if "date" in settings:
            settings["date"] = settings["date"].isoformat()
        recorded = self.build_info().get("training") or {}
        metadata = {**settings, **{k: v for k, v in recorded.items() if v is not None}}
        metrics = self.recorded_metrics()
        if "heldout_size" in metrics:
            metadata.setdefault("heldout_size", metrics["heldout_size"])
        if "heldout_accuracy" in metrics:
            metadata["heldout_accuracy"] = metrics["heldout_accuracy"]
        return metadata


def infer_task(architecture: str, tasks: Mapping[str, TaskTraits]) -> str | None:
    """The task whose architecture suffix `architecture` ends with. The rest of the name must not
    name another head ("GPT2LMHeadModel" is no bare "...Model" encoder, "BertForMaskedLM" no task)."""
    for task, traits in tasks.items():
        for suffix in traits.architectures:
            if architecture.endswith(suffix):
                rest = architecture[: -len(suffix)]
                if "For" not in rest and "Head" not in rest:
                    return task
    return None


def _read_hf_config(path: Path, name: str) -> dict[str, Any]:
    config_file = path / CONFIG_FILE
    if not config_file.is_file():
        raise ModelConfigError(
            f"model '{name}': {config_file} is missing; a model folder needs a HuggingFace config.json"
        )
    try:
        return json.loads(config_file.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ModelConfigError(f"model '{name}': {config_file} is not valid JSON: {exc}") from exc


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


def tokenizer_features(path: Path, max_length: int) -> dict[str, Any]:
    """The tokenizer a transformer folder's texts go through (its class and kind, vocabulary size) and
    max_length, read from tokenizer.json / tokenizer_config.json."""
    features: dict[str, Any] = {}
    try:
        tokenizer_class = json.loads((path / "tokenizer_config.json").read_text(encoding="utf-8")).get("tokenizer_class")
    except (OSError, json.JSONDecodeError, AttributeError):
        tokenizer_class = None
    if tokenizer_class:
        features["tokenizer"] = str(tokenizer_class)
    try:
        model = json.loads((path / "tokenizer.json").read_text(encoding="utf-8")).get("model") or {}
    except (OSError, json.JSONDecodeError, AttributeError):
        model = {}
    if model.get("type"):
        features["subwords"] = str(model["type"])  # WordPiece, BPE, Unigram
    if isinstance(model.get("vocab"), (dict, list)):
        features["vocabulary_size"] = len(model["vocab"])
    features["max_length"] = max_length
    return features


def _pipeline_folder(path: Path) -> bool:
    """No HuggingFace config.json, but a scikit-learn pipeline file (skops, or a pickle that is
    never loaded but reported)."""
    return not (path / CONFIG_FILE).is_file() and (any(path.glob(f"*{SKOPS_SUFFIX}")) or bool(pickle_files(path)))


def _pipeline_task(name: str, path: Path, settings: PredictorSettings, tasks: Mapping[str, TaskTraits]) -> str:
    served = sorted(task for task, traits in tasks.items() if traits.text_pipelines)
    task = settings.task or (served[0] if len(served) == 1 else None)
    if task is None or (task in tasks and task not in served):
        raise ModelConfigError(
            f"model '{name}': {path} holds a scikit-learn pipeline (no config.json), which is served as "
            f"one of {served}{f'; task {task!r} in {path / PREDICTOR_FILE} is not one of them' if task else ''}"
        )
    return task


def _max_length(path: Path, hf_config: dict[str, Any]) -> int:
    limit = int(hf_config.get("max_position_embeddings", 512))
    st_config = path / "sentence_bert_config.json"
    if st_config.is_file():
        limit = min(limit, int(json.loads(st_config.read_text()).get("max_seq_length", limit)))
    return limit


def load_model_config(
    path: Path | str, name: str | None = None, *, tasks: Mapping[str, TaskTraits], version: int | None = None,
    backends: Sequence[str] | None = None, overrides: Path | None = None,
    complete: Callable[[ModelConfig], ModelConfig] | None = None,
) -> ModelConfig:
    """Read one model folder into a ModelConfig. Raises ModelConfigError naming model and file.

    `complete` adds what only a backend can read from the folder's files (a pipeline's labels and
    features); it raises ModelConfigError for files it refuses.

    With `version`, `path` is the numbered version sub-folder `models/<name>/<version>/`: the name
    comes from its parent, and the parent's predictor.yaml supplies defaults the version's may override.
    With `overrides` (a predictor.yaml in the models folder of a model fetched from a storage URI),
    its keys override the fetched folder's."""
    path = Path(path).resolve()
    name = name or (path.parent.name if version is not None and path.name == str(version) else path.name)
    if not path.is_dir():
        raise ModelConfigError(f"model '{name}': {path} is not a folder")
    base = path.parent / PREDICTOR_FILE if version is not None and path.name == str(version) else None
    try:
        settings: PredictorSettings = read_settings(path / PREDICTOR_FILE, name, base=base, overrides=overrides)
    except ModelSettingsError as exc:
        raise ModelConfigError(str(exc)) from None
    pipeline = _pipeline_folder(path)
    hf_config = {} if pipeline else _read_hf_config(path, name)
    architecture = (hf_config.get("architectures") or [""])[0]
    task = _pipeline_task(name, path, settings, tasks) if pipeline else settings.task or infer_task(architecture, tasks)
    if task is None:
        raise ModelConfigError(
            f"model '{name}': cannot infer the task from architecture '{architecture}' in "
            f"{path / CONFIG_FILE}; set 'task' in {PREDICTOR_FILE} (one of {sorted(tasks)})"
        )
    if task not in tasks:
        raise ModelConfigError(
            f"model '{name}': unknown task '{task}' in {path / PREDICTOR_FILE}; one of {sorted(tasks)}"
        )
    labels = _labels(hf_config)
    if settings.labels is not None:
        if labels and len(settings.labels) != len(labels):
            raise ModelConfigError(
                f"model '{name}': labels in {path / PREDICTOR_FILE} name {len(settings.labels)} classes, but "
                f"{path / CONFIG_FILE} has {len(labels)} ({list(labels)})"
            )
        labels = tuple(settings.labels)
    if tasks[task].needs_labels and not labels and not pipeline:
        raise ModelConfigError(f"model '{name}': {path / CONFIG_FILE} has no id2label for task {task}")
    if backends is not None and settings.backend not in ("auto", *backends):
        raise ModelConfigError(
            f"model '{name}': backend '{settings.backend}' in {path / PREDICTOR_FILE} must be one of {['auto', *backends]}"
        )
    if settings.onnx_file and not (path / settings.onnx_file).is_file():
        raise ModelConfigError(f"model '{name}': onnx_file {path / settings.onnx_file} does not exist")
    max_length = settings.max_length or _max_length(path, hf_config)
    config = ModelConfig(
        name=name,
        path=path,
        task=task,
        backend=settings.backend,
        version=str(version) if version is not None else str(settings.version),
        description=settings.description,
        batch_size=settings.batch_size or 8,
        max_batch=settings.max_batch or 1024,
        max_length=max_length,
        pooling=settings.pooling or _pooling(path),
        normalize=settings.normalize,
        onnx_file=settings.onnx_file,
        workers=settings.workers,
        labels=labels if tasks[task].needs_labels else (),
        architecture=architecture,
        source=settings.source,
        license=settings.license,
        metrics=dict(settings.metrics),
        deploy=settings.deploy,
        version_policy=settings.version_policy,
        max_batch_tokens=settings.max_batch_tokens,
        max_queue_texts=settings.max_queue_texts,
        timeout_ms=settings.timeout_ms,
        cache=settings.cache,
        max_body_bytes=settings.max_body_bytes or DEFAULT_MAX_BODY_BYTES,
        max_text_chars=settings.max_text_chars,
        personal_data=settings.personal_data,
        prediction_log=settings.prediction_log,
        matryoshka_dimensions=tuple(settings.matryoshka_dimensions or ()),
        preprocess=settings.preprocess,
        training=settings.training,
        text_pipeline=pipeline,
        features={} if pipeline else tokenizer_features(path, max_length),
    )
    if complete is not None:
        config = complete(config)
    if tasks[task].needs_labels and not config.labels:
        if complete is None:  # a caller below the backends layer: nobody read the skops file
            raise ModelConfigError(
                f"model '{name}': {path} holds a scikit-learn pipeline, whose labels only the backends read; "
                "load it with predictors.backends.load_model_config"
            )
        raise ModelConfigError(
            f"model '{name}': no labels for task {task}: the pipeline in {path} records no classes_; "
            f"set labels in {path / PREDICTOR_FILE}"
        )
    return config


def is_model_folder(path: Path) -> bool:
    return path.is_dir() and not path.name.startswith(".") and holds_a_model(path)


def remote_source(path: Path) -> str | None:
    """The storage URI a model folder's files come from: its predictor.yaml's `storage_uri` when the
    folder holds no model files of its own (no config.json, skops or pickle file), else None. A
    predictor.yaml that cannot be read is reported where the folder is loaded, not here."""
    if not path.is_dir() or not (path / PREDICTOR_FILE).is_file():
        return None
    if (path / CONFIG_FILE).exists() or any(path.glob(f"*{SKOPS_SUFFIX}")) or pickle_files(path):
        return None
    try:
        return read_settings(path / PREDICTOR_FILE, path.name).storage_uri
    except ModelSettingsError:
        return None


def remote_models(models_dir: Path | str) -> dict[str, str]:
    """Model folders under models_dir whose files are fetched from a storage URI when loaded: name -> URI."""
    models_dir = Path(models_dir)
    found = {entry.name: remote_source(entry) for entry in sorted(models_dir.iterdir())} if models_dir.is_dir() else {}
    return {name: uri for name, uri in found.items() if uri}


def discover_models(
    models_dir: Path | str, *, tasks: Mapping[str, TaskTraits], backends: Sequence[str] | None = None,
    complete: Callable[[ModelConfig], ModelConfig] | None = None,
) -> tuple[list[ModelConfig], dict[str, str]]:
    """Every model folder under models_dir: the configs that load, and an error per folder that doesn't.

    A folder counts as a model when it holds a config.json, a predictor.yaml, a skops file or a
    pickle (reported, never loaded); one broken folder does not stop the others from being served.
    A folder holding only a predictor.yaml with a `storage_uri` is not read here: its files are
    fetched when it is loaded (remote_models).
    """
    models_dir = Path(models_dir)
    if not models_dir.is_dir():
        raise FileNotFoundError(f"models folder {models_dir} does not exist")
    configs: list[ModelConfig] = []
    errors: dict[str, str] = {}
    for entry in sorted(models_dir.iterdir()):
        if not is_model_folder(entry) or remote_source(entry):  # fetched when loaded: see remote_models
            continue
        try:
            configs.append(load_model_config(entry, tasks=tasks, backends=backends, complete=complete))
        except ModelConfigError as exc:
            errors[entry.name] = str(exc)
    return configs, errors
