"""The per-model scheduler with a stand-in batch runner (it echoes its texts, optionally after a
pause), so these tests check queueing, fairness, admission, deadlines and cancellation only; the
served models through the scheduler are tested in tests/integration/test_admission.py."""

from __future__ import annotations

import asyncio
import threading
import time

import numpy as np
import pytest
from kserve.errors import InvalidInput

from predictors.serving.scheduling.admission import request_timeout_seconds
from predictors.serving.errors import DeadlineExceeded, QueueFull
from predictors.serving.scheduling import scheduler as scheduler_module
from predictors.serving.scheduling.chunking import chunk_plan, reassemble, run_chunks
from predictors.serving.scheduling.compute_slots import ComputeSlots
from predictors.serving.scheduling.scheduler import RanBatch, RequestRuns, Scheduler, SchedulerSettings, assemble, estimate_tokens


class StandInRunner:
    """Echoes each text (label = the text, score = its length); records every batch it ran."""

    def __init__(self, seconds_per_text: float = 0.0, gate: threading.Event | None = None) -> None:
        self.seconds_per_text = seconds_per_text
        self.gate = gate
        self.batches: list[list[str]] = []
        self.started: list[list[str]] = []  # batches taken, recorded before the gate
        self.threads: list[int] = []  # intra-op threads each batch ran on
        self.threads_now = 0
        self.most_threads_at_once = 0
        self.lock = threading.Lock()

    def __call__(self, texts: list[str], threads: int = 1):
        with self.lock:
            self.started.append(list(texts))
            self.threads.append(threads)
            self.threads_now += threads
            self.most_threads_at_once = max(self.most_threads_at_once, self.threads_now)
        if self.gate is not None:
            self.gate.wait(30)
        time.sleep(self.seconds_per_text * len(texts))
        with self.lock:
            self.batches.append(list(texts))
            self.threads_now -= threads
        return RanBatch(
            {"label": np.array(texts, dtype=object), "score": np.array([len(t) for t in texts], np.float32)},
            [t.startswith("long") for t in texts], [len(t.split()) + 2 for t in texts], {"backend": 0.001 * len(texts)},
        )


def make_scheduler(runner, *, batch_size=4, max_batch_tokens=10_000, workers=1, across=True, max_queue_texts=None,
                   slots: ComputeSlots | None = None, runs_on_free_cpus=True):
    settings = SchedulerSettings(
        batch_size=batch_size, max_batch_tokens=max_batch_tokens, max_length=512, workers=workers,
        batches_across_requests=across, max_queue_texts=max_queue_texts, runs_on_free_cpus=runs_on_free_cpus,
    )
    scheduler = Scheduler("stand-in", runner, settings, compute_slots_override=slots)
    scheduler.start()
    return scheduler


def held_scheduler(**settings):
    """A scheduler whose stand-in runner waits for `gate` before each batch: the first batch keeps
    the worker busy, so later work stays queued until the test sets the gate."""
    gate = threading.Event()
    runner = StandInRunner(gate=gate)
    return gate, runner, make_scheduler(runner, **settings)


