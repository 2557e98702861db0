"""Compute slots: how many batches the process runs at once, and on which CPUs.

One slot per CPU the process may use, shared by the workers of every model, so all models together
never run more batches at once than there are CPUs. Where the process owns its CPUs
(`backends.cpus.cpus_to_pin`), each slot is one CPU and the worker holding it runs pinned to it. Why:
on 2 cores with 32 one-text int8 clients, unpinned workers left 0.09-0.12 of a core idle while
requests were queued (the kernel at times queued both workers on one CPU behind the event loop while
the other CPU idled); pinned, 0.04-0.06, and 120-126 texts/s against 113-125 unpinned in
alternating runs.

Worker threads run at the lowest CPU priority (nice 19) so the event loop -- probes, admission,
refusals, answers -- never waits behind inference on a CPU it shares with a worker; the workers
still get every cycle the loop leaves. Pinned workers at normal priority held the loop to half a CPU
during a 500-request burst: refusal p50 141-188 ms, probe max 223-350 ms; at nice 19, 59-81 ms and
77-104 ms, as unpinned (49-181 ms and 58-295 ms on this noisy VM).
"""

from __future__ import annotations

import logging
import os
import threading
from contextlib import contextmanager
from typing import Iterator, Sequence

from ...backends.cpus import cpu_limit, cpus_to_pin

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
        self._waiting = 0  # threads waiting in hold() for a slot
        self._runs: dict[int, int] = {}  # slot -> threads of the run holding it (the current split)
        self._last_slot = threading.local()  # a worker gets its previous CPU back when it is free

    @contextmanager
    def hold(self) -> Iterator[int]:
        """Wait for a free slot and hold it (the calling thread pinned to its CPU if pinning)."""
        preferred = getattr(self._last_slot, "index", None)
        with self._available:
            self._waiting += 1
            while not self._free:
                self._available.wait()
            self._waiting -= 1
            index = preferred if preferred in self._free else self._free[-1]
            self._free.remove(index)
            self._runs[index] = 1
        try:
            if self.cpus is not None and preferred != index:
                self._pin(index)
            yield index
        finally:
            with self._available:
                self._runs.pop(index, None)
                self._free.append(index)
                self._available.notify()

    def widen(self, index: int, caller_on_first: bool = False) -> list[int]:
        """For the holder of slot `index`: every other slot too, at once and only if all are free and
        nobody waits for one (a run on all CPUs must never keep another batch waiting); [] otherwise.
        Give them back with `narrow`. `caller_on_first`: the runtime pinned its helper threads to
        every CPU but the first (backends.cpus.wide_run_helper_cpus), so the calling thread takes
        the first."""
        with self._available:
            if self.count < 2 or self._waiting or len(self._free) != self.count - 1:
                return []
            extra, self._free = self._free, []
            self._runs[index] = self.count
        # The run's own thread may use every CPU it now holds: pinned to its one CPU, it shared that
        # CPU with the runtime's spinning helper thread while the other idled (a lone request at 1
        # client took 22 ms instead of 11 once each worker had been pinned to a CPU of its own).
        self._set_affinity([0] if caller_on_first else [index, *extra])
        return extra

    def narrow(self, index: int, extra: list[int]) -> None:
        if not extra:
            return
        self._set_affinity([index])
        with self._available:
            self._runs[index] = 1
            self._free.extend(extra)
            self._available.notify(len(extra))

    def _set_affinity(self, slots: list[int]) -> bool:
        """Let the calling thread run on the CPUs of `slots` only; False (and pinning off for good)
        where the CPU set changed under us: running unpinned beats failing a batch."""
        if self.cpus is None:
            return False
        cpus = {self.cpus[i] for i in slots}
        try:
            os.sched_setaffinity(0, cpus)  # pid 0: the calling thread only
        except OSError as exc:
            logger.warning("compute slots: cannot pin to CPUs %s (%s); running unpinned", sorted(cpus), exc)
            self.cpus, self.pinning = None, f"off: pinning to CPU failed ({exc})"
            return False
        return True

    def _pin(self, index: int) -> None:
        if self._set_affinity([index]):
            self._last_slot.index = index

    def describe(self) -> dict[str, object]:
        with self._available:
            split = sorted(self._runs.values(), reverse=True)
        return {"count": self.count, "pinned_cpus": self.cpus, "pinning": self.pinning, "threads_per_run_now": split}


WORKER_NICE = 19


def lower_this_threads_priority(nice: int = WORKER_NICE) -> None:
    """Give the calling thread (not the process) the CPU priority `nice`; Linux keeps one per thread."""
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), nice)
    except (AttributeError, OSError) as exc:  # not Linux, or a seccomp profile that forbids it
        logger.debug("cannot lower a worker thread's priority: %s", exc)


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
