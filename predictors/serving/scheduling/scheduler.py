"""One scheduler per model between the decoded request and the backend.

Every text of every request becomes a work item in one queue per model. Worker threads take the next
batch from it: requests are served round-robin (one batch per request per turn, so a one-text
request waits for at most one batch of a 1024-text one), a batch holds texts of similar length within
a token budget (`max_batch_tokens`, estimated from the text length, and `batch_size`), and where the
backend gains from batching (`batches_across_requests`) the batch is topped up with other requests'
texts closest in length. Backends that run one text per run (dynamic int8) get one text per batch.
Each text's output row goes back to its request, which is answered in request order.

Admission and deadlines are decided here too: a request whose texts do not fit the queue bound is
refused at once (QueueFull -> HTTP 429 + Retry-After, gRPC RESOURCE_EXHAUSTED), over REST already
when its headers arrive (door.py); a request whose
work has not started by its deadline is dropped (DeadlineExceeded -> 504, DEADLINE_EXCEEDED); a
request whose awaiting coroutine is cancelled (client gone) has its queued work dropped.

Runs on several models share the CPUs: process-wide compute slots, one per CPU the process may use
(cgroup limit), so workers of all models together never oversubscribe; where the process owns its
CPUs, each slot is a CPU its holder is pinned to (compute_slots.py).
"""

from __future__ import annotations

import asyncio
import logging
import math
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Callable, NamedTuple, Sequence

import numpy as np

from ...backends import cpu_limit
from ...model import ModelConfig
from ...model.environment import server_environment
from ..errors import ModelUnavailable
from .admission import deadline_exceeded, deadline_unreachable, queue_full
from .compute_slots import ComputeSlots, compute_slots, lower_this_threads_priority
from .door import Door

logger = logging.getLogger("kserve.predictors")

class TextResult(NamedTuple):
    """One text's outputs (each a 1-row array, dtype kept), whether tokenization truncated it, and
    the tokens the model ran on it (after truncation, special tokens included)."""

    outputs: dict[str, np.ndarray]
    truncated: bool
    tokens: int


@dataclass(frozen=True)
class RanBatch:
    """What a BatchRunner returns for one batch: per-output arrays, per text its truncation flag and
    tokens, and the seconds each stage of the batch took (tokenize, backend, postprocess)."""

    outputs: dict[str, np.ndarray]
    truncated: Sequence[bool]
    tokens: Sequence[int]
    stages: dict[str, float]


#: Tokenize + backend + head for a list of texts on `threads` intra-op threads.
BatchRunner = Callable[[list[str], int], RanBatch]

#: The default token budget of a batch is batch_size texts of this many tokens.
DEFAULT_TOKENS_PER_TEXT = 256

