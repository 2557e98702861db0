"""The kserve.Model for a text model: validate, schedule, answer; the stages are in their modules.

preprocess  codec.decode_request: V2 / V1 / gRPC -> TextRequest (a validated list of texts)
predict     cached texts from the response cache, the rest through the model's scheduler: batches
            of tokenize + backend + task head on worker threads (never on the event loop), back in
            request order
postprocess codec.encode_response: typed outputs -> V2 InferResponse or V1 predictions

`run_batch` and `run_texts` are the one way to run texts through a loaded model: the scheduler's
workers call `run_batch`; warm-up, calibration, the export gate and the drift reference call
`run_texts`, which runs them as a request alone would be chunked, without the queue.

Each text is cut to the model's character limit, then cleaned (predictor.yaml `preprocess:`, off by
default), then either tokenized for a backend that takes token ids or handed as it is to a backend
that featurizes texts itself (Backend.takes_texts: a scikit-learn pipeline, its ONNX export).
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Sequence, TypeVar

import numpy as np
import kserve
from kserve.protocol.infer_type import InferInput, InferRequest, InferResponse

from ..backends import BACKENDS, Backend, BackendChoice, choose_backend, cpu_limit, default_workers
from ..model import ModelConfig
from ..model.environment import server_environment
from ..tasks import TokenBatch, head_for
from . import codec, request_context
from .errors import ModelUnavailable
from .observability import metrics
from .observability.prediction_log import PredictionLog
from .scheduling import (
    DEFAULT_TIMEOUT_MS, REQUEST_TIMEOUT, RanBatch, RequestRuns, ResponseCache, Scheduler, SchedulerHooks,
    after_load_wait, assemble,
    build_cache, lookup_then_compute, request_timeout_seconds, settings_for,
)
from .scheduling.chunking import chunk_plan, reassemble, run_chunks

# A child of kserve's logger, so lines share its handler and format (kserve configures no root handler).
logger = logging.getLogger("kserve.predictors")

WARMUP_TEXT = "Warm-up request: the model answers before it reports ready."


class ModelLoadError(RuntimeError):
    """A model folder whose files cannot be loaded; the message names the file."""


@dataclass
class Predictions:
    request: codec.TextRequest
    outputs: dict[str, np.ndarray]
    truncated: list[int]


@dataclass
class BatchRun:
    """One batch of texts through the tokenizer, the backend and the task head."""

    array: np.ndarray  # the backend's output for the whole batch
    outputs: dict[str, np.ndarray]  # the head's outputs, one row per text
    truncated: list[bool]
    # Real tokens per text: the attention mask's row sums; for a backend that takes texts, the words
    # of each cleaned text (whitespace-separated), which nothing pads.
    tokens: np.ndarray
    padded_tokens: int  # token slots of the padded batch (texts x longest; the tokens' sum when unpadded)


@dataclass
class TextsRun:
    """Texts run as a request alone would be chunked, in text order."""

    outputs: dict[str, np.ndarray]
    truncated: list[int]  # indices of truncated texts
    raw: list[np.ndarray] | None  # per text, when asked: its backend output row (real tokens only, per-token heads)
    seconds: float


Result = TypeVar("Result")
#: How run_batch times its stages: (stage, function, *args) -> function(*args).
StageTimer = Callable[..., Any]


def untimed(stage: str, function: Callable[..., Result], *args: Any) -> Result:
    return function(*args)


class TextPredictor(kserve.Model):
    """Serves one model folder. `load()` blocks (weights, tokenizer, warm-up); the server runs it
    off the event loop and reports the model ready only once it has answered a warm-up request."""

    def __init__(self, config: ModelConfig, name: str | None = None, thread_counts: tuple[int, ...] | None = None) -> None:
        super().__init__(name or config.name)
        self.config = config
        self.thread_counts = thread_counts  # intra-op threads per run; None: decided at load (_thread_counts)
        self.cleaner = config.cleaner  # predictor.yaml `preprocess:`; does nothing when no step is set
        self.head = head_for(config)
        self.specs = self.head.outputs()
        self.workers = config.workers or default_workers()
        self.tokenizer = None
        self.backend: Backend | None = None
        self.choice: BackendChoice | None = None
        self.load_error: str | None = None
        self.load_seconds: float | None = None
        self.loaded_at: float | None = None  # Unix time the load finished (the OpenAI API's `created`)
        self._load_lock = threading.Lock()
        self.scheduler: Scheduler | None = None
        self.cache: ResponseCache | None = None
        self.prediction_log: PredictionLog | None = None
        # Admission for this loaded version: False once it is being unloaded or replaced; requests
        # already inside (inflight) finish, new ones are refused with a 503 naming the reason.
        self.accepting = True
        self.refusal = ""
        self.inflight = 0
        # Set when the model was freed to make room or after idling (not unloaded): a request that
        # found this instance before it stopped is sent on to the model's next load instead of a 503.
        self.evicted = False
        # The throughput an earlier instance of the same files measured (a model loaded again after an
        # eviction): seeds the queue bound without the calibration run, so a cold start is shorter.
        self.known_seconds_per_text: float | None = None

    # ---- lifecycle -------------------------------------------------------------------------
    def load(self) -> bool:
        with self._load_lock:
            if self.ready:
                return True
            try:
                self._load()
            except BaseException:
                self.stop()  # a failed load keeps no threads, weights or tokenizer
                raise
            return True

    def _load(self) -> None:
        started = time.monotonic()
        if self.cleaner.active and self.head.needs_offsets:
            raise ModelLoadError(
                f"model '{self.name}': preprocess in predictor.yaml rewrites the texts, so this task's character "
                "offsets would not point into the texts clients sent; remove preprocess for this model"
            )
        self._load_runtime()
        self.cache = build_cache(self.config, self.choice.weights, self.head.personal_data)
        self.prediction_log = PredictionLog.for_model(self.config, self.head)
        self._warm_up()
        self.scheduler = self._scheduler()
        if self.known_seconds_per_text:
            self.scheduler.observe_run(1, self.known_seconds_per_text)  # seeds the queue bound
        else:
            calibration = self.run_texts([WARMUP_TEXT * 5] * self.config.batch_size)
            self.scheduler.observe_run(self.config.batch_size, calibration.seconds)  # seeds the queue bound
        self.scheduler.start()  # its worker threads: only once everything else has loaded
        self.load_seconds = round(time.monotonic() - started, 2)
        self.loaded_at = time.time()
        self.ready = True
        logger.info(
            "model %s ready in %.1fs: task=%s backend=%s (%s) file=%s",
            self.name, self.load_seconds, self.config.task, self.choice.name,
            self.choice.reason, self.choice.weights.name,
        )

    def _thread_counts(self) -> tuple[int, ...]:
        """One intra-op thread per run, and all the CPUs for a batch that runs alone (when on)."""
        if self.thread_counts is not None:
            return self.thread_counts
        cpus = cpu_limit()
        return (1, cpus) if cpus > 1 and server_environment().adaptive_threads == "auto" else (1,)

    def _load_runtime(self) -> None:
        """The backend the folder's files call for, and the tokenizer (unless the backend takes texts)."""
        self.choice = choose_backend(self.config)
        for refused in self.choice.refused:
            logger.warning("model %s: not serving %s", self.name, refused)
        try:
            self.backend = BACKENDS[self.choice.name](self.config, self.head, self.choice.weights, threads=self._thread_counts())
        except Exception as exc:
            raise ModelLoadError(f"cannot load {self.choice.weights}: {exc}") from exc
        if self.backend.takes_texts:
            return
        try:
            # A tokenizer.json is read by PreTrainedTokenizerFast alone (the same encodings);
            # AutoTokenizer also imports transformers' config code, which imports torch.
            if (self.config.path / "tokenizer.json").is_file():
                from transformers import PreTrainedTokenizerFast

                self.tokenizer = PreTrainedTokenizerFast.from_pretrained(self.config.path)
            else:
                from transformers import AutoTokenizer

                self.tokenizer = AutoTokenizer.from_pretrained(self.config.path)
        except Exception as exc:
            raise ModelLoadError(
                f"cannot load a tokenizer from {self.config.path} (tokenizer.json, vocab.txt...): {exc}"
            ) from exc

    def _warm_up(self) -> None:
        """One full request through the same codec, chunking and backend a client's goes through."""
        request = InferRequest(
            model_name=self.name,
            infer_inputs=[InferInput(codec.INPUT_NAME, [1], codec.INPUT_DATATYPE, [WARMUP_TEXT])],
            request_id="warm-up",
        )
        text_request = codec.decode_request(request, self.specs, self.config.max_batch)
        run = self.run_texts(text_request.texts)
        response = codec.encode_response(
            text_request, run.outputs, self.specs, self.name, self.config.version, run.truncated
        )
        response.to_rest()

    def stop(self) -> None:
        """Free the runtime. Callers drain first (`drain`), so no accepted request is cancelled."""
        self.ready = False
        self.accepting = False
        if self.scheduler is not None:
            self.scheduler.stop()
            self.scheduler = None
        if self.cache is not None:
            self.cache.clear()
        self.backend = None
        self.tokenizer = None

    def refuse_new_requests(self, reason: str, evicted: bool = False) -> None:
        self.accepting = False
        self.refusal = reason
        self.evicted = evicted

    @property
    def idle(self) -> bool:
        """No request inside and no text queued or being let in: nothing an eviction could fail."""
        scheduler = self.scheduler
        waiting = scheduler.queued_texts + scheduler.door.arriving_texts if scheduler is not None else 0
        return self.inflight == 0 and waiting == 0

    @property
    def weights_bytes(self) -> int:
        """The size of the weights file it serves (0 before a backend is chosen)."""
        try:
            return self.choice.weights.stat().st_size if self.choice else 0
        except OSError:
            return 0

    async def drain(self, timeout: float) -> bool:
        """Wait until the requests already accepted have answered (at most `timeout` seconds)."""
        deadline = time.monotonic() + timeout
        while self.inflight and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        return self.inflight == 0

    async def __call__(self, body: Any, headers: dict[str, str] | None = None, **kwargs: Any) -> Any:
        if not self.accepting:
            raise ModelUnavailable(self.refusal or f"model '{self.name}' version {self.config.version} is not serving")
        self.inflight += 1
        try:
            return await super().__call__(body, headers, **kwargs)
        finally:
            self.inflight -= 1

    # ---- metadata ----------------------------------------------------------------------------
    def get_input_types(self) -> list[dict[str, Any]]:
        return codec.input_metadata()

    def get_output_types(self) -> list[dict[str, Any]]:
        return [spec.metadata() for spec in self.specs]

    @property
    def platform(self) -> str:
        backend = BACKENDS.get(self.choice.name) if self.choice else None
        return backend.platform if backend else ""

    def describe(self) -> dict[str, Any]:
        """Everything a client or operator may want to know, served at /v2/models/<name>/config."""
        takes_texts = bool(self.backend and self.backend.takes_texts)
        return {
            "name": self.name,
            "version": self.config.version,
            "description": self.config.description,
            "task": self.config.task,
            "platform": self.platform,
            "backend": self.choice.name if self.choice else None,
            "backend_reason": self.choice.reason if self.choice else None,
            "weights": self.choice.weights.name if self.choice else None,
            "device": self.backend.device_choice.device if self.backend else None,
            "device_reason": self.backend.device_choice.reason if self.backend else None,
            "batch_size": self.config.batch_size,
            "max_batch": self.config.max_batch,
            "max_length": None if takes_texts else self.config.max_length,
            "max_text_chars": self.config.text_char_limit,
            "inputs_taken": ("texts" if takes_texts else "token ids") if self.backend else None,
            "preprocess": self.cleaner.steps(),
            "features": self.config.features,
            "training": self.config.training_metadata(),
            "workers": self.workers,
            "timeout_ms": self.config.timeout_ms or DEFAULT_TIMEOUT_MS,
            "scheduler": self.scheduler.describe() if self.scheduler else None,
            "cache": self.cache.stats() if self.cache else None,
            "ready": self.ready,
            "load_seconds": self.load_seconds,
            "inputs": self.get_input_types(),
            "outputs": self.get_output_types(),
            "metrics": self.config.recorded_metrics(),
            **self.head.describe(),
        }

    # ---- request path ------------------------------------------------------------------------
    def validate(self, payload: Any) -> Any:
        # kserve's validate() inspects raw dicts; preprocess already produced a validated TextRequest.
        return payload

    async def preprocess(self, payload: InferRequest | dict, headers: dict[str, str] | None = None) -> codec.TextRequest:
        request = codec.decode_request(payload, self.specs, self.config.max_batch)
        request.request_id = request_context.adopt(request.request_id, len(request.texts), metrics.labels(self))
        deadline = request_timeout_seconds(payload, headers, self.config.timeout_ms or DEFAULT_TIMEOUT_MS)
        REQUEST_TIMEOUT.set(after_load_wait(deadline))  # a first request's wait for the load counts
        return request

    async def predict(self, payload: codec.TextRequest, headers: dict[str, str] | None = None) -> Predictions:
        """Cached texts from the cache, the rest through the model's scheduler (queue, fair turns,
        token-budget batches on worker threads, deadline from preprocess), back in request order."""
        texts, timeout = payload.texts, REQUEST_TIMEOUT.get()
        self.scheduler.arrived(len(texts))
        runs = RequestRuns()
        rows = await lookup_then_compute(
            self.cache, texts, lambda missing: self.scheduler.submit(missing, timeout, runs), runs,
            key=self._cache_key if self.cleaner.active else None,
        )
        metrics.observe_plan(self, len(texts), runs.batches)
        request_context.record_run(runs.timings(), sum(row.tokens for row in rows), runs.cached_texts)
        outputs, truncated = assemble(rows)
        return Predictions(payload, outputs, truncated)

    def _scheduler(self) -> Scheduler:
        """Workers run `_run_scheduled` on batches the scheduler forms; backends that run each text
        alone (dynamic int8) gain nothing from batching across requests and get one text per batch."""
        queued = metrics.QUEUED.labels(*metrics.labels(self))
        return Scheduler(
            self.name,
            self._run_scheduled,
            settings_for(self.config, self.workers, batches_across_requests=not self.backend.per_text,
                         wide_helpers_pinned=self.backend.pins_wide_helpers),
            SchedulerHooks(
                enqueued=queued.inc,
                started=lambda seconds, texts: metrics.observe_queue_wait(self, seconds, texts),
                dropped=queued.dec,
            ),
        )

    async def postprocess(
        self, result: Predictions, headers: dict[str, str] | None = None, response_headers: dict[str, str] | None = None
    ) -> InferResponse | dict[str, Any]:
        metrics.observe_predictions(self, result.outputs, len(result.truncated))
        latency_ms = request_context.latency_ms()
        if self.prediction_log is not None:
            context = request_context.current()
            self.prediction_log.offer(context.request_id if context else result.request.request_id,
                                      context.protocol if context else None,
                                      result.request.texts, result.outputs, result.truncated, latency_ms)
        return codec.encode_response(
            result.request, result.outputs, self.specs, self.name, self.config.version, result.truncated,
            latency_ms=latency_ms,
        )

    def _cache_key(self, text: str) -> str:
        """The response cache's key for a text when the model cleans its texts: the cleaned text, for
        a text that needs no cut before or after cleaning (its answer depends on the cleaned text
        alone: texts that clean alike get the same answer); else the text as sent, which is longer
        than the character limit and so never equals a cleaned key."""
        limit = self.config.text_char_limit
        if len(text) > limit:
            return text
        cleaned = self.cleaner(text)
        return cleaned if len(cleaned) <= limit else text

    # ---- running texts ---------------------------------------------------------------------
    def run_batch(self, texts: list[str], timer: StageTimer = untimed, threads: int = 1) -> BatchRun:
        """Prepare (cut, clean, tokenize), run and decode one batch on the calling thread, the backend on
        `threads` intra-op threads (the caller holds that many compute slots); `timer` times each stage
        ("tokenize" is the cleaning alone for a backend that takes texts)."""
        if self.backend.takes_texts:
            batch = timer("tokenize", self._prepare_texts, texts)
            array = timer("backend", self.backend.run_texts, batch.texts, threads)
            outputs = timer("postprocess", self.head.decode, array, batch)
            words = np.array([len(text.split()) for text in batch.texts], dtype=np.int64)
            return BatchRun(array, outputs, batch.truncated, words, int(words.sum()))
        batch = timer("tokenize", self._tokenize, texts)
        array = timer("backend", self.backend.run, batch.arrays, threads)
        outputs = timer("postprocess", self.head.decode, array, batch)
        mask = batch.arrays["attention_mask"]
        return BatchRun(array, outputs, batch.truncated, mask.sum(axis=1), int(mask.size))

    def run_texts(self, texts: Sequence[str], batch_size: int | None = None, workers: int = 1, keep_raw: bool = False,
                  on_chunk: Callable[[], None] | None = None) -> TextsRun:
        """`texts` in length-sorted chunks of `batch_size` (the served batch size by default), as a
        request alone would be, on the calling thread or `workers` threads; no queue, no metrics.
        `keep_raw` also returns each text's backend output; `on_chunk` is called after each chunk."""
        plan = chunk_plan(texts, batch_size or self.config.batch_size)
        started = time.perf_counter()
        batches = run_chunks(lambda chunk: self.run_batch([texts[i] for i in chunk]), plan, workers, on_chunk)
        seconds = time.perf_counter() - started
        outputs, truncated = reassemble(len(texts), plan, [(b.outputs, b.truncated) for b in batches])
        raw: list[np.ndarray] | None = None
        if keep_raw:
            raw = [np.empty(0)] * len(texts)
            for chunk, batch in zip(plan, batches):
                for row, i in enumerate(chunk):
                    values = batch.array[row][: int(batch.tokens[row])] if self.head.per_token_output else batch.array[row]
                    raw[i] = np.asarray(values, dtype=np.float32)
        return TextsRun(outputs, truncated, raw, seconds)

    def _run_scheduled(self, texts: list[str], threads: int = 1) -> RanBatch:
        """One batch a scheduler worker took, its stages and tokens observed in the metrics and
        returned, so that the scheduler can charge them to the requests whose texts it ran."""
        stages: dict[str, float] = {}

        def timed(stage: str, function: Callable[..., Result], *args: Any) -> Result:
            started = time.perf_counter()
            try:
                return function(*args)
            finally:
                stages[stage] = time.perf_counter() - started
                metrics.observe_stage(self, stage, stages[stage])

        run = self.run_batch(texts, timed, threads)
        metrics.observe_tokens(self, run.tokens, run.padded_tokens)
        return RanBatch(run.outputs, run.truncated, [int(t) for t in run.tokens], stages)

    def _cut_and_clean(self, texts: list[str]) -> tuple[list[str], list[bool]]:
        """Each text cut to the character limit (and flagged when cut), then cleaned."""
        char_limit = self.config.text_char_limit
        cut = [len(text) > char_limit for text in texts]
        texts = [text[:char_limit] if too_long else text for text, too_long in zip(texts, cut)]
        return self.cleaner.clean(texts), cut

    def _prepare_texts(self, texts: list[str]) -> TokenBatch:
        """For a backend that takes texts: cut and cleaned, no token arrays."""
        cleaned, cut = self._cut_and_clean(texts)
        return TokenBatch(texts=cleaned, arrays={}, offsets=None, special_tokens=None, truncated=cut)

    def _tokenize(self, texts: list[str]) -> TokenBatch:
        needs_offsets = self.head.needs_offsets
        # The tokenizer reads a whole text before truncating (a 10 MB text took 19 s and 2 GB): first
        # cut what max_length tokens cannot reach, and report those texts as truncated.
        texts, cut = self._cut_and_clean(texts)
        encoded = self.tokenizer(
            texts,
            padding=True,
            truncation=True,
            max_length=self.config.max_length,
            return_tensors="np",
            return_token_type_ids="token_type_ids" in self.backend.input_names,
            return_offsets_mapping=needs_offsets,
            return_special_tokens_mask=needs_offsets,
        )
        arrays = {
            name: np.ascontiguousarray(encoded[name], dtype=np.int64)
            for name in ("input_ids", "attention_mask", "token_type_ids")
            if name in encoded
        }
        return TokenBatch(
            texts=texts,
            arrays=arrays,
            offsets=encoded["offset_mapping"] if needs_offsets else None,
            special_tokens=encoded["special_tokens_mask"] if needs_offsets else None,
            truncated=[
                was_cut or token_cut
                for was_cut, token_cut in zip(
                    cut,
                    [len(e.overflowing) > 0 for e in encoded.encodings]
                    if encoded.encodings  # fast tokenizers report what truncation cut off
                    else [len(self.tokenizer(t)["input_ids"]) > self.config.max_length for t in texts],
                )
            ],
        )