async def until(condition, timeout: float = 30.0) -> None:
    """Poll `condition` on the event loop until it holds (a generous deadline: these cores are noisy)."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.005)


def queued(scheduler: Scheduler) -> int:
    return scheduler.describe()["queued_texts"]


async def occupy(scheduler: Scheduler, runner: StandInRunner) -> asyncio.Task:
    """Submit one text and wait until the worker has taken it (it then waits at the gate)."""
    busy = asyncio.create_task(scheduler.submit(["busy"]))
    await until(lambda: ["busy"] in runner.started)
    return busy


def texts_of(prefix: str, count: int) -> list[str]:
    return [f"{prefix} {i} " + "x" * (i % 13) for i in range(count)]


def test_results_come_back_to_their_requests_in_order():
    runner = StandInRunner()
    scheduler = make_scheduler(runner, batch_size=4)

    async def main():
        requests = [texts_of(f"r{n}", n + 1) for n in range(6)]
        answers = await asyncio.gather(*(scheduler.submit(texts) for texts in requests))
        for texts, rows in zip(requests, answers):
            outputs, truncated = assemble(rows)
            assert list(outputs["label"]) == texts and outputs["label"].dtype == object
            np.testing.assert_array_equal(outputs["score"], [len(t) for t in texts])
            assert truncated == []

    asyncio.run(main())
    scheduler.stop()
    assert any(len({t.split()[0] for t in batch}) > 1 for batch in runner.batches), "no batch mixed requests"


def test_scheduled_results_equal_the_direct_run():
    runner = StandInRunner()
    scheduler = make_scheduler(runner, batch_size=3, workers=2)
    texts = ["long " * 9, "b", "long " * 3, "dd", "e" * 7, "f", "long " * 5, "hh"]

    async def main():
        others = [scheduler.submit(texts_of("other", 5)) for _ in range(3)]
        mine, *_ = await asyncio.gather(scheduler.submit(texts), *others)
        return mine

    scheduled = assemble(asyncio.run(main()))
    plan = chunk_plan(texts, 3)  # as a request alone is chunked
    ran = run_chunks(lambda chunk: runner([texts[i] for i in chunk]), plan)
    direct = reassemble(len(texts), plan, [(batch.outputs, batch.truncated) for batch in ran])
    scheduler.stop()
    assert list(scheduled[0]["label"]) == list(direct[0]["label"]) == texts
    np.testing.assert_array_equal(scheduled[0]["score"], direct[0]["score"])
    assert scheduled[1] == direct[1] == [0, 2, 6]


def test_one_text_request_is_not_stuck_behind_a_large_one():
    runner = StandInRunner(seconds_per_text=0.002)
    scheduler = make_scheduler(runner, batch_size=8, workers=1)
    finished: list[str] = []

    async def timed(name, texts):
        await scheduler.submit(texts)
        finished.append(name)

    async def main():
        large = asyncio.create_task(timed("large", texts_of("large", 400)))  # ~0.8 s of work
        await until(lambda: runner.started)  # the large request's work has begun
        await timed("small", ["one text"])
        await large

    asyncio.run(main())
    scheduler.stop()
    assert finished == ["small", "large"]


def test_token_budget_bounds_padded_batch_size_and_per_text_backends_get_one_text():
    runner = StandInRunner()
    scheduler = make_scheduler(runner, batch_size=8, max_batch_tokens=64)
    texts = ["w" * n for n in (8, 40, 40, 80, 80, 120, 200, 400, 4, 4, 4, 4)]
    asyncio.run(scheduler.submit(texts))
    scheduler.stop()
    for batch in runner.batches:
        padded = max(estimate_tokens(t, 512) for t in batch) * len(batch)
        assert len(batch) == 1 or padded <= 64
        assert len(batch) <= 8

    runner = StandInRunner()
    scheduler = make_scheduler(runner, batch_size=8, across=False)
    asyncio.run(scheduler.submit(texts_of("t", 10)))
    scheduler.stop()
    assert all(len(batch) == 1 for batch in runner.batches)


def test_other_requests_texts_join_a_batch_only_while_padding_stays_low():
    """Across requests a batch takes texts of close length; one that would pad the batch beyond
    MAX_TOP_UP_PADDING waits for a batch of its own."""
    gate = threading.Event()
    runner = StandInRunner(gate=gate)
    scheduler = make_scheduler(runner, batch_size=8)
    lengths = [200, 204, 196, 40, 208, 400, 192]  # characters: ~52, 53, 51, 12, 54, 102, 50 tokens

    async def main():
        busy = await occupy(scheduler, runner)
        singles = [asyncio.create_task(scheduler.submit(["w" * n])) for n in lengths]
        await until(lambda: queued(scheduler) == len(lengths))
        gate.set()
        await asyncio.gather(busy, *singles)

    asyncio.run(main())
    scheduler.stop()
    batches = [sorted(len(t) for t in batch) for batch in runner.batches if batch != ["busy"]]
    assert [192, 196, 200, 204, 208] in batches
    assert [40] in batches and [400] in batches
    for batch in batches:
        tokens = [estimate_tokens("w" * n, 512) for n in batch]
        assert len(batch) == 1 or 1 - sum(tokens) / (max(tokens) * len(tokens)) <= scheduler_module.MAX_TOP_UP_PADDING


def test_a_request_over_the_queue_bound_is_refused_at_once():
    gate = threading.Event()
    runner = StandInRunner(gate=gate)
    scheduler = make_scheduler(runner, batch_size=1, max_queue_texts=10)
    scheduler.observe_run(1, 0.5)  # 2 texts/s measured: retry-after follows the queue

    async def main():
        first = asyncio.create_task(scheduler.submit(texts_of("a", 9)))
        await until(lambda: queued(scheduler) == 8)  # one text started (blocked on the gate), 8 queued
        with pytest.raises(QueueFull) as refused:  # at once: the gate is closed, nothing queued can finish
            await asyncio.wait_for(scheduler.submit(texts_of("b", 3)), timeout=10)
        assert "max_queue_texts" in refused.value.message and refused.value.retry_after_seconds >= 4
        assert refused.value.headers()["Retry-After"] == str(round(refused.value.retry_after_seconds))
        fits = asyncio.create_task(scheduler.submit(texts_of("c", 2)))
        gate.set()
        assert len(await first) == 9 and len(await fits) == 2

    asyncio.run(main())
    scheduler.stop()
    assert scheduler.counters["refused"] == 1


def test_work_not_started_by_the_deadline_is_dropped():
    gate, runner, scheduler = held_scheduler(batch_size=1)

    async def main():
        busy = await occupy(scheduler, runner)
        started = time.monotonic()
        with pytest.raises(DeadlineExceeded) as late:  # while the gate is closed: it did not wait for the work
            await scheduler.submit(texts_of("late", 5), timeout_seconds=0.1)
        assert time.monotonic() - started >= 0.09  # not before its deadline (timer resolution aside)
        assert "100 ms" in late.value.message
        gate.set()
        await busy

    asyncio.run(main())
    scheduler.stop()  # joins the workers: every batch they took has finished
    assert not any(t.startswith("late") for batch in runner.batches for t in batch)
    assert scheduler.counters["deadline_exceeded"] == 1 and scheduler.counters["texts_dropped"] == 5


def test_work_a_worker_finds_past_its_deadline_names_the_deadline():
    """The worker, not the waiting coroutine, notices the deadline first when the event loop is busy:
    its answer names the client's deadline just the same."""
    gate, runner, scheduler = held_scheduler(batch_size=1)

    async def main():
        busy = await occupy(scheduler, runner)
        late = asyncio.create_task(scheduler.submit(texts_of("late", 3), timeout_seconds=0.1))
        await until(lambda: queued(scheduler) == 3)
        time.sleep(0.2)  # the event loop is kept busy past the deadline (the point of this test) ...
        gate.set()
        deadline = time.monotonic() + 30
        while scheduler.counters["deadline_exceeded"] == 0:  # ... until the worker has dropped the late request
            assert time.monotonic() < deadline
            time.sleep(0.005)
        with pytest.raises(DeadlineExceeded) as dropped:
            await late
        assert "100 ms deadline" in dropped.value.message
        await busy

    asyncio.run(main())
    scheduler.stop()
    assert scheduler.counters["deadline_exceeded"] == 1


