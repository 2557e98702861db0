"""Int8 versions of an fp32 ONNX export, with onnxruntime's own tools.

Two steps, both offline and both from onnxruntime:

1. `optimize_for_cpu`: onnxruntime's transformer optimizer (`model_type="bert"`) fuses the eager
   attention of the export into its `Attention` kernel, the embeddings into
   `EmbedLayerNormalization`, bias+GELU and residual+LayerNorm.  The fused graph is what makes
   int8 pay off (attention in one int8 kernel).  If the optimizer fails, the plain export is
   quantized instead.
2. `quantize_int8`: dynamic int8 quantization (`quantize_dynamic`): weights int8 once, activation
   scales computed per run.  Measured on the demo classifiers, the plain defaults
   (per-tensor weights, embeddings quantized too) agree with torch on only 97-98 % of reviews;
   per-channel weight scales plus fp32 embeddings/pooler/classifier are what bring it to >= 99 %.

`LADDER` lists the configurations tried in order, fastest first; the export keeps the first one
that passes the accuracy gate and records which.  Every configuration leaves the embeddings
(`EmbedLayerNormalization`/`Gather`), the pooler and the classifier head (`Gemm`) in fp32.

Dynamic quantization picks each activation scale from the whole input tensor at run time, so in a
batch a text's output would depend on the texts batched with it (measured: up to ~0.07 in a class
probability between batch 1 and batch 8). The ONNX backend therefore runs each text of such a graph
alone (`predictors.backends.onnx`), and a text's answer does not depend on the rest of the request;
the gate runs the served pipeline, so it measures exactly what is served.
"""

from __future__ import annotations

import contextlib
import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterator


@dataclass(frozen=True)
class QuantConfig:
    name: str
    description: str
    op_types: tuple[str, ...] = ("MatMul", "Attention")
    per_channel: bool = True
    reduce_range: bool = False
    weight_type: str = "QInt8"
    #: Layers kept in fp32 besides embeddings and heads: "ffn_output" = each layer's FFN down
    #: projection (intermediate -> hidden), the MatMul with the widest activation range.
    keep_fp32: tuple[str, ...] = ()

    def settings(self) -> dict[str, Any]:
        """Everything that decides the output file (for the report and the build's recipe)."""
        return {
            **asdict(self),
            "op_types": list(self.op_types),
            "keep_fp32": ["embeddings", "pooler", "classifier", *self.keep_fp32],
            "method": "onnxruntime.quantization.quantize_dynamic",
            "activations": "QUInt8, dynamic per-tensor scale",
        }


LADDER: tuple[QuantConfig, ...] = (
    QuantConfig(
        "per-channel",
        "dynamic int8: per-channel int8 weights for every MatMul and the fused Attention; "
        "embeddings, pooler and classifier stay fp32",
    ),
    QuantConfig(
        "per-channel-ffn-out-fp32",
        "as per-channel, and each layer's FFN output projection stays fp32",
        keep_fp32=("ffn_output",),
    ),
    QuantConfig(
        "per-channel-matmul-only-ffn-out-fp32",
        "per-channel int8 MatMuls only (attention QKV and FFN output projections stay fp32)",
        op_types=("MatMul",),
        keep_fp32=("ffn_output",),
    ),
)

OPTIMIZER = {"tool": "onnxruntime.transformers.optimizer.optimize_model", "model_type": "bert", "opt_level": 1}


def ladder_settings() -> list[dict[str, Any]]:
    """The whole ladder, for a build recipe: changing any rung changes what gets built."""
    return [{"optimizer": OPTIMIZER, **q.settings()} for q in LADDER]


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """onnxruntime's tools log INFO/WARNING chatter on the root logger, and a module-level
    `logging.info` there installs a root handler (basicConfig) that would then print every INFO
    record of the process; keep the caller's logging as it was."""
    root = logging.getLogger()
    loggers = [root, logging.getLogger("onnxruntime"), logging.getLogger("onnx_model"),
               logging.getLogger("fusion_base"), logging.getLogger("onnx_model_bert")]
    levels = [lg.level for lg in loggers]
    handlers = list(root.handlers)
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)
        for handler in root.handlers[:]:
            if handler not in handlers:
                root.removeHandler(handler)


