"""The server's settings from the environment (`PREDICTORS_*`), as one typed object.

Every variable the server reads is a field here, with its default and what a valid value is; a bad
value is one error that names the variable, raised where the setting is first needed (the server's
start, a model's load), never at import. The manifests set some of these (docs/deploy.md).
"""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

PREFIX = "PREDICTORS_"


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

    @field_validator("pin_cpus", "device", "adaptive_threads", mode="before")
    @classmethod
    def _lower(cls, value: object) -> object:
        return value.strip().lower() if isinstance(value, str) else value

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
