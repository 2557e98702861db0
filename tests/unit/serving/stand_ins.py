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


class StandInPredictor(TextPredictor):
    """TextPredictor with a stand-in runtime. Class-level switches let a test make the next loads
    fail (`fail_loads`), fail in the warm-up (`fail_warm_up`) or wait (`hold_loads`, an Event)."""

    fail_loads = False
    fail_warm_up = False
    hold_loads: threading.Event | None = None

    def _load_runtime(self) -> None:
        if self.hold_loads is not None:
            self.hold_loads.wait(30)
        if self.fail_loads:
            raise RuntimeError("stand-in load failure")
        self.choice = BackendChoice("stand-in", self.config.path / "config.json", "a stand-in for unit tests")
        self.backend = SimpleNamespace(per_text=False, takes_texts=False, device_choice=DeviceChoice("cpu", "stand-in"),
                                       input_names=())
        self.tokenizer = object()

    def _warm_up(self) -> None:
        if self.fail_warm_up:
            raise RuntimeError("stand-in warm-up failure")
        super()._warm_up()

    def run_batch(self, texts, timer=None) -> BatchRun:
        probabilities = np.array([[len(t) % 2, 1 - len(t) % 2] for t in texts], dtype=np.float32)
        outputs = {"label": np.array(texts, dtype=object), "score": np.array([len(t) for t in texts], np.float32),
                   "probabilities": probabilities}
        tokens = np.array([len(t.split()) + 2 for t in texts])
        return BatchRun(probabilities, outputs, [False] * len(texts), tokens, int(tokens.max()) * len(texts))


def stand_in_repository(root: Path, names: tuple[str, ...] = ("m",), predictor_yaml: str = "cache: {enabled: false}\n",
                        **settings) -> PredictorRepository:
    """A models folder of config-only model folders, served by StandInPredictor."""
    for name in names:
        write_folder(root / name, predictor_yaml=predictor_yaml)
    repository = PredictorRepository(root, predictor_class=StandInPredictor, **settings)
    repository.scan()
    return repository
