"""`predictor.yaml` as one pydantic model: every key a model folder may set, checked strictly.

An unknown key is an error (a typo such as `batchsize` must not be silently ignored), and every
error names the model, the file and the key. Each field's `description` says what a valid value
is; the error message is built from it.
"""

from __future__ import annotations

import datetime
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    AfterValidator, BaseModel, ConfigDict, Field, StrictBool, StrictFloat, StrictInt, StrictStr, ValidationError, model_validator,
)

from .storage_uri import StorageUriError, parse_storage_uri

PositiveInt = Annotated[StrictInt, Field(ge=1, description="a positive integer")]
NonNegativeInt = Annotated[StrictInt, Field(ge=0, description="a non-negative integer")]
PositiveNumber = Annotated[StrictInt | StrictFloat, Field(gt=0, description="a positive number")]
Text = Annotated[StrictStr, Field(min_length=1, description="a non-empty string")]
Quantity = Annotated[
    StrictStr,
    Field(pattern=r"^\d+(\.\d+)?(Ki|Mi|Gi|Ti|k|M|G|T)?$", description='a quantity string such as "1536Mi"'),
]

# A REST body's default limit when predictor.yaml sets no max_body_bytes: the 8 MiB kserve's gRPC
# server allows a message (MAX_GRPC_MESSAGE_LENGTH), so both transports refuse the same sizes. A full
# request of 1024 texts of 512 tokens is about 2 MB of JSON.
DEFAULT_MAX_BODY_BYTES = 8 * 1024 * 1024
# Characters of a text kept per token of max_length when predictor.yaml sets no max_text_chars. The
# demo tokenizers' longest vocabulary piece is 18 characters and prose averages about 3 per token; a
# text longer than max_length x 32 characters is cut before tokenizing and reported as truncated.
CHARS_PER_TOKEN = 32
POOLING_CHOICES = ("mean", "cls", "max")


def _storage_uri(value: str) -> str:
    try:
        return parse_storage_uri(value).text
    except StorageUriError as exc:
        raise ValueError(str(exc)) from None


StorageUriText = Annotated[
    StrictStr,
    AfterValidator(_storage_uri),
    Field(description="a storage URI such as s3://bucket/models/name (s3, gs, https, http, pvc or file)"),
]


