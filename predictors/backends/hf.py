"""HuggingFace transformers on torch: on a GPU when torch sees one (CUDA), else on the CPU.

torch and transformers' model classes are imported when a model is loaded on this backend, not when
the registry is imported: a server serving only ONNX models never pays for torch.
"""

from __future__ import annotations

import inspect
from pathlib import Path

import numpy as np

from ..model import ModelConfig
from ..tasks import TaskHead
from .base import RANK_FRAMEWORK, Backend, BackendChoice, Candidates
from .devices import DeviceChoice, torch_device


class HFBackend(Backend):
    name = "hf"
    platform = "pytorch_transformers"
    files = "no model.safetensors"

    @classmethod
    def device(cls) -> DeviceChoice:
        import torch  # only asked for models served on torch

        return torch_device(torch.cuda.is_available())

    @classmethod
    def candidates(cls, config: ModelConfig, forced: bool = False) -> Candidates:
        """The HuggingFace weights, when present: always servable, after any gated or ungated export."""
        weights = config.hf_weights
        if weights is None:
            return Candidates([], [])
        reason = "forced by predictor.yaml" if forced else "HuggingFace weights present"
        return Candidates([BackendChoice(cls.name, weights, reason, rank=RANK_FRAMEWORK)], [])

    def __init__(self, config: ModelConfig, head: TaskHead, weights: Path, threads: tuple[int, ...] = (1,)) -> None:
        super().__init__(config, head, weights, threads)
        import torch  # optional heavy dependency: only for models served on torch
        import transformers

        self._torch = torch
        # torch's intra-op pool is process-wide; parallelism comes from several worker threads each
        # running a chunk, which beats one chunk on many threads for these small encoders. A run on
        # more threads happens only while its caller holds every compute slot (nothing else runs).
        self._narrow = min(threads)
        torch.set_num_threads(self._narrow)
        auto_class = getattr(transformers, head.hf_auto_class)
        self.device_choice = torch_device(torch.cuda.is_available())
        self.model = auto_class.from_pretrained(config.path).eval().to(self.device_choice.device)
        accepted = inspect.signature(self.model.forward).parameters
        self._inputs = tuple(
            n for n in ("input_ids", "attention_mask", "token_type_ids") if n in accepted
        )

    @property
    def input_names(self) -> tuple[str, ...]:
        return self._inputs

    def run(self, arrays: dict[str, np.ndarray], threads: int = 1) -> np.ndarray:
        torch = self._torch
        device = self.device_choice.device
        feeds = {k: torch.from_numpy(arrays[k]).to(device) for k in self._inputs if k in arrays}
        if threads != self._narrow:
            torch.set_num_threads(threads)
        try:
            with torch.inference_mode():
                output = self.model(**feeds)
        finally:
            if threads != self._narrow:
                torch.set_num_threads(self._narrow)
        return output[self.head.backend_output].cpu().numpy()