def _shape(hf_config: dict[str, Any]) -> tuple[int, int, int]:
    heads = int(hf_config.get("num_attention_heads") or hf_config.get("n_heads") or 0)
    hidden = int(hf_config.get("hidden_size") or hf_config.get("dim") or 0)
    intermediate = int(hf_config.get("intermediate_size") or hf_config.get("hidden_dim") or 0)
    return heads, hidden, intermediate


def optimize_or_plain(fp32: Path, work_dir: Path, model_dir: Path) -> tuple[Path, dict[str, Any]]:
    """The graph to quantize, and what the optimizer did (for the report): the fused graph where
    onnxruntime's optimizer knows the architecture, else the plain fp32 export."""
    fused_path = Path(work_dir) / "model.fp32-optimized.onnx"
    try:
        fused = optimize_for_cpu(fp32, fused_path, model_dir)
    except Exception as exc:  # an architecture the optimizer does not know: quantize the plain graph
        return fp32, {**OPTIMIZER, "error": f"{type(exc).__name__}: {exc}", "fused": {}}
    return fused_path, {**OPTIMIZER, "fused": fused}


def optimize_for_cpu(src: Path, dst: Path, model_dir: Path) -> dict[str, Any]:
    """Write onnxruntime's transformer-optimized (fused) version of `src` to `dst`.

    Returns what was fused. Raises whatever the optimizer raises (the caller falls back to `src`).
    """
    from onnxruntime.transformers.optimizer import optimize_model

    hf_config = json.loads((Path(model_dir) / "config.json").read_text())
    heads, hidden, _ = _shape(hf_config)
    with _quiet():
        model = optimize_model(str(src), model_type=OPTIMIZER["model_type"], num_heads=heads,
                               hidden_size=hidden, opt_level=OPTIMIZER["opt_level"])
        fused = {k: v for k, v in model.get_fused_operator_statistics().items() if v}
        model.save_model_to_file(str(dst))
    return fused


def _ffn_output_nodes(model: Any, intermediate: int) -> list[str]:
    """MatMul nodes whose constant weight maps the intermediate (FFN) width back to the hidden width."""
    shapes = {init.name: tuple(init.dims) for init in model.graph.initializer}
    names = []
    for node in model.graph.node:
        if node.op_type != "MatMul":
            continue
        for name in node.input[1:]:
            shape = shapes.get(name)
            if shape and len(shape) == 2 and (shape[0] == intermediate if intermediate else shape[0] > shape[1]):
                names.append(node.name)
    return names


def quantize_int8(src: Path, dst: Path, qconfig: QuantConfig, model_dir: Path) -> dict[str, Any]:
    """Write the dynamic int8 quantization of `src` (fp32, optimized or not) to `dst`."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    hf_config = json.loads((Path(model_dir) / "config.json").read_text())
    _, _, intermediate = _shape(hf_config)
    excluded: list[str] = []
    if "ffn_output" in qconfig.keep_fp32:
        excluded = _ffn_output_nodes(onnx.load(str(src), load_external_data=False), intermediate)
    with _quiet():
        quantize_dynamic(
            str(src),
            str(dst),
            op_types_to_quantize=list(qconfig.op_types),
            per_channel=qconfig.per_channel,
            reduce_range=qconfig.reduce_range,
            weight_type=getattr(QuantType, qconfig.weight_type),
            nodes_to_exclude=excluded,
            # Fused contrib ops (Attention, SkipLayerNormalization) have no ONNX shape inference;
            # their outputs are fp32.
            extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT},
        )
    return {"nodes_kept_fp32": len(excluded)}
