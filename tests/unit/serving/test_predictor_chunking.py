"""Chunking and scheduling in TextPredictor. The chunk function is a stand-in (echoes its texts), so
these tests check only that chunks are planned, run off the event loop and put back in order; the
served models' chunking invariance is tested end to end in test_accuracy.py."""

from __future__ import annotations

import asyncio
import threading

import numpy as np

from predictors.serving.codec import TextRequest
from predictors.tasks import load_model_config
from predictors.serving.predictor import TextPredictor
from tests.helpers import write_folder


def stand_in_predictor(tmp_path, batch_size=3):
    predictor = TextPredictor(load_model_config(write_folder(tmp_path / "m", predictor_yaml=f"batch_size: {batch_size}\n")))
    seen: list[tuple[list[str], str]] = []

    def echo_chunk(texts):
        seen.append((texts, threading.current_thread().name))
        return (
            {"label": np.array(texts, dtype=object), "score": np.array([len(t) for t in texts], np.float32),
             "probabilities": np.array([[len(t), 0.0] for t in texts], np.float32)},
            [t.startswith("long") for t in texts],
        )

    predictor._run_chunk = echo_chunk
    return predictor, seen


TEXTS = ["long " * 9, "b", "long " * 3, "dd", "e" * 7, "f", "long " * 5, "hh"]


def test_chunks_are_batch_size_and_sorted_by_length(tmp_path):
    predictor, seen = stand_in_predictor(tmp_path)
    outputs, truncated = predictor._predict_blocking(TEXTS)
    assert [len(chunk) for chunk, _ in seen] == [3, 3, 2]
    lengths = [len(t) for chunk, _ in seen for t in chunk]
    assert lengths == sorted(lengths)
    assert list(outputs["label"]) == TEXTS  # back in request order
    np.testing.assert_array_equal(outputs["score"], [len(t) for t in TEXTS])
    assert outputs["probabilities"].shape == (8, 2)
    assert truncated == [0, 2, 6]


def test_predict_runs_chunks_on_the_scheduler_worker_threads(tmp_path):
    predictor, seen = stand_in_predictor(tmp_path, batch_size=2)
    predictor.scheduler = predictor._start_scheduler()
    result = asyncio.run(predictor.predict(TextRequest(texts=TEXTS, protocol="v2")))
    predictor.scheduler.stop()
    assert list(result.outputs["label"]) == TEXTS
    assert result.truncated == [0, 2, 6]
    assert all(len(chunk) <= 2 for chunk, _ in seen)
    assert all(name.startswith(f"infer-{predictor.name}") for _, name in seen)
