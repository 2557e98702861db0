"""Running one backend over texts in process, through the serving pipeline.

A `Runner` is a loaded `TextPredictor` for one backend and file: the same tokenizer call,
`max_length`, length-sorted chunks of `batch_size`, backend and task head that serve a request, so
what the gate measures is what a client gets. kserve, torch and transformers load with the first
runner, not at import.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from tqdm import tqdm

from ..model import ModelConfig
from ..serving.predictor import TextPredictor


def prepare_transformers() -> None:
    """Local folders only (never the model hub), and no per-load progress bars between log lines.
    Call before the first model loads."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    import transformers

    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()


@dataclass
class Run:
    """One pass of a backend over texts, in their order (a `predictors.tasks.GateRun`)."""

    raw: list[np.ndarray]  # per text: logits [C], or [real_tokens, D] for per-token outputs
    outputs: dict[str, np.ndarray]  # the task head's outputs (label/probabilities, embedding, entities)
    seconds: float

    @property
    def texts_per_second(self) -> float:
        return len(self.raw) / self.seconds if self.seconds > 0 else float("inf")


class Runner:
    """A loaded TextPredictor for one backend/file, running texts in process.

    `backend` forces a registered backend (with `onnx_path`, that ONNX file); None keeps the
    folder's own choice (what the server would serve).
    """

    def __init__(self, config: ModelConfig, backend: str | None = None, onnx_path: Path | None = None) -> None:
        changes: dict[str, Any] = {"workers": 1}
        if backend is not None:
            changes["backend"] = backend
        if onnx_path is not None:
            changes["onnx_file"] = str(Path(onnx_path).resolve())
        self.config = replace(config, **changes)
        self.predictor = TextPredictor(self.config, thread_counts=(1,))  # runs on one thread each, as served under load
        self.predictor.load()
        self.choice = self.predictor.choice

    def run(self, texts: Sequence[str], batch_size: int | None = None, workers: int = 1,
            progress: str | None = None) -> Run:
        """Run `texts` in length-sorted chunks of `batch_size` (the served batch size by default), on
        `workers` threads (each backend run uses one intra-op thread, as served). `progress` names a
        progress bar over the chunks (shown on a terminal only)."""
        size = batch_size or self.config.batch_size
        chunks = -(-len(texts) // size)
        with tqdm(total=chunks, desc=progress, unit="chunk", leave=False,
                  disable=True if progress is None else None) as bar:  # None: shown on a terminal only
            run = self.predictor.run_texts(texts, size, workers, keep_raw=True, on_chunk=bar.update)
        assert run.raw is not None
        return Run(run.raw, run.outputs, run.seconds)

    def throughput(self, texts: Sequence[str], batch_size: int) -> float:
        """Texts per second for `texts` in length-sorted chunks of `batch_size`, one thread."""
        self.run(texts[: max(1, batch_size)], batch_size)  # warm-up: first-run allocations
        return round(self.run(texts, batch_size).texts_per_second, 1)

    def close(self) -> None:
        self.predictor.stop()
        self.predictor.backend = None