class ModelSettingsError(ValueError):
    """A predictor.yaml that cannot be used; the message names the model, the file and the key."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


ShareOfRequests = Annotated[StrictInt | StrictFloat, Field(ge=0, le=1, description="a share of requests from 0 to 1")]
LOG_INPUT_CHOICES = ("text", "hash", "none")


class KServeLoggerSection(_Strict):
    """`deploy.logger`: KServe's own payload logger (the InferenceService's `spec.predictor.logger`),
    which sends each request and/or response as a CloudEvent to `url`."""

    mode: Annotated[Literal["all", "request", "response"], Field(description="all, request or response")] = "all"
    url: Annotated[StrictStr, Field(pattern=r"^https?://\S+$", description="an http:// or https:// URL")]


class DeploySection(_Strict):
    """`deploy:` Kubernetes sizing. startup_seconds and peak_rss_mib are measured by
    `tools/measure_deploy.py --write`; the other keys override the defaults in predictors/deploy/sizing.py."""

    startup_seconds: PositiveNumber | None = None
    peak_rss_mib: PositiveNumber | None = None
    measured: Text | None = None
    cpu: PositiveInt | None = None
    memory_request: Quantity | None = None
    memory_limit: Quantity | None = None
    startup_budget_seconds: NonNegativeInt | None = None
    min_replicas: NonNegativeInt | None = None
    max_replicas: NonNegativeInt | None = None
    scale_metric: Annotated[Literal["cpu", "memory"], Field(description="cpu or memory")] | None = None
    scale_target: NonNegativeInt | None = None
    storage_uri: Text | None = None
    storage_prefix: Text | None = None
    termination_grace_seconds: NonNegativeInt | None = None
    p99_budget_seconds: PositiveNumber | None = None  # the latency alert's threshold for this model
    # The browsable API (/docs, /redoc) in the pod (--enable_docs_url); off unless set.
    api_docs: Annotated[StrictBool, Field(description="true or false")] | None = None
    logger: KServeLoggerSection | None = None
    # The rendered InferenceService turns the repository's load/unload routes off unless this says
    # read-write (a load from a URI makes the pod fetch with its credentials: docs/deploy.md).
    repository_api: Annotated[Literal["read-only", "read-write"], Field(description="read-only or read-write")] | None = None

    def overrides(self) -> dict[str, Any]:
        """The keys the file sets, as plain values."""
        return self.model_dump(exclude_none=True)


class PredictionLogSection(_Strict):
    """`prediction_log:` sampled JSON lines of predictions (predictors/serving/observability/
    prediction_log.py). A key absent here takes the server-wide PREDICTORS_PREDICTION_LOG_* value."""

    sample: ShareOfRequests | None = None
    path: Text | None = None
    max_mb: PositiveNumber | None = None
    backups: PositiveInt | None = None  # rotated files kept: path.1 ... path.<backups>
    # How each input text is written; by default a keyed hash where the inputs are personal data.
    inputs: Annotated[Literal[LOG_INPUT_CHOICES], Field(description="text, hash or none")] | None = None


class SpecificVersions(_Strict):
    specific: Annotated[list[PositiveInt], Field(min_length=1, description="a list of version numbers")]


VersionPolicy = Annotated[
    Literal["latest", "all"] | SpecificVersions,
    Field(description='latest, all, or {specific: [versions]}'),
]


class CacheSection(_Strict):
    """`cache:` the response cache (predictors.serving.cache). Absent keys take the serving
    defaults: on for classification and embedding, off for token_classification (PII texts)."""

    enabled: Annotated[StrictBool, Field(description="true or false")] | None = None
    max_mb: PositiveNumber | None = None
    ttl_seconds: PositiveNumber | None = None
    url: Annotated[StrictStr, Field(pattern=r"^rediss?://", description="a redis:// or rediss:// URL")] | None = None


Token = Annotated[StrictStr, Field(pattern=r"^\S+$", description="a token without spaces, such as _url_")]
UNICODE_FORMS = ("NFC", "NFKC", "NFD", "NFKD")


class PreprocessSection(_Strict):
    """`preprocess:` the model's text cleaning (predictors/model/cleaning.py), applied in training, at
    inference and in the export gate. Every step is off unless set here."""

    unicode_normalization: Annotated[Literal[UNICODE_FORMS], Field(description="NFC, NFKC, NFD or NFKD")] | None = None
    replace_urls: Token | None = None
    replace_emails: Token | None = None
    replace_numbers: Token | None = None
    lowercase: Annotated[StrictBool, Field(description="true or false")] = False
    remove_punctuation: Annotated[StrictBool, Field(description="true or false")] = False
    collapse_whitespace: Annotated[StrictBool, Field(description="true or false")] = False

    @model_validator(mode="after")
    def _tokens_survive_punctuation_removal(self) -> "PreprocessSection":
        if self.remove_punctuation:
            for key in ("replace_urls", "replace_emails", "replace_numbers"):
                token = getattr(self, key)
                if token is not None and not all(c.isalnum() or c == "_" for c in token):
                    raise ValueError(
                        f"{key} {token!r} would lose its punctuation to remove_punctuation; "
                        f"use word characters only, such as _{key.removeprefix('replace_').rstrip('s')}_"
                    )
        return self


class TrainingSection(_Strict):
    """`training:` how the model was trained, shown in /v2/models/<name>/config and `list`. The demo
    build records the same in build_info.json, which takes precedence."""

    date: Annotated[datetime.date, Field(description="a date such as 2026-12-07")] | None = None
    data: Text | None = None
    train_size: NonNegativeInt | None = None
    heldout_size: NonNegativeInt | None = None


class PredictorSettings(_Strict):
    """Everything `predictor.yaml` may hold; absent keys are inferred from the model folder."""

    version: Annotated[StrictStr | StrictInt, Field(description="a version string or number")] = "1"
    description: StrictStr = ""
    task: Annotated[StrictStr, Field(description="a task name")] | None = None
    backend: Annotated[
        StrictStr, Field(pattern=r"^[a-z][a-z0-9_]*$", description="auto or the name of a registered backend")
    ] = "auto"
    batch_size: PositiveInt | None = None
    max_batch: PositiveInt | None = None
    max_length: PositiveInt | None = None
    pooling: Annotated[Literal[POOLING_CHOICES], Field(description="mean, cls or max")] | None = None
    normalize: Annotated[StrictBool, Field(description="true or false")] = True
    onnx_file: Text | None = None
    workers: PositiveInt | None = None
    source: StrictStr = ""
    license: StrictStr = ""
    metrics: dict[str, Any] = Field(default_factory=dict)
    deploy: DeploySection = Field(default_factory=DeploySection)
    max_batch_tokens: PositiveInt | None = None
    max_queue_texts: PositiveInt | None = None
    timeout_ms: PositiveInt | None = None
    cache: CacheSection = Field(default_factory=CacheSection)
    # Which numbered version sub-folders are served (Triton's version_policy); only at models/<name>/.
    version_policy: VersionPolicy = "latest"
    # Request size limits, enforced before parsing and tokenizing (defaults: the constants above).
    max_body_bytes: PositiveInt | None = None
    max_text_chars: PositiveInt | None = None
    # Whether the texts sent to this model are personal data (default: what its task head says):
    # then its answers are not cached unless `cache` says so, and prediction logs hash the texts.
    personal_data: Annotated[StrictBool, Field(description="true or false")] | None = None
    prediction_log: PredictionLogSection = Field(default_factory=PredictionLogSection)
    # Embedding models trained with Matryoshka representation learning: the shorter sizes their
    # vectors keep their meaning at (the OpenAI API's `dimensions`); absent, vectors are not cut.
    matryoshka_dimensions: Annotated[list[PositiveInt], Field(min_length=1, description="a list of vector sizes")] | None = None
    # Many models in one pod (docs/multi-model.md): when the model is brought into memory, when an
    # on_demand model is freed again, and where the model's files come from when this folder holds
    # only this file. (`deploy.storage_uri` is something else: where KServe's storage initializer
    # finds the folder for the rendered manifests.)
    loading: Annotated[Literal["startup", "lazy", "on_demand"], Field(description="startup, lazy or on_demand")] | None = None
    idle_unload_seconds: PositiveNumber | None = None
    storage_uri: StorageUriText | None = None

    @model_validator(mode="after")
    def _idle_unload_needs_on_demand(self) -> "PredictorSettings":
        if self.idle_unload_seconds is not None and self.loading in ("startup", "lazy"):
            raise ValueError(
                f"idle_unload_seconds frees an on_demand model; this model's loading is {self.loading} "
                "(set loading: on_demand, or remove idle_unload_seconds)"
            )
        return self
    # Text cleaning before the model (off by default) and training metadata.
    preprocess: PreprocessSection = Field(default_factory=PreprocessSection)
    training: TrainingSection = Field(default_factory=TrainingSection)
    # Class names in the order of the model's outputs: a scikit-learn pipeline's classes_ renamed, or
    # the labels of a folder that records none.
    labels: Annotated[list[Text], Field(min_length=1, description="a list of class names")] | None = None


def _field_description(model: type[BaseModel], loc: tuple[Any, ...]) -> str | None:
    """The `description` of the field at `loc` (following nested models)."""
    current: Any = model
    description = None
    for part in loc:
        fields = getattr(current, "model_fields", None)
        if not fields or part not in fields:
            break
        info = fields[part]
        description = info.description or next(
            (m.description for m in info.metadata if getattr(m, "description", None)), None
        )
        if description is None:  # Annotated[...] | None keeps the description in the union's member
            for arg in getattr(info.annotation, "__args__", ()):
                for meta in getattr(arg, "__metadata__", ()):
                    description = description or getattr(meta, "description", None)
        current = info.annotation if isinstance(info.annotation, type) else None
    return description


def _field_path(model: type[BaseModel], loc: tuple[Any, ...]) -> list[str]:
    """The field names along `loc`, leaving out pydantic's union-member and validator tags."""
    path: list[str] = []
    current: Any = model
    for part in loc:
        fields = getattr(current, "model_fields", None)
        if not fields or part not in fields:
            if isinstance(part, int):
                path.append(str(part))
            continue
        path.append(str(part))
        annotation = fields[part].annotation
        current = annotation if isinstance(annotation, type) else None
    return path


