"""Giving freed memory back to the operating system, so an unload or a large body shows in the pod's RSS."""

from __future__ import annotations

import ctypes
import gc


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
