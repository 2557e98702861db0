"""Sizing: the defaults and the measured numbers of a model turned into replicas, resources,
probes and the shutdown budget. The rules are here, in one place:

- startupProbe budget (periodSeconds x failureThreshold) = max(STARTUP_MIN_SECONDS,
  3 x measured startup + 30 s): a cold node with a slower CPU still fits.
- memory request = 1.25 x measured peak RSS, limit = max(1.5 x peak, peak + 256 Mi), in 64 Mi steps.
- cpu request = limit (a whole number of CPUs, default 2). The server runs one inference worker per
  CPU (PREDICTORS_WORKERS, from the cpu limit through the downward API) and each worker's backend
  uses one intra-op thread, so the pod's compute threads equal its cpu limit.
- drain = terminationGracePeriodSeconds - the preStop sleep: SIGTERM arrives after preStop, and
  kubelet kills the container when the grace period (counted from the start of termination) ends.
- many models in one pod (the multi-model example): memory request = limit = the sum of the
  RESIDENT_MODELS largest measured peak RSS (each is one model plus the server, so the second
  server's share is the margin and the load peak's room); the server's budget is that limit less
  its own measured share, and the least recently used idle models are evicted to stay inside it.

The numbers come from the model's `predictor.yaml`: batch_size / max_batch / task from the model
config, and from its `deploy:` section (`DeploySection`, checked when the folder is read) the values
measured by `tools/measure_deploy.py` (`startup_seconds`, `peak_rss_mib`) plus optional overrides.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from ..model import ModelConfig, ModelConfigError
from .runtime import DEFAULT_DRAIN_SECONDS, PRESTOP_SECONDS

STARTUP_PERIOD_SECONDS = 5
STARTUP_MIN_SECONDS = 60
STARTUP_FACTOR = 3.0
STARTUP_EXTRA_SECONDS = 30
MEMORY_REQUEST_FACTOR = 1.25
MEMORY_LIMIT_FACTOR = 1.5
MEMORY_LIMIT_MIN_HEADROOM_MIB = 256
MEMORY_STEP_MIB = 64

# Defaults for every model; a model's predictor.yaml `deploy:` section may override each key.
DEFAULTS: dict[str, Any] = {
    "cpu": 2,
    "min_replicas": 1,
    "max_replicas": 3,
    "scale_metric": "cpu",
    "scale_target": 70,
    "storage_prefix": "pvc://text-models",
    "termination_grace_seconds": PRESTOP_SECONDS + DEFAULT_DRAIN_SECONDS + 25,
}
MEASURED_KEYS = ("startup_seconds", "peak_rss_mib")
#: Models the multi-model example's pod holds in memory at once (the largest ones); the rest load on
#: their first request and the least recently used idle one is evicted to make room.
RESIDENT_MODELS = 2


class DeployConfigError(ModelConfigError):
    """A `deploy:` section that cannot be rendered; the message names the model and the key."""


@dataclass(frozen=True)
class DeploySettings:
    name: str
    task: str
    version: str
    batch_size: int
    max_batch: int
    max_length: int | None  # None: the model takes texts, not max_length tokens (a scikit-learn pipeline)
    startup_seconds: float
    peak_rss_mib: float
    cpu: int
    memory_request: str
    memory_limit: str
    startup_budget_seconds: int
    min_replicas: int
    max_replicas: int
    scale_metric: str
    scale_target: int
    storage_uri: str
    termination_grace_seconds: int
    repository_api: str = "read-only"

    @property
    def drain_seconds(self) -> int:
        """How long the server may finish in-flight requests after SIGTERM."""
        return self.termination_grace_seconds - PRESTOP_SECONDS


def _ceil_to(value: float, step: int) -> int:
    return int(math.ceil(value / step) * step)


def memory_for(peak_rss_mib: float) -> tuple[str, str]:
    """(request, limit) for a measured peak RSS, as Kubernetes quantity strings."""
    request = _ceil_to(peak_rss_mib * MEMORY_REQUEST_FACTOR, MEMORY_STEP_MIB)
    limit = _ceil_to(max(peak_rss_mib * MEMORY_LIMIT_FACTOR, peak_rss_mib + MEMORY_LIMIT_MIN_HEADROOM_MIB), MEMORY_STEP_MIB)
    return f"{request}Mi", f"{limit}Mi"


def startup_budget_for(startup_seconds: float) -> int:
    """Seconds the startupProbe allows: the measured start-to-ready time plus a generous margin."""
    budget = max(STARTUP_MIN_SECONDS, STARTUP_FACTOR * startup_seconds + STARTUP_EXTRA_SECONDS)
    return _ceil_to(budget, STARTUP_PERIOD_SECONDS)


def cpu_for(config: ModelConfig) -> int:
    """Whole CPUs of the model's request and limit."""
    return int(config.deploy.cpu or DEFAULTS["cpu"])