def describe_errors(error: ValidationError, model: type[BaseModel], name: str, source: Path) -> str:
    """One message per problem: unknown keys listed with the known ones; bad values with what is wanted."""
    unknown: dict[str, list[str]] = {}
    problems: list[str] = []
    for item in error.errors():
        loc = tuple(item["loc"])
        if item["type"] == "extra_forbidden":
            section = ".".join(str(p) for p in loc[:-1])
            unknown.setdefault(section, []).append(str(loc[-1]))
            continue
        key = ".".join(_field_path(model, loc))
        if item["type"] == "value_error":  # a validator's own message says what is wrong (a URI, two keys)
            reason = str(item.get("ctx", {}).get("error", item["msg"].removeprefix("Value error, ")))
            problem = f"{key}: {reason}" if key else reason
        else:
            wanted = _field_description(model, loc) or item["msg"].lower()
            problem = f"{key} must be {wanted}, got {item.get('input')!r}"
        if problem not in problems:  # a union reports once per member
            problems.append(problem)
    for section, keys in unknown.items():
        owner: Any = model
        for part in section.split(".") if section else ():
            owner = owner.model_fields[part].annotation
        where = f"the {section} section of {source}" if section else str(source)
        problems.insert(0, f"unknown key(s) {sorted(keys)} in {where}; known keys: {sorted(owner.model_fields)}")
    return f"model '{name}': " + "; ".join(problems) + (f" ({source})" if not unknown else "")


def _read_mapping(path: Path, name: str) -> dict[str, Any]:
    if not path.is_file():
        return {}
    try:
        # libyaml's loader where PyYAML has it: the pure-Python one takes ~7 ms a file, which a server
        # registering hundreds of lazy models at start would wait for.
        data = yaml.load(path.read_text(encoding="utf-8"), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    except yaml.YAMLError as exc:
        raise ModelSettingsError(f"model '{name}': {path} is not valid YAML: {exc}") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ModelSettingsError(f"model '{name}': {path} must be a mapping of keys to values")
    return data


def read_settings(path: Path, name: str, base: Path | None = None, overrides: Path | None = None) -> PredictorSettings:
    """`predictor.yaml` at `path` (absent: all defaults). With `base` (the model's own predictor.yaml
    when `path` is a version sub-folder's), the version's keys override the model's. With
    `overrides` (the served folder's predictor.yaml of a model fetched from a storage URI), its keys
    override both."""
    data = {
        **(_read_mapping(base, name) if base else {}),
        **_read_mapping(path, name),
        **(_read_mapping(overrides, name) if overrides else {}),
    }
    try:
        return PredictorSettings.model_validate(data)
    except ValidationError as exc:
        raise ModelSettingsError(describe_errors(exc, PredictorSettings, name, path)) from None
