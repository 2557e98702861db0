"""How many CPUs this process may use: the thread and worker counts of every runtime follow it."""

from __future__ import annotations

import os
from pathlib import Path


class CpuSettingError(ValueError):
    pass


def cpu_limit() -> int:
    """CPUs available to this process: its affinity, capped by a cgroup v2 cpu.max quota."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()
        if quota != "max":
            cpus = min(cpus, max(1, int(int(quota) // int(period))))
    except (OSError, ValueError):
        pass
    return max(1, cpus)


def default_workers() -> int:
    """Parallel inference workers: PREDICTORS_WORKERS when set (the manifests set it from the pod's
    cpu limit, which cgroup v1 nodes don't expose as cpu.max), else one per CPU this process may use."""
    configured = os.environ.get("PREDICTORS_WORKERS", "").strip()
    if configured:
        try:
            return max(1, int(configured))
        except ValueError:
            raise CpuSettingError(f"PREDICTORS_WORKERS must be a whole number, got {configured!r}") from None
    return cpu_limit()
