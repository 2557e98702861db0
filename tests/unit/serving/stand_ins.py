"""Stand-ins for unit tests of the serving layer: a TextPredictor whose backend and tokenizer are
replaced by an echo (label = the text, score = its length), so the repository, routes and
transports run for real without weights."""

from __future__ import annotations

import threading
from pathlib import Path
from types import SimpleNamespace

import numpy as np

from predictors.backends import BackendChoice
from predictors.backends.devices import DeviceChoice
from predictors.serving.predictor import BatchRun, TextPredictor
from predictors.serving.repository import PredictorRepository
from tests.helpers import write_folder


class StandInTokenizer:
    """What the serving layer asks of a tokenizer outside the backend: its vocabulary size, and
    decoding ids (id n is the word `w<n>`; ids 0 and 1 are special tokens, dropped when asked)."""

    def __len__(self) -> int:
        return 100

    def decode(self, ids, skip_special_tokens=False) -> str:
        return " ".join(f"w{i}" for i in ids if not (skip_special_tokens and i < 2))


class StandInPredictor(TextPredictor):
    """TextPredictor with a stand-in runtime. Class-level switches let a test make the next loads
    fail (`fail_loads`), fail in the warm-up (`fail_warm_up`), wait (`hold_loads`, an Event), or
    hold real memory (`holds_bytes`, written so it is resident) for the memory budget to measure;
    `loads` counts the loads begun, per model name. A classification folder answers label = the
    text, score = its length; an embedding folder (architecture BertModel) a unit vector of the
    text's length and word count; tokens per text are its words + 2."""

    fail_loads = False
    fail_warm_up = False
    hold_loads: threading.Event | None = None
    holds_bytes = 0
    loads: dict[str, int] = {}

    def _load_runtime(self) -> None:
        StandInPredictor.loads[self.name] = StandInPredictor.loads.get(self.name, 0) + 1
        if self.hold_loads is not None:
            self.hold_loads.wait(30)
        if self.fail_loads:
            raise RuntimeError("stand-in load failure")
        self.ballast = b"\x01" * self.holds_bytes  # touched pages: resident, as weights are
        self.choice = BackendChoice("stand-in", self.config.path / "config.json", "a stand-in for unit tests")
        self.backend = SimpleNamespace(per_text=False, takes_texts=False, pins_wide_helpers=False, device_choice=DeviceChoice("cpu", "stand-in"),
                                       input_names=())
        self.tokenizer = StandInTokenizer()

    def _warm_up(self) -> None:
        if self.fail_warm_up:
            raise RuntimeError("stand-in warm-up failure")
        super()._warm_up()

    def stop(self) -> None:
        super().stop()
        self.ballast = b""

    def run_batch(self, texts, timer=None, threads=1) -> BatchRun:
        tokens = np.array([len(t.split()) + 2 for t in texts])
        if self.head.embedding_output:
            vectors = np.zeros((len(texts), self.head.dimension), np.float32)
            vectors[:, 0], vectors[:, 1] = [len(t) + 1 for t in texts], [len(t.split()) for t in texts]
            vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
            return BatchRun(vectors, {self.head.embedding_output: vectors}, [False] * len(texts), tokens,
                            int(tokens.max()) * len(texts))
        probabilities = np.array([[len(t) % 2, 1 - len(t) % 2] for t in texts], dtype=np.float32)
        outputs = {"label": np.array(texts, dtype=object), "score": np.array([len(t) for t in texts], np.float32),
                   "probabilities": probabilities}
        return BatchRun(probabilities, outputs, [False] * len(texts), tokens, int(tokens.max()) * len(texts))


def stand_in_repository(root: Path, names: tuple[str, ...] = ("m",), predictor_yaml: str = "cache: {enabled: false}\n",
                        embedders: tuple[str, ...] = (), **settings) -> PredictorRepository:
    """A models folder of config-only model folders, served by StandInPredictor: classification
    models `names`, embedding models `embedders`."""
    for name in names:
        write_folder(root / name, predictor_yaml=predictor_yaml)
    for name in embedders:
        write_folder(root / name, architecture="BertModel", labels=(), predictor_yaml=predictor_yaml)
    repository = PredictorRepository(root, predictor_class=StandInPredictor, **settings)
    repository.scan()
    return repository