def test_cancelling_the_caller_drops_its_queued_work():
    gate, runner, scheduler = held_scheduler(batch_size=1)

    async def main():
        busy = await occupy(scheduler, runner)
        gone = asyncio.create_task(scheduler.submit(texts_of("gone", 20)))
        await until(lambda: queued(scheduler) == 20)
        gone.cancel()  # what the server does when the client disconnects
        with pytest.raises(asyncio.CancelledError):
            await gone
        assert scheduler.describe()["queued_texts"] == 0
        gate.set()
        await busy

    asyncio.run(main())
    scheduler.stop()
    assert not any(t.startswith("gone") for batch in runner.batches for t in batch)
    assert scheduler.counters["cancelled"] == 1


def test_a_failing_batch_fails_its_requests_and_the_workers_go_on():
    calls = []

    def runner(texts, threads=1):
        calls.append(texts)
        if any("bad" in t for t in texts):
            raise RuntimeError("backend broke")
        return StandInRunner()(texts, threads)

    scheduler = make_scheduler(runner, batch_size=1, across=False)

    async def main():
        with pytest.raises(RuntimeError, match="backend broke"):
            await scheduler.submit(["bad text", "fine"])
        assert len(await scheduler.submit(["fine again"])) == 1

    asyncio.run(main())
    scheduler.stop()


def test_request_timeout_parameter_header_and_default():
    from kserve.protocol.infer_type import InferInput, InferRequest

    request = InferRequest("m", [InferInput("text", [1], "BYTES", ["a"])], parameters={"timeout_ms": 250})
    assert request_timeout_seconds(request, {"timeout-ms": "900"}, 30_000) == 0.25
    assert request_timeout_seconds({"instances": ["a"]}, {"X-Timeout-Ms": "900"}, 30_000) == 0.9
    assert request_timeout_seconds({"instances": ["a"]}, {}, 30_000) == 30.0
    assert request_timeout_seconds({"instances": ["a"]}, None, None) is None
    for bad in ("soon", -5, 0, True, float("inf")):
        with pytest.raises(InvalidInput, match="timeout_ms must be a positive number"):
            request_timeout_seconds({"instances": ["a"], "parameters": {"timeout_ms": bad}}, None, None)


def test_a_request_that_cannot_start_within_its_deadline_is_refused_at_once():
    gate = threading.Event()
    runner = StandInRunner(gate=gate)
    scheduler = make_scheduler(runner, batch_size=1, max_queue_texts=1000)
    scheduler.observe_run(1, 0.1)  # 10 texts/s measured

    async def main():
        ahead = asyncio.create_task(scheduler.submit(texts_of("ahead", 30)))
        await until(lambda: queued(scheduler) == 29)
        with pytest.raises(QueueFull) as refused:  # ~3 s of work ahead, 1 s deadline
            await scheduler.submit(texts_of("late", 20), timeout_seconds=1.0)
        assert "deadline" in refused.value.message and "timeout_ms" in refused.value.message
        small = asyncio.create_task(scheduler.submit(["one"], timeout_seconds=1.0))  # its turn comes next
        gate.set()
        assert len(await small) == 1 and len(await ahead) == 30

    asyncio.run(main())
    scheduler.stop()


