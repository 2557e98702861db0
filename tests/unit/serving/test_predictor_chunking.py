"""Chunking and scheduling in TextPredictor. The chunk function is a stand-in (echoes its texts), so
these tests check only that chunks are planned, run off the event loop and put back in order; the
served models' chunking invariance is tested end to end in test_accuracy.py."""

from __future__ import annotations

import asyncio
import threading
from types import SimpleNamespace

import numpy as np

from predictors.serving.codec import TextRequest
from predictors.tasks import load_model_config
from predictors.serving.predictor import BatchRun, TextPredictor
from predictors.serving.scheduling.cache import build_cache
from tests.helpers import write_folder


def stand_in_predictor(tmp_path, batch_size=3):
    predictor = TextPredictor(load_model_config(write_folder(tmp_path / "m", predictor_yaml=f"batch_size: {batch_size}\n")))
    seen: list[tuple[list[str], str]] = []

    def echo_batch(texts, timer=None, threads=1):  # a stand-in for the tokenizer, backend and head
        seen.append((texts, threading.current_thread().name))
        outputs = {"label": np.array(texts, dtype=object), "score": np.array([len(t) for t in texts], np.float32),
                   "probabilities": np.array([[len(t), 0.0] for t in texts], np.float32)}
        tokens = np.array([len(t) for t in texts])
        return BatchRun(outputs["probabilities"], outputs, [t.startswith("long") for t in texts], tokens, int(tokens.max()) * len(texts))

    predictor.run_batch = echo_batch
    predictor.backend = SimpleNamespace(per_text=False, pins_wide_helpers=False)  # a stand-in: nothing is loaded
    return predictor, seen


TEXTS = ["long " * 9, "b", "long " * 3, "dd", "e" * 7, "f", "long " * 5, "hh"]


def test_chunks_are_batch_size_and_sorted_by_length(tmp_path):
    predictor, seen = stand_in_predictor(tmp_path)
    run = predictor.run_texts(TEXTS)
    outputs, truncated = run.outputs, run.truncated
    assert [len(chunk) for chunk, _ in seen] == [3, 3, 2]
    lengths = [len(t) for chunk, _ in seen for t in chunk]
    assert lengths == sorted(lengths)
    assert list(outputs["label"]) == TEXTS  # back in request order
    np.testing.assert_array_equal(outputs["score"], [len(t) for t in TEXTS])
    assert outputs["probabilities"].shape == (8, 2)
    assert truncated == [0, 2, 6]


def test_predict_runs_chunks_on_the_scheduler_worker_threads(tmp_path):
    predictor, seen = stand_in_predictor(tmp_path, batch_size=2)
    predictor.scheduler = predictor._scheduler()
    predictor.scheduler.start()
    result = asyncio.run(predictor.predict(TextRequest(texts=TEXTS, protocol="v2")))
    predictor.scheduler.stop()
    assert list(result.outputs["label"]) == TEXTS
    assert result.truncated == [0, 2, 6]
    assert all(len(chunk) <= 2 for chunk, _ in seen)
    assert all(name.startswith(f"infer-{predictor.name}") for _, name in seen)


def test_request_chunks_count_the_backend_runs_that_happened(tmp_path):
    """predictors_request_chunks: the batches a request's texts ran in, not texts / batch_size. With
    the response cache, repeated texts run once; one text per run (dynamic int8) runs each alone."""
    from prometheus_client import REGISTRY

    predictor, seen = stand_in_predictor(tmp_path, batch_size=2)
    predictor.cache = build_cache(predictor.config, predictor.config.path / "config.json", personal_data=False)
    predictor.scheduler = predictor._scheduler()
    predictor.scheduler.start()
    key = {"model": predictor.name, "version": predictor.config.version}

    def chunks_sum() -> float:
        return REGISTRY.get_sample_value("predictors_request_chunks_sum", key) or 0.0

    before = chunks_sum()
    asyncio.run(predictor.predict(TextRequest(texts=["same"] * 4, protocol="v2")))
    assert chunks_sum() - before == 1 == len(seen)  # one distinct text, one run (texts / batch_size says 2)
    predictor.scheduler.stop()

    predictor.backend = SimpleNamespace(per_text=True, pins_wide_helpers=False)  # as dynamic int8: each text runs alone
    predictor.scheduler = predictor._scheduler()
    predictor.scheduler.start()
    before = chunks_sum()
    asyncio.run(predictor.predict(TextRequest(texts=["x", "yy", "zzz"], protocol="v2")))
    predictor.scheduler.stop()
    assert chunks_sum() - before == 3 == len(seen) - 1
