"""The all-CPU ONNX session's helper threads: pinned to the CPUs they are given, so a wide run's own
thread (on the first CPU) never shares its CPU with a spinning helper."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

from predictors.backends.onnx import session_options
from tests.helpers import wait_until

CPUS = sorted(os.sched_getaffinity(0))


def _matmul_graph(path: Path) -> Path:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 256])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 256])
    w = helper.make_tensor("w", TensorProto.FLOAT, [256, 256], np.ones(256 * 256, dtype=np.float32))
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"])], "g", [x], [y], [w])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8  # what opset 17 needs; onnx writes a newer one than this runtime reads
    onnx.save(model, path)
    return path


def _thread_cpus() -> dict[str, set[int]]:
    cpus = {}
    for tid in os.listdir("/proc/self/task"):
        try:
            cpus[tid] = os.sched_getaffinity(int(tid))
        except ProcessLookupError:  # a thread that ended meanwhile
            pass
    return cpus


@pytest.mark.skipif(len(CPUS) < 2, reason="needs 2 CPUs for a helper thread")
def test_a_wide_sessions_helper_thread_runs_only_on_the_cpu_it_was_given(tmp_path):
    graph = str(_matmul_graph(tmp_path / "matmul.onnx"))
    before = _thread_cpus()
    session = ort.InferenceSession(graph, session_options(2, helper_cpus=[CPUS[1]]), providers=["CPUExecutionProvider"])
    # The helper pins itself once it first runs, which on a busy machine can be a moment after the
    # session is made; other threads of this process (a test runner's) may come and go meanwhile.
    wait_until(lambda: {CPUS[1]} in [cpus for tid, cpus in _thread_cpus().items() if tid not in before], timeout=30)
    out = session.run(None, {"x": np.ones((4, 256), dtype=np.float32)})[0]
    assert np.allclose(out, 256.0)


def test_an_unpinned_wide_session_leaves_its_helpers_unpinned(tmp_path):
    graph = str(_matmul_graph(tmp_path / "matmul.onnx"))
    before = _thread_cpus()
    session = ort.InferenceSession(graph, session_options(2), providers=["CPUExecutionProvider"])
    helpers = {tid: cpus for tid, cpus in _thread_cpus().items() if tid not in before}
    assert helpers and all(cpus == set(CPUS) for cpus in helpers.values())
    assert session.get_inputs()[0].name == "x"
