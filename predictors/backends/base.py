"""The backend contract: token-id arrays (or, for backends that featurize texts themselves, the
cleaned texts) in, the task head's tensor out.

A backend declares what it is (`name`, `platform`), which files of a model folder it can serve and
how good each is (`candidates`, ranked), what it takes (`takes_texts`), how it runs texts
(`per_text`) and on which device (`device_choice`). choose_backend (backends/__init__.py) asks every
registered backend, so a new backend is one module and one registry entry, and nothing outside
backends/ names one.

Two kinds of input, declared by `takes_texts` once the backend is loaded:

- token ids (`takes_texts` False): the serving pipeline tokenizes and calls `run(arrays)` with the
  tokenizer's padded arrays (`input_names`);
- texts (`takes_texts` True): the backend featurizes them itself (a scikit-learn pipeline's
  vectorizer, an ONNX graph with a string input); the pipeline calls `run_texts(texts)` with the
  texts after the model's text cleaning, and no tokenizer is loaded.

Either way the output is what the task head decodes (`head.backend_output`: classification logits).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np

from ..model import ModelConfig
from ..tasks import TaskHead
from .devices import DeviceChoice

#: Ranks of candidates across backends, best first: a file that passed (or was forced past) its
#: accuracy gate, a file no gate covers, the unconverted framework weights.
RANK_GATED, RANK_UNGATED, RANK_FRAMEWORK = 0, 1, 2


@dataclass(frozen=True)
class BackendChoice:
    name: str
    weights: Path
    reason: str
    refused: tuple[str, ...] = ()  # files present but not served, with why (logged as warnings)
    rank: int = RANK_FRAMEWORK


@dataclass(frozen=True)
class Candidates:
    """What one backend can serve from a folder (best first) and what it refuses to, with why."""

    servable: list[BackendChoice]
    refused: list[str]


class Backend(ABC):
    """One runtime holding one model's weights. `run` is called from worker threads, concurrently."""

    name: ClassVar[str]
    platform: ClassVar[str]  # V2 model metadata "platform"
    files: ClassVar[str]  # the files it serves, for messages ("model.onnx or model.int8.onnx")

    def __init__(self, config: ModelConfig, head: TaskHead, weights: Path, threads: tuple[int, ...] = (1,)) -> None:
        self.config = config
        self.head = head
        self.weights = weights
        self.threads = threads  # the intra-op thread counts `run` is asked for (one per compute slot held)
        # True when each text runs alone (dynamic int8 picks one activation scale per run): the
        # scheduler then gains nothing from batching across requests and gives one text per batch.
        self.per_text = False
        # True when run_texts takes the cleaned texts (the backend featurizes them); False when run
        # takes the tokenizer's arrays.
        self.takes_texts = False
        # True when the runtime's helper threads for a run on every CPU are pinned to all CPUs but
        # the first (backends.cpus.wide_run_helper_cpus): such a run's own thread must then take the
        # first CPU, never one a helper spins on.
        self.pins_wide_helpers = False
        self.device_choice = DeviceChoice("cpu", "the CPU")

    @classmethod
    def device(cls) -> DeviceChoice:
        """The device a model on this backend would load onto here, without loading it."""
        return DeviceChoice("cpu", "the CPU")

    @classmethod
    @abstractmethod
    def candidates(cls, config: ModelConfig, forced: bool = False) -> Candidates:
        """The folder's files this backend can serve, best first, each with its rank and reason;
        `forced` (predictor.yaml names this backend) serves its first file whatever its gate says."""

    @classmethod
    def complete(cls, config: ModelConfig) -> ModelConfig:
        """`config` with what only this backend reads from the folder's files (a pipeline's labels
        and features), or unchanged; raises ModelConfigError for files it refuses to read."""
        return config

    @property
    def input_names(self) -> tuple[str, ...]:
        """Tokenizer outputs this model consumes (input_ids, attention_mask, token_type_ids...);
        none for a backend that takes texts."""
        return ()

    def run(self, arrays: dict[str, np.ndarray], threads: int = 1) -> np.ndarray:
        """The head's tensor (logits or last_hidden_state) for one padded chunk of token ids, computed
        on `threads` intra-op threads (one of self.threads). Called concurrently from worker threads;
        the caller holds `threads` compute slots, so the runs in flight never use more threads than CPUs."""
        raise NotImplementedError(f"the {self.name} backend takes texts (run_texts), not token ids")

    def run_texts(self, texts: list[str], threads: int = 1) -> np.ndarray:
        """The head's tensor ([n, C] logits) for cleaned texts, featurized by the backend itself, on
        `threads` threads as `run`."""
        raise NotImplementedError(f"the {self.name} backend takes token ids (run), not texts")