def test_a_bad_pinning_setting_fails_the_start_not_the_worker_threads(monkeypatch):
    from predictors.model.environment import EnvironmentSettingError
    from predictors.serving.scheduling import compute_slots as slots_module

    monkeypatch.setattr(slots_module, "_slots", None)  # resolved afresh, as in a new process
    monkeypatch.setenv("PREDICTORS_PIN_CPUS", "sometimes")
    settings = SchedulerSettings(batch_size=4, max_batch_tokens=10_000, max_length=512, workers=1,
                                 batches_across_requests=True, max_queue_texts=None)
    scheduler = Scheduler("stand-in", lambda texts, threads: RanBatch({}, [], [], {}), settings)
    with pytest.raises(EnvironmentSettingError, match="PREDICTORS_PIN_CPUS"):
        scheduler.start()
    assert not scheduler._threads


# ---- runs on every free CPU ---------------------------------------------------------------------
def test_a_lone_request_runs_on_every_cpu_and_a_full_queue_on_one_each():
    slots = ComputeSlots(2)  # two CPUs, whatever this machine has
    gate = threading.Event()
    runner = StandInRunner(gate=gate)
    scheduler = make_scheduler(runner, batch_size=1, workers=2, across=False, slots=slots)

    async def main():
        await scheduler.submit(["alone"])  # nothing queued behind it: both CPUs
        assert runner.threads == [2]
        assert scheduler.seconds_per_text is None  # a run on every CPU says nothing of the full-queue rate
        gate.clear()
        many = asyncio.create_task(scheduler.submit(texts_of("many", 12)))
        await until(lambda: len(runner.started) == 3)  # two workers hold a text each at the gate
        assert runner.threads[1:] == [1, 1]
        gate.set()
        await many

    gate.set()
    asyncio.run(main())
    scheduler.stop()
    queue_runs = runner.threads[1:]
    assert queue_runs.count(1) >= 10  # while texts were queued, one thread per run
    assert runner.most_threads_at_once <= 2  # never more threads than CPUs
    assert scheduler.counters["runs_on_all_cpus"] == runner.threads.count(2)
    assert scheduler.describe()["compute_slots"]["threads_per_run_now"] == []


def test_never_more_threads_than_cpus_under_a_mixed_load():
    slots = ComputeSlots(2)
    runner = StandInRunner(seconds_per_text=0.001)
    schedulers = [make_scheduler(runner, batch_size=2, workers=2, slots=slots) for _ in range(2)]  # two models

    async def client(scheduler, name, count):
        for n in range(count):
            await scheduler.submit(texts_of(f"{name}{n}", 1 + n % 3))

    async def main():
        await asyncio.gather(*(client(s, f"m{i}c{c}", 15) for i, s in enumerate(schedulers) for c in range(3)))

    asyncio.run(main())
    for scheduler in schedulers:
        scheduler.stop()
    assert runner.most_threads_at_once <= 2 and set(runner.threads) <= {1, 2}


def test_runs_stay_on_one_cpu_when_turned_off():
    runner = StandInRunner()
    scheduler = make_scheduler(runner, batch_size=1, workers=2, slots=ComputeSlots(2), runs_on_free_cpus=False)
    asyncio.run(scheduler.submit(["alone"]))
    scheduler.stop()
    assert runner.threads == [1] and scheduler.counters["runs_on_all_cpus"] == 0


def test_a_requests_stages_are_summed_over_the_batches_that_ran_its_texts():
    """The runner reports 1 ms of backend per text of a batch: a 6-text request runs in batches of 4
    and 2 (6 ms in all), after waiting behind the held batch."""
    gate, runner, scheduler = held_scheduler(batch_size=4)

    async def main():
        busy = await occupy(scheduler, runner)
        runs = RequestRuns()
        task = asyncio.create_task(scheduler.submit(texts_of("big", 6), runs=runs))
        await until(lambda: queued(scheduler) == 6)
        gate.set()
        await asyncio.gather(busy, task)
        return runs

    runs = asyncio.run(main())
    scheduler.stop()
    assert runs.batches == 2 and runs.stages == {"backend": pytest.approx(0.006)}
    assert runs.queue_seconds > 0
    assert list(runs.timings()) == ["queue", "backend"]
