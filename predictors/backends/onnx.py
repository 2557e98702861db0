"""ONNX Runtime (CPU)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort

from ..config import ModelConfig
from ..tasks import TaskHead
from .base import Backend


class OnnxBackend(Backend):
    name = "onnx"
    platform = "onnxruntime_onnx"

    def __init__(self, config: ModelConfig, head: TaskHead, weights: Path, threads: int = 1) -> None:
        super().__init__(config, head, weights, threads)
        options = ort.SessionOptions()
        # One intra-op thread per run: concurrent runs from the worker threads use the cores, and
        # two single-thread runs outpace one two-thread run for these models.
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.session = ort.InferenceSession(str(weights), options, providers=["CPUExecutionProvider"])
        self._inputs = tuple(i.name for i in self.session.get_inputs())
        outputs = [o.name for o in self.session.get_outputs()]
        self._output = head.backend_output if head.backend_output in outputs else outputs[0]

    @property
    def input_names(self) -> tuple[str, ...]:
        return self._inputs

    def run(self, arrays: dict[str, np.ndarray]) -> np.ndarray:
        feeds = {name: arrays[name] for name in self._inputs}
        return self.session.run([self._output], feeds)[0]
