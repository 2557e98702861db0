"""Compute slots: how many batches the process runs at once, and on which CPUs.

One slot per CPU the process may use, shared by the workers of every model, so all models together
never run more batches at once than there are CPUs. Where the process owns its CPUs
(`backends.cpus.cpus_to_pin`), each slot is one CPU and the worker holding it runs pinned to it. Why:
on 2 cores with 32 one-text int8 clients, unpinned workers left 0.09-0.12 of a core idle while
requests were queued (the kernel at times queued both workers on one CPU behind the event loop while
the other CPU idled); pinned, 0.04.
"""

from __future__ import annotations

import logging
import os
import threading
from contextlib import contextmanager
from typing import Iterator, Sequence

from ..backends.cpus import cpu_limit, cpus_to_pin

logger = logging.getLogger("kserve.predictors")


class ComputeSlots:
    """`count` slots; with `cpus`, slot i is CPU cpus[i] and its holder runs pinned there."""

    def __init__(self, count: int, cpus: Sequence[int] | None = None, pinning: str = "off") -> None:
        if cpus is not None and len(cpus) != count:
            raise ValueError(f"{count} slots need {count} CPUs, got {list(cpus)}")
        self.count = count
        self.cpus = list(cpus) if cpus is not None else None
        self.pinning = pinning
        self._free: list[int] = list(range(count))
        self._available = threading.Condition()
        self._last_slot = threading.local()  # a worker gets its previous CPU back when it is free

    @contextmanager
    def hold(self) -> Iterator[int]:
        """Wait for a free slot and hold it (the calling thread pinned to its CPU if pinning)."""
        preferred = getattr(self._last_slot, "index", None)
        with self._available:
            while not self._free:
                self._available.wait()
            index = preferred if preferred in self._free else self._free[-1]
            self._free.remove(index)
        try:
            if self.cpus is not None and preferred != index:
                self._pin(index)
            yield index
        finally:
            with self._available:
                self._free.append(index)
                self._available.notify()

    def _pin(self, index: int) -> None:
        try:
            os.sched_setaffinity(0, {self.cpus[index]})  # pid 0: the calling thread only
        except OSError as exc:  # the CPU set changed under us: run unpinned rather than fail a batch
            logger.warning("compute slots: cannot pin to CPU %s (%s); running unpinned", self.cpus[index], exc)
            self.cpus, self.pinning = None, f"off: pinning to CPU failed ({exc})"
            return
        self._last_slot.index = index

    def describe(self) -> dict[str, object]:
        return {"count": self.count, "pinned_cpus": self.cpus, "pinning": self.pinning}


_slots: ComputeSlots | None = None
_slots_lock = threading.Lock()


def compute_slots() -> ComputeSlots:
    """The process-wide slots: one per CPU this process may use, pinned where it owns them."""
    global _slots
    with _slots_lock:
        if _slots is None:
            count = cpu_limit()
            cpus, why = cpus_to_pin(count)
            _slots = ComputeSlots(count, cpus, why)
            logger.info("compute slots: %d; CPU pinning: %s", count, why)
        return _slots