def deploy_settings(config: ModelConfig) -> DeploySettings:
    """The resolved deployment numbers of one model: defaults, then its `deploy:` section.

    Key names and value types are checked when the folder is read (`DeploySection`); here only
    what needs several keys at once, and the measurements the sizing cannot do without.
    """
    source = config.path / "predictor.yaml"
    values = {**DEFAULTS, **config.deploy.overrides()}
    missing = [key for key in MEASURED_KEYS if key not in values]
    if missing:
        raise DeployConfigError(
            f"model '{config.name}': deploy.{missing[0]} is missing in {source}; measure it with "
            f"`python tools/measure_deploy.py --only {config.name} --write`"
        )
    if values["min_replicas"] > values["max_replicas"]:
        raise DeployConfigError(
            f"model '{config.name}': deploy.min_replicas ({values['min_replicas']}) > max_replicas "
            f"({values['max_replicas']}) in {source}"
        )
    if values["scale_metric"] == "cpu" and not 1 <= values["scale_target"] <= 100:
        raise DeployConfigError(
            f"model '{config.name}': deploy.scale_target in {source} must be a cpu utilization percentage "
            f"1..100, got {values['scale_target']}"
        )
    if values["termination_grace_seconds"] <= PRESTOP_SECONDS:
        raise DeployConfigError(
            f"model '{config.name}': deploy.termination_grace_seconds in {source} must exceed the "
            f"{PRESTOP_SECONDS} s preStop sleep, got {values['termination_grace_seconds']}"
        )
    startup = float(values["startup_seconds"])
    peak = float(values["peak_rss_mib"])
    request, limit = memory_for(peak)
    return DeploySettings(
        name=config.name,
        task=config.task,
        version=str(config.version),
        batch_size=config.batch_size,
        max_batch=config.max_batch,
        max_length=None if config.text_pipeline else config.max_length,
        startup_seconds=startup,
        peak_rss_mib=peak,
        cpu=int(values["cpu"]),
        memory_request=values.get("memory_request", request),
        memory_limit=values.get("memory_limit", limit),
        startup_budget_seconds=int(values.get("startup_budget_seconds") or startup_budget_for(startup)),
        min_replicas=int(values["min_replicas"]),
        max_replicas=int(values["max_replicas"]),
        scale_metric=values["scale_metric"],
        scale_target=int(values["scale_target"]),
        storage_uri=values.get("storage_uri") or f"{values['storage_prefix'].rstrip('/')}/{config.name}",
        termination_grace_seconds=int(values["termination_grace_seconds"]),
        repository_api=values.get("repository_api") or "read-only",
    )


def storage_prefix(configs: list[ModelConfig]) -> str:
    """The one storageUri prefix every model folder sits under (the multi-model example's storageUri)."""
    prefixes = {str(c.deploy.storage_prefix or DEFAULTS["storage_prefix"]).rstrip("/") for c in configs}
    if len(prefixes) != 1:
        raise DeployConfigError(f"the models sit under different deploy.storage_prefix values {sorted(prefixes)}; "
                                "one pod serving many models reads them from one prefix")
    return prefixes.pop()


def multi_model_memory(settings: list[DeploySettings], resident: int = RESIDENT_MODELS) -> str:
    """The multi-model pod's memory request and limit: room for the `resident` largest models."""
    largest = sorted((s.peak_rss_mib for s in settings), reverse=True)[:resident]
    return f"{_ceil_to(sum(largest), MEMORY_STEP_MIB)}Mi"
