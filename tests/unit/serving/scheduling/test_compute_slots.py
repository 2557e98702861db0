"""Compute slots on this machine's real CPUs: never more holders than slots, and a pinned holder's
thread runs only on its slot's CPU (Linux sched_getaffinity of the calling thread)."""

from __future__ import annotations

import os
import threading

import pytest

from predictors.serving.scheduling.compute_slots import ComputeSlots

CPUS = sorted(os.sched_getaffinity(0))


def test_a_pinned_holder_runs_only_on_its_slots_cpu_and_keeps_the_rest_of_the_process_unpinned():
    cpus = CPUS[:2]
    slots = ComputeSlots(len(cpus), cpus, "test")
    seen: dict[int, set[int]] = {}
    both_holding = threading.Barrier(len(cpus), timeout=30)

    def hold() -> None:
        with slots.hold() as index:
            seen[index] = os.sched_getaffinity(0)
            both_holding.wait()  # each slot held at once, so each thread has its own

    threads = [threading.Thread(target=hold) for _ in cpus]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(seen) == list(range(len(cpus)))
    assert all(seen[index] == {cpus[index]} for index in seen)
    assert os.sched_getaffinity(0) == set(CPUS)  # the calling thread (and the event loop) not pinned


def test_never_more_holders_than_slots_and_a_waiter_gets_the_released_slot():
    slots = ComputeSlots(2)  # unpinned
    holding, most, lock = [0], [0], threading.Lock()
    pair = threading.Barrier(2, timeout=30)  # holders leave two at a time, so two always hold at once

    def hold() -> None:
        with slots.hold():
            with lock:
                holding[0] += 1
                most[0] = max(most[0], holding[0])
            pair.wait()
            with lock:
                holding[0] -= 1

    threads = [threading.Thread(target=hold) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert most[0] == 2 and holding[0] == 0
    assert sorted(slots._free) == [0, 1]


def test_a_worker_gets_its_previous_cpu_back_and_is_not_re_pinned(monkeypatch):
    slots = ComputeSlots(1, CPUS[:1], "test")
    calls = []
    real = os.sched_setaffinity
    monkeypatch.setattr(os, "sched_setaffinity", lambda pid, cpus: (calls.append(cpus), real(pid, cpus)))

    def twice() -> None:
        for _ in range(2):
            with slots.hold() as index:
                assert index == 0

    thread = threading.Thread(target=twice)
    thread.start()
    thread.join()
    assert calls == [{CPUS[0]}]


def test_a_cpu_that_cannot_be_pinned_leaves_the_slots_unpinned_instead_of_failing_the_batch():
    slots = ComputeSlots(1, [10_000], "test")  # no such CPU: sched_setaffinity raises EINVAL
    result = []

    def hold() -> None:
        with slots.hold() as index:
            result.append((index, os.sched_getaffinity(0)))

    thread = threading.Thread(target=hold)
    thread.start()
    thread.join()
    assert result == [(0, set(CPUS))]
    assert slots.cpus is None and "failed" in slots.describe()["pinning"]


def test_slots_and_cpus_must_match():
    with pytest.raises(ValueError, match="2 slots need 2 CPUs"):
        ComputeSlots(2, [0])


def test_lowering_a_threads_priority_leaves_the_rest_of_the_process_alone():
    from predictors.serving.scheduling.compute_slots import WORKER_NICE, lower_this_threads_priority

    before = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
    seen = []

    def worker() -> None:
        lower_this_threads_priority()
        seen.append(os.getpriority(os.PRIO_PROCESS, threading.get_native_id()))

    thread = threading.Thread(target=worker)
    thread.start()
    thread.join()
    assert seen == [WORKER_NICE]
    assert os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) == before


@pytest.mark.skipif(len(CPUS) < 2, reason="needs 2 CPUs to widen a run")
def test_a_widened_run_may_use_every_cpu_it_holds_and_is_pinned_back_to_its_own_after():
    """A run on all CPUs from a pinned worker: pinned to its one CPU, it shared that CPU with the
    runtime's helper thread while the other CPU idled (a lone request took twice as long)."""
    cpus = CPUS[:2]
    slots = ComputeSlots(len(cpus), cpus, "test")
    seen: list[set[int]] = []

    def run() -> None:
        with slots.hold() as index:
            seen.append(os.sched_getaffinity(0))
            extra = slots.widen(index)
            seen.append(os.sched_getaffinity(0))
            slots.narrow(index, extra)
            seen.append(os.sched_getaffinity(0))
            seen.append({cpus[index]})

    thread = threading.Thread(target=run)
    thread.start()
    thread.join()
    own = seen[3]
    assert seen[0] == own and seen[1] == set(cpus) and seen[2] == own


@pytest.mark.skipif(len(CPUS) < 2, reason="needs 2 CPUs to widen a run")
def test_a_widened_run_whose_helpers_are_pinned_runs_on_the_first_cpu_only():
    """The runtime pinned its helper threads to every CPU but the first: the run's own thread takes
    the first, whichever slot it held, so it never shares a CPU with a spinning helper."""
    cpus = CPUS[:2]
    slots = ComputeSlots(len(cpus), cpus, "test")
    seen: list[tuple[int, set[int]]] = []

    def run() -> None:
        with slots.hold() as index:
            extra = slots.widen(index, caller_on_first=True)
            seen.append((index, os.sched_getaffinity(0)))
            slots.narrow(index, extra)
            seen.append((index, os.sched_getaffinity(0)))

    thread = threading.Thread(target=run)
    thread.start()
    thread.join()
    (index, during), (_, after) = seen
    assert during == {cpus[0]}
    assert after == {cpus[index]}
