"""The server's settings from the environment (`PREDICTORS_*`), as one typed object.

Every variable the server reads is a field here, with its default and what a valid value is; a bad
value is one error that names the variable, raised where the setting is first needed (the server's
start, a model's load), never at import. The manifests set some of these (docs/deploy.md).
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

PREFIX = "PREDICTORS_"
#: How a model is brought into memory (predictor.yaml `loading`, PREDICTORS_LOADING for the rest).
LOADING_STRATEGIES = ("startup", "lazy", "on_demand")
Loading = Literal["startup", "lazy", "on_demand"]
#: PREDICTORS_REPOSITORY_API: whether the repository's write routes (load, unload) answer.
REPOSITORY_API_MODES = ("read-write", "read-only")


class EnvironmentSettingError(ValueError):
    """A PREDICTORS_* variable with a value the server cannot use; the message names it."""


class ServerEnvironment(BaseSettings):
    """`PREDICTORS_<FIELD>` for each field."""

    model_config = SettingsConfigDict(env_prefix=PREFIX, extra="ignore", frozen=True, env_ignore_empty=True)

    drain_seconds: int = Field(30, ge=1, description="seconds a shutdown or unload waits for accepted requests")
    header_timeout: float = Field(10.0, ge=0.1, description="seconds from connection to complete request headers")
    body_timeout: float = Field(30.0, ge=0.1, description="seconds between two chunks of a request body")
    max_header_bytes: int = Field(16 * 1024, ge=1024, description="bytes of request line and headers")
    drift_window: int = Field(1000, ge=1, description="texts in each model's drift window")
    workers: int | None = Field(None, ge=1, description="inference workers per model (default: one per CPU)")
    pin_cpus: Literal["auto", "off"] = Field("auto", description="pin compute slots to CPUs the process owns")
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="where models run")
    adaptive_threads: Literal["auto", "off"] = Field(
        "auto", description="auto: a batch with nothing queued behind it runs on every free CPU; off: always one"
    )
    # Browsers on these origins may call the API (CORS); `serve --cors-allowed-origins` sets it too.
    cors_allowed_origins: Annotated[tuple[str, ...], NoDecode] = Field(
        (), description="comma-separated origins such as https://app.example.com, or *; empty: CORS off")
    # Sampled prediction logs, server-wide; a model's predictor.yaml `prediction_log:` overrides each key.
    prediction_log_sample: float = Field(0.0, ge=0, le=1, description="the share of requests logged, 0 to 1")
    prediction_log_path: str | None = Field(None, min_length=1, description="the JSON-lines file prediction logs go to")
    prediction_log_max_mb: float = Field(100.0, gt=0, description="MB a prediction log file grows to before it is rotated")
    prediction_log_backups: int = Field(3, ge=1, description="rotated prediction log files kept")
    # The key of the hash written instead of personal-data texts; without one, a random key per process.
    prediction_log_key: str | None = Field(None, min_length=16, description="a secret of at least 16 characters")
    # ---- many models in one pod (docs/multi-model.md) ----
    model_memory: int | None = Field(
        None, gt=0, description="the models' memory budget: bytes, or a Kubernetes quantity such as 2Gi "
        "(default: the container's memory limit minus the server's measured share)")
    loading: Loading = Field(
        "startup", description="how a model whose predictor.yaml sets no `loading` is loaded: startup, lazy or on_demand")
    idle_unload_seconds: float = Field(
        300.0, gt=0, description="seconds without requests after which an on_demand model is freed")
    storage_allow: Annotated[tuple[str, ...], NoDecode] = Field(
        (), description="URI prefixes a repository load may fetch from, comma-separated (e.g. s3://models/team-a/); "
        "empty: no URI loads")
    storage_cache: Path | None = Field(
        None, description="a writable folder for models fetched from a storage URI (default: ~/.cache/predictors/storage)")
    storage_timeout: float = Field(1800.0, gt=0, description="seconds one model download may take")
    repository_api: Literal["read-write", "read-only"] = Field(
        "read-write", description="read-only turns the repository's load and unload routes off (403)")

    @field_validator("pin_cpus", "device", "adaptive_threads", "loading", "repository_api", mode="before")
    @classmethod
    def _lower(cls, value: object) -> object:
        if not isinstance(value, str):
            return value
        value = value.strip().lower()
        return "on_demand" if value == "on-demand" else value  # loading, as Kubernetes-style values spell it

    @field_validator("model_memory", mode="before")
    @classmethod
    def _quantity(cls, value: object) -> object:
        """Bytes as the Downward API gives `limits.memory`, or a quantity such as 2Gi or 1.5G."""
        if not isinstance(value, str):
            return value
        from kubernetes.utils import parse_quantity  # the server imports kubernetes already; the model layer need not

        try:
            amount = Decimal(parse_quantity(value.strip()))
        except (ValueError, InvalidOperation, TypeError):
            raise ValueError("not a byte count or a Kubernetes quantity such as 2Gi") from None
        if amount != amount.to_integral_value():
            raise ValueError("a memory quantity is a whole number of bytes")
        return int(amount)

    @field_validator("storage_allow", mode="before")
    @classmethod
    def _prefixes(cls, value: object) -> object:
        if isinstance(value, str):
            value = [part for part in value.replace(",", " ").split() if part]
        for prefix in value if isinstance(value, (list, tuple)) else ():
            if not isinstance(prefix, str) or "://" not in prefix or prefix.startswith("://"):
                raise ValueError(f"{prefix!r} is not a URI prefix such as s3://bucket/models/")
        return tuple(value) if isinstance(value, list) else value

    @field_validator("cors_allowed_origins", mode="before")
    @classmethod
    def _origins(cls, value: object) -> object:
        return parse_origins(value) if isinstance(value, str) else value

    @field_validator("cors_allowed_origins")
    @classmethod
    def _check_origins(cls, origins: tuple[str, ...]) -> tuple[str, ...]:
        for origin in origins:
            if origin != "*" and not ORIGIN.match(origin):
                raise ValueError(f"{origin!r} is not an origin: scheme://host[:port], no path, or *")
        return origins


#: An origin as browsers send it in the Origin header (RFC 6454): scheme, host and optional port.
ORIGIN = re.compile(r"^[a-z][a-z0-9+.-]*://[^/\s?#]+$", re.IGNORECASE)


def parse_origins(value: str) -> tuple[str, ...]:
    """Comma-separated origins, as the flag and the variable take them; a trailing slash is dropped."""
    return tuple(part.strip().rstrip("/") for part in value.split(",") if part.strip())


def _describe(error: ValidationError) -> str:
    problems = []
    for item in error.errors(include_url=False):
        field = str(item["loc"][0]) if item["loc"] else ""
        described = ServerEnvironment.model_fields[field].description if field in ServerEnvironment.model_fields else ""
        value = item.get("input")
        problems.append(f"{PREFIX}{field.upper()}={value!r} is not valid ({described}): {item['msg']}")
    return "; ".join(problems)


def server_environment(**flags: object) -> ServerEnvironment:
    """The settings as the environment gives them now, with `flags` (command-line values, which take
    precedence); raises EnvironmentSettingError naming the variable."""
    try:
        return ServerEnvironment(**flags)
    except ValidationError as exc:
        raise EnvironmentSettingError(_describe(exc)) from None
