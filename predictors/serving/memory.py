"""The process's memory: giving freed memory back to the operating system (so an unload or a large
body shows in the pod's RSS), measuring it (resident now, and the peak of a load), and the
container's memory limit."""

from __future__ import annotations

import ctypes
import gc
import os
import resource
from pathlib import Path

#: cgroup v1 reports "no limit" as a huge number (PAGE_COUNTER_MAX pages); anything above this is none.
UNLIMITED_ABOVE = 1 << 60
_PROC_STATUS = Path("/proc/self/status")
_PROC_STATM = Path("/proc/self/statm")
_CLEAR_REFS = Path("/proc/self/clear_refs")


def trim_heap() -> None:
    """glibc keeps freed memory for reuse; malloc_trim returns it to the OS (a no-op elsewhere)."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def release_memory() -> None:
    """Collect garbage, then give the freed heap pages back."""
    gc.collect()
    trim_heap()


def resident_bytes() -> int | None:
    """The process's resident set size now (Linux /proc; None where it cannot be read)."""
    try:
        pages = int(_PROC_STATM.read_text().split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return pages * os.sysconf("SC_PAGE_SIZE")


def reset_peak() -> bool:
    """Start a new peak-RSS measurement (Linux: writing 5 to clear_refs resets VmHWM); False where
    the peak cannot be reset, so `peak_bytes` then covers the whole life of the process."""
    try:
        _CLEAR_REFS.write_text("5")
    except OSError:
        return False
    return True


def peak_bytes() -> int | None:
    """The highest resident set size since the last `reset_peak` (VmHWM), or since the start."""
    try:
        for line in _PROC_STATUS.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    return peak * 1024 if peak else None


def container_memory_limit(root: Path = Path("/sys/fs/cgroup")) -> int | None:
    """The memory limit of this process's cgroup (v2 memory.max, v1 memory.limit_in_bytes), or None
    when there is none or it cannot be read."""
    for path in (root / "memory.max", root / "memory" / "memory.limit_in_bytes"):
        try:
            text = path.read_text().strip()
        except OSError:
            continue
        if text == "max":
            return None
        try:
            value = int(text)
        except ValueError:
            continue
        return value if 0 < value < UNLIMITED_ABOVE else None
    return None