def estimate_tokens(text: str, max_length: int) -> int:
    """Tokens a text pads to, estimated without tokenizing (WordPiece: ~4 characters a token, plus
    [CLS]/[SEP]). Used only to group similar lengths and to bound a batch's padded size."""
    return min(max_length, len(text) // 4 + 2)


def assemble(rows: Sequence[TextResult]) -> tuple[dict[str, np.ndarray], list[int]]:
    """Per-output arrays in request order and the indices of truncated texts, from per-text rows."""
    names = rows[0].outputs.keys()
    outputs = {name: np.concatenate([row.outputs[name] for row in rows]) for name in names}
    return outputs, [i for i, row in enumerate(rows) if row.truncated]


def split_rows(ran: RanBatch) -> list[TextResult]:
    """A batch's outputs as one TextResult per text (copies, so a row does not pin its batch)."""
    return [
        TextResult({name: values[row : row + 1].copy() for name, values in ran.outputs.items()}, bool(cut), int(tokens))
        for row, (cut, tokens) in enumerate(zip(ran.truncated, ran.tokens))
    ]


@dataclass
class RequestRuns:
    """Filled in for the caller of one request: the backend runs its texts took part in, how long it
    waited for its first batch to start, the seconds of each stage summed over the batches that ran
    its texts (batches run in parallel on several workers, so the sums can exceed the wall time),
    and how many of its texts the response cache answered (lookup_then_compute)."""

    batches: int = 0
    queue_seconds: float | None = None
    stages: dict[str, float] = field(default_factory=dict)
    cached_texts: int = 0

    def timings(self) -> dict[str, float]:
        """Seconds per stage, the queue first; nothing for a request the cache answered whole."""
        return {**({"queue": self.queue_seconds} if self.queue_seconds is not None else {}), **self.stages}


@dataclass(eq=False)
class _Request:
    texts: list[str]
    tokens: list[int]
    deadline: float | None
    timeout_seconds: float | None  # what the client asked for, for the error message
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future
    enqueued_at: float = 0.0
    pending: deque[int] = field(default_factory=deque)  # indices not started, shortest first
    results: list[TextResult | None] = field(default_factory=list)
    remaining: int = 0
    done: bool = False
    runs: RequestRuns = field(default_factory=RequestRuns)

    def deliver(self, index: int, result: TextResult) -> bool:
        """Store one text's result; True when it was the last (caller holds the scheduler lock)."""
        if self.done:
            return False
        self.results[index] = result
        self.remaining -= 1
        if self.remaining == 0:
            self.done = True
            return True
        return False

    def resolve(self, error: BaseException | None = None) -> None:
        """Wake the awaiting coroutine (from any thread)."""

        def settle() -> None:
            if self.future.done():
                return
            if error is None:
                self.future.set_result(self.results)
            else:
                self.future.set_exception(error)

        try:
            self.loop.call_soon_threadsafe(settle)
        except RuntimeError:  # the loop is closed: nobody is waiting any more
            pass


#: Texts from other requests join a batch only while its padding stays within this share of the
#: padded tokens: with 32 one-text clients on review-sentiment (torch) a cap of 0.1 gave 85 texts/s
#: against 79 with none (batches of 8 at 24 % padding); 0.05 gave the same as 0.1.
MAX_TOP_UP_PADDING = 0.1


class FairQueue:
    """Requests' pending texts, served round-robin. Not thread-safe: the scheduler holds its lock."""

    def __init__(self) -> None:
        self._requests: deque[_Request] = deque()
        self.queued_texts = 0

    def __len__(self) -> int:
        return len(self._requests)

    def add(self, request: _Request) -> None:
        self._requests.append(request)
        self.queued_texts += len(request.pending)

    def drop(self, request: _Request) -> int:
        """Remove a request's texts that have not started; returns how many were dropped."""
        dropped = len(request.pending)
        request.pending.clear()
        self.queued_texts -= dropped
        try:
            self._requests.remove(request)
        except ValueError:
            pass
        return dropped

    def expired_requests(self, now: float) -> list[_Request]:
        """Queued requests whose deadline passed before all their work started."""
        return [r for r in self._requests if r.deadline is not None and r.deadline <= now]

    def next_batch(self, batch_size: int, max_tokens: int, across_requests: bool) -> list[tuple[_Request, int]]:
        """The next request in turn gives its shortest pending texts (up to batch_size, padded size
        within max_tokens; always at least one text); with `across_requests`, room left is filled
        with other requests' pending texts closest in length, as long as the batch's padding stays
        within MAX_TOP_UP_PADDING."""
        if not self._requests:
            return []
        head = self._requests.popleft()
        first = head.pending.popleft()
        batch = [(head, first)]
        longest = head.tokens[first]
        while head.pending and len(batch) < batch_size:
            candidate = head.pending[0]
            if max(longest, head.tokens[candidate]) * (len(batch) + 1) > max_tokens:
                break
            batch.append((head, head.pending.popleft()))
            longest = max(longest, head.tokens[candidate])
        if across_requests and len(batch) < batch_size:
            target = head.tokens[first]
            candidates = [
                (abs(other.tokens[i] - target), n, other, i)
                for n, other in enumerate(self._requests)
                for i in list(other.pending)[:batch_size]
            ]
            candidates.sort(key=lambda c: (c[0], c[1]))
            total = sum(r.tokens[i] for r, i in batch)
            for _, _, other, i in candidates:
                if len(batch) >= batch_size:
                    break
                widest = max(longest, other.tokens[i])
                if widest * (len(batch) + 1) > max_tokens:
                    continue
                if 1 - (total + other.tokens[i]) / (widest * (len(batch) + 1)) > MAX_TOP_UP_PADDING:
                    continue
                total += other.tokens[i]
                other.pending.remove(i)
                batch.append((other, i))
                longest = max(longest, other.tokens[i])
            for other in [r for r in self._requests if not r.pending]:
                self._requests.remove(other)
        if head.pending:
            self._requests.append(head)  # its next turn comes after every other request's
        self.queued_texts -= len(batch)
        return batch


@dataclass(frozen=True)
class SchedulerHooks:
    """Where the queue reports to metrics: texts entering, texts leaving for a worker after a wait,
    and texts dropped unstarted (refused requests never enter)."""

    enqueued: Callable[[int], None] = lambda texts: None
    started: Callable[[float, int], None] = lambda seconds, texts: None
    dropped: Callable[[int], None] = lambda texts: None


@dataclass(frozen=True)
class SchedulerSettings:
    batch_size: int
    max_batch_tokens: int
    max_length: int
    workers: int
    batches_across_requests: bool
    max_queue_texts: int | None  # None: derived from measured throughput (see Scheduler.queue_limit)
    queue_seconds: float = 4.0  # the derived bound holds this many seconds of work
    # A batch that leaves nothing queued may run on every CPU (all compute slots) instead of one.
    runs_on_free_cpus: bool = True
    # The backend pinned a wide run's helper threads to every CPU but the first: its caller takes the first.
    wide_helpers_pinned: bool = False


class Scheduler:
    """Per-model queue, admission, deadlines and worker threads around a BatchRunner."""

    def __init__(
        self, name: str, run_batch: BatchRunner, settings: SchedulerSettings, hooks: SchedulerHooks | None = None,
        compute_slots_override: ComputeSlots | None = None,
    ) -> None:
        self.name = name
        self.run_batch = run_batch
        self.settings = settings
        self.hooks = hooks or SchedulerHooks()
        self.batch_size = settings.batch_size if settings.batches_across_requests else 1
        self._parallel = min(settings.workers, cpu_limit())  # read once: it is on every request's path
        self._queue = FairQueue()
        self._lock = threading.Lock()
        self._work_ready = threading.Condition(self._lock)
        self._stopped = False
        self._threads: list[threading.Thread] = []
        self.seconds_per_text: float | None = None  # measured, exponentially averaged
        self.door = Door(self)
        self.counters = {"accepted": 0, "refused": 0, "deadline_exceeded": 0, "cancelled": 0, "texts_dropped": 0,
                         "runs_on_one_cpu": 0, "runs_on_all_cpus": 0}
        self._slots = compute_slots_override

    # ---- lifecycle -----------------------------------------------------------------------
    def start(self) -> None:
        # Resolved here, on the loading thread: a bad PREDICTORS_PIN_CPUS fails the load instead of
        # killing each worker thread as it starts.
        self._slots = self._slots or compute_slots()
        for n in range(self.settings.workers):
            thread = threading.Thread(target=self._work, name=f"infer-{self.name}-{n}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self) -> None:
        """Stop the workers; requests still queued fail as the model not being ready (503)."""
        with self._lock:
            self._stopped = True
            dropped = list(self._queue._requests)
            for request in dropped:
                self.hooks.dropped(self._queue.drop(request))
                request.done = True
            self._work_ready.notify_all()
        for thread in self._threads:  # each finishes the batch it is running
            if thread is not threading.current_thread():
                thread.join(timeout=60)
        for request in dropped:
            request.resolve(ModelUnavailable(f"model '{self.name}' was stopped before this request's work started"))

    # ---- measurements --------------------------------------------------------------------
    def observe_run(self, texts: int, seconds: float) -> None:
        """A run of `texts` took `seconds` (a worker's batch, or the model's calibration run at load)."""
        sample = seconds / max(1, texts)
        previous = self.seconds_per_text
        self.seconds_per_text = sample if previous is None else 0.8 * previous + 0.2 * sample

    @property
    def texts_per_second(self) -> float | None:
        if not self.seconds_per_text:
            return None
        return self._parallel / self.seconds_per_text

    @property
    def queue_limit(self) -> int | None:
        """max_queue_texts, or `queue_seconds` of measured throughput; None until measured."""
        if self.settings.max_queue_texts is not None:
            return self.settings.max_queue_texts
        rate = self.texts_per_second
        return None if rate is None else max(self.settings.batch_size, int(rate * self.settings.queue_seconds))

    def describe(self) -> dict[str, object]:
        with self._lock:
            queued, requests, arriving = self._queue.queued_texts, len(self._queue), self.door.arriving_texts
        rate = self.texts_per_second
        return {
            "workers": self.settings.workers,
            "batch_texts": self.batch_size,
            "max_batch_tokens": self.settings.max_batch_tokens,
            "batches_across_requests": self.settings.batches_across_requests,
            "max_queue_texts": self.queue_limit,
            "estimated_texts_per_second": round(rate, 1) if rate else None,
            "queued_texts": queued,
            "queued_requests": requests,
            "arriving_texts_estimated": arriving,
            "runs_on_free_cpus": self.settings.runs_on_free_cpus,
            "compute_slots": (self._slots or compute_slots()).describe(),
            **self.counters,
        }

    # ---- request path --------------------------------------------------------------------
    async def submit(self, texts: list[str], timeout_seconds: float | None = None,
                     runs: RequestRuns | None = None) -> list[TextResult]:
        """Queue the texts and wait for their results, in order. Raises QueueFull at once when they do
        not fit, DeadlineExceeded when their work has not started within timeout_seconds; cancelling
        the caller drops its queued work. `runs` counts the backend runs its texts took part in."""
        loop = asyncio.get_running_loop()
        tokens = [estimate_tokens(t, self.settings.max_length) for t in texts]
        request = _Request(
            texts=texts,
            tokens=tokens,
            deadline=None if timeout_seconds is None else time.monotonic() + timeout_seconds,
            timeout_seconds=timeout_seconds,
            enqueued_at=time.monotonic(),
            loop=loop,
            future=loop.create_future(),
            pending=deque(sorted(range(len(texts)), key=lambda i: tokens[i])),
            results=[None] * len(texts),
            remaining=len(texts),
            runs=runs if runs is not None else RequestRuns(),
        )
        with self._lock:
            limit = self.queue_limit
            queued = self._queue.queued_texts
            if self._stopped:
                raise ModelUnavailable(f"model '{self.name}' is stopping")
            if limit is not None and queued > 0 and queued + len(texts) > limit:
                self.counters["refused"] += 1
                raise queue_full(self.name, queued, len(texts), limit, self.retry_after(queued))
            wait = self._wait_for_all_to_start(len(texts))
            if timeout_seconds is not None and queued > 0 and wait is not None and wait > timeout_seconds:
                self.counters["refused"] += 1
                raise deadline_unreachable(self.name, wait, timeout_seconds, self.retry_after(queued))
            self.counters["accepted"] += 1
            self._queue.add(request)
            self.hooks.enqueued(len(texts))
            self._work_ready.notify(min(len(texts), self.settings.workers))
        try:
            if timeout_seconds is None:
                return await asyncio.shield(request.future)
            done, _ = await asyncio.wait({request.future}, timeout=max(0.0, timeout_seconds))
            if done:
                return request.future.result()
            with self._lock:
                late = bool(request.pending) and not request.done
                if late:
                    self._drop(request, "deadline_exceeded")
            if late:
                raise deadline_exceeded(self.name, timeout_seconds, len(request.texts))
            # All its work started before the deadline (or a worker already settled it): wait for it.
            return await asyncio.shield(request.future)
        except asyncio.CancelledError:
            with self._lock:
                if not request.done:
                    self._drop(request, "cancelled")
            raise

    def _drop(self, request: _Request, counter: str) -> None:
        """Forget a request's unstarted work (caller holds the lock)."""
        self.counters[counter] += 1
        dropped = self._queue.drop(request)
        self.counters["texts_dropped"] += dropped
        self.hooks.dropped(dropped)
        request.done = True

    def _wait_for_all_to_start(self, texts: int) -> float | None:
        """Seconds until the last of `texts` new texts would start (caller holds the lock): in fair
        turns, each queued request runs at most as many texts as this one before it finishes."""
        rate = self.texts_per_second
        if not rate:
            return None
        ahead = sum(min(len(r.pending), texts) for r in self._queue._requests)
        return (ahead + texts) / rate

    # ---- what the door reads (under the lock) ------------------------------------------------
    @property
    def lock(self) -> threading.Lock:
        return self._lock

    @property
    def stopped(self) -> bool:
        return self._stopped

    @property
    def queued_texts(self) -> int:
        return self._queue.queued_texts

    def refused(self) -> None:
        self.counters["refused"] += 1

    def arrived(self, texts: int) -> None:
        """The current request's body is decoded: its door estimate gives way to its `texts`."""
        self.door.arrived(texts)

    def retry_after(self, queued: int) -> float:
        """Seconds until `queued` texts are worked off, as a Retry-After (at least 1)."""
        rate = self.texts_per_second
        return max(1.0, math.ceil(queued / rate)) if rate else 1.0

    # ---- workers -------------------------------------------------------------------------
    def _work(self) -> None:
        slots = self._slots
        lower_this_threads_priority()  # the event loop (probes, refusals) never waits behind a batch
        while True:
            with self._lock:
                while not self._stopped and not len(self._queue):
                    self._work_ready.wait()
                if self._stopped:
                    return
            with slots.hold() as slot:  # taken before the batch is chosen: the freshest turn and deadlines
                with self._lock:
                    late = [r for r in self._queue.expired_requests(time.monotonic()) if not r.done]
                    for request in late:
                        self._drop(request, "deadline_exceeded")
                    batch = self._queue.next_batch(
                        self.batch_size, self.settings.max_batch_tokens, self.settings.batches_across_requests
                    )
                    nothing_left = not len(self._queue)
                    now = time.monotonic()
                    for request in {id(r): r for r, _ in batch}.values():
                        if request.runs.queue_seconds is None:  # its first batch: the wait for a worker ends
                            request.runs.queue_seconds = now - request.enqueued_at
                if batch:
                    self.hooks.started(sum(now - r.enqueued_at for r, _ in batch) / len(batch), len(batch))
                for request in late:
                    request.resolve(deadline_exceeded(self.name, request.timeout_seconds, len(request.texts)))
                if not batch:
                    continue
                # Alone (nothing queued behind it, no batch waiting for a CPU), a batch runs on every
                # CPU: a lone request's latency halves on 2 CPUs. Under load each runs on one.
                extra = slots.widen(slot, self.settings.wide_helpers_pinned) if nothing_left and self.settings.runs_on_free_cpus else []
                try:
                    self._run(batch, 1 + len(extra))
                finally:
                    slots.narrow(slot, extra)

    def _run(self, batch: list[tuple[_Request, int]], threads: int = 1) -> None:
        started = time.perf_counter()
        with self._lock:
            self.counters["runs_on_all_cpus" if threads > 1 else "runs_on_one_cpu"] += 1
        try:
            ran = self.run_batch([request.texts[i] for request, i in batch], threads)
        except Exception as exc:  # the batch's requests fail; the worker and other requests go on
            logger.exception("model %s: a batch of %d texts failed", self.name, len(batch))
            failed = {id(r): r for r, _ in batch}.values()
            with self._lock:
                for request in failed:
                    self.hooks.dropped(self._queue.drop(request))
                    request.done = True
            for request in failed:
                request.resolve(exc)
            return
        if threads == 1:  # the queue bound is for a full queue, where every run has one thread
            self.observe_run(len(batch), time.perf_counter() - started)
        finished = []
        rows = split_rows(ran)
        with self._lock:
            for request in {id(r): r for r, _ in batch}.values():
                request.runs.batches += 1
                for stage, seconds in ran.stages.items():
                    request.runs.stages[stage] = request.runs.stages.get(stage, 0.0) + seconds
            for (request, index), row in zip(batch, rows):
                if request.deliver(index, row):
                    finished.append(request)
        for request in finished:
            request.resolve()


def settings_for(config: ModelConfig, workers: int, batches_across_requests: bool,
                 wide_helpers_pinned: bool = False) -> SchedulerSettings:
    """A model's scheduler settings from predictor.yaml, its backend and the environment."""
    return SchedulerSettings(
        runs_on_free_cpus=server_environment().adaptive_threads == "auto",
        wide_helpers_pinned=wide_helpers_pinned,
        batch_size=config.batch_size,
        max_batch_tokens=config.max_batch_tokens or config.batch_size * DEFAULT_TOKENS_PER_TEXT,
        max_length=config.max_length,
        workers=workers,
        batches_across_requests=batches_across_requests,
        max_queue_texts=config.max_queue_texts,
    )
