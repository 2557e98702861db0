"""How many CPUs this process may use: the thread and worker counts of every runtime follow it."""

from __future__ import annotations

import os
from pathlib import Path

from ..model.environment import server_environment


def allowed_cpus() -> list[int] | None:
    """The CPUs this process may run on (its affinity mask), or None where the OS doesn't say."""
    return sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None


def cpu_limit() -> int:
    """CPUs available to this process: its affinity, capped by a cgroup CPU quota (v2 cpu.max, v1
    cpu.cfs_quota_us)."""
    allowed = allowed_cpus()
    cpus = len(allowed) if allowed else (os.cpu_count() or 1)
    quota = cgroup_cpu_quota()
    if quota is not None:
        cpus = min(cpus, max(1, int(quota)))
    return max(1, cpus)


def cgroup_cpu_quota(root: Path = Path("/sys/fs/cgroup")) -> float | None:
    """CPUs' worth of time per period the cgroup grants, or None when unlimited or unknown."""
    try:
        quota, period = (root / "cpu.max").read_text().split()
        return None if quota == "max" else int(quota) / int(period)
    except (OSError, ValueError):
        pass
    try:  # cgroup v1
        quota_us = int((root / "cpu" / "cpu.cfs_quota_us").read_text())
        period_us = int((root / "cpu" / "cpu.cfs_period_us").read_text())
        return None if quota_us <= 0 else quota_us / period_us
    except (OSError, ValueError):
        return None


def cpus_to_pin(slots: int) -> tuple[list[int] | None, str]:
    """The CPUs to pin compute slots to, or None, with the reason either way.

    Pinned only when the process owns exactly as many CPUs as it has slots: its affinity mask holds
    `slots` CPUs and no quota or PREDICTORS_WORKERS says it may use fewer (a pod with exclusive
    cores under the kubelet's static CPU manager, a VM or machine of its own). On a shared node the
    mask is wider than the limit and a pinned thread could not leave a CPU another pod keeps busy.
    PREDICTORS_PIN_CPUS=off turns it off."""
    environment = server_environment()
    setting = environment.pin_cpus
    allowed = allowed_cpus()
    if setting == "off":
        return None, "off (PREDICTORS_PIN_CPUS=off)"
    if not allowed:
        return None, "off: this OS does not report the process's CPUs"
    if slots < 2:
        return None, "off: one compute slot"
    workers = environment.workers
    if len(allowed) != slots or (workers is not None and workers != slots):
        return None, (
            f"off: the process may run on {len(allowed)} CPUs and is limited to {slots}"
            f"{f' (PREDICTORS_WORKERS={workers})' if workers else ''}, so the CPUs are not its own"
        )
    return allowed, f"each compute slot pinned to one of the process's own {slots} CPUs"


def wide_run_helper_cpus(threads: int) -> list[int] | None:
    """The CPUs for the helper threads of a run on `threads` intra-op threads, or None to leave them
    unpinned. Where compute slots are pinned (`cpus_to_pin`) and the run takes every CPU, its own
    thread runs on the first CPU (ComputeSlots.widen) and one helper on each of the others. Why: an
    unpinned helper spinning between operators at times shared the run's CPU while the other idled
    (22 ms against 12 for a lone request, docs/performance.md); pinned apart, the helpers may spin,
    which saves a wake-up per operator."""
    if threads < 2:
        return None
    cpus, _ = cpus_to_pin(cpu_limit())
    return cpus[1:] if cpus is not None and len(cpus) == threads else None


def default_workers() -> int:
    """Parallel inference workers: PREDICTORS_WORKERS when set (the manifests set it from the pod's
    cpu limit, which cgroup v1 nodes don't expose as cpu.max), else one per CPU this process may use."""
    configured = server_environment().workers
    return configured if configured is not None else cpu_limit()
