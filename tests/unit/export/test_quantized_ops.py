"""A file's precision is read from its graph: one op set for the backend (per-text runs) and the
export (`--check` picks the int8 or fp32 gate). Tiny graphs built with onnx.helper."""

from __future__ import annotations

import onnx
from onnx import TensorProto, helper

from predictors.backends.onnx import DYNAMIC_QUANT_OPS, QUANTIZED_OPS, graph_op_types, is_quantized, quantizes_activations


def graph_file(path, op_types):
    nodes, previous = [], "x"
    for i, op in enumerate(op_types):
        nodes.append(helper.make_node(op, [previous], [f"t{i}"], domain="com.microsoft" if op.startswith(("Q", "Dynamic", "MatMulInteger")) else ""))
        previous = f"t{i}"
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                              [helper.make_tensor_value_info(previous, TensorProto.FLOAT, [1])])
    onnx.save(helper.make_model(graph), str(path))
    return path


def test_dynamic_ops_are_quantized_ops():
    assert DYNAMIC_QUANT_OPS < QUANTIZED_OPS


def test_fp32_static_and_dynamic_graphs(tmp_path):
    fp32 = graph_file(tmp_path / "fp32.onnx", ["Relu", "Softmax"])
    assert graph_op_types(fp32) == {"Relu", "Softmax"}
    assert not is_quantized(fp32) and not quantizes_activations(fp32)
    weights_only = graph_file(tmp_path / "nbits.onnx", ["Relu", "MatMulNBits"])  # 4-bit weights, fp activations
    assert is_quantized(weights_only) and not quantizes_activations(weights_only)
    dynamic = graph_file(tmp_path / "int8.onnx", ["DynamicQuantizeLinear", "MatMulInteger"])
    assert is_quantized(dynamic) and quantizes_activations(dynamic)
