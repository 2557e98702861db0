"""The server's settings from the environment (`PREDICTORS_*`), as one typed object.

Every variable the server reads is a field here, with its default and what a valid value is; a bad
value is one error that names the variable, raised where the setting is first needed (the server's
start, a model's load), never at import. The manifests set some of these (docs/deploy.md).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

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

    @field_validator("pin_cpus", "device", "adaptive_threads", mode="before")
    @classmethod
    def _lower(cls, value: object) -> object:
        return value.strip().lower() if isinstance(value, str) else value


def _describe(error: ValidationError) -> str:
    problems = []
    for item in error.errors(include_url=False):
        field = str(item["loc"][0]) if item["loc"] else ""
        described = ServerEnvironment.model_fields[field].description if field in ServerEnvironment.model_fields else ""
        value = item.get("input")
        problems.append(f"{PREFIX}{field.upper()}={value!r} is not valid ({described}): {item['msg']}")
    return "; ".join(problems)


def server_environment() -> ServerEnvironment:
    """The settings as the environment gives them now; raises EnvironmentSettingError naming the variable."""
    try:
        return ServerEnvironment()
    except ValidationError as exc:
        raise EnvironmentSettingError(_describe(exc)) from None
