"""Export a HuggingFace text model folder to a single-file fp32 ONNX graph, verified against torch.

The ONNX Runtime backend serves a plain `model.onnx` next to the HuggingFace files, so one folder
can be served by torch or by onnxruntime. The export is checked numerically right after it is
written: a silently wrong graph (one that ignores the attention mask, say) would otherwise only
show up as bad predictions at serving time.

Choices, and why:

* `attn_implementation="eager"`: the explicit matmul/softmax attention is what onnxruntime's
  transformer optimizer fuses into its `Attention` kernel; SDPA exports as a pattern it does not
  recognise.
* The legacy TorchScript exporter (`dynamo=False`): the dynamo exporter needs `onnxscript` and
  writes weights as external data, while the serving side expects one self-contained file.
* Inputs are exactly what the folder's tokenizer returns (`input_ids`, `attention_mask`, and
  `token_type_ids` when the tokenizer produces it), all int64 with dynamic batch and sequence axes,
  so the server feeds the tokenizer output straight in.
* One named output, the task head's `backend_output` (`logits` or `last_hidden_state`) of its
  `hf_auto_class`, produced by a small wrapper module, so the graph does not carry every optional
  output of the HuggingFace model.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch import nn

from ..tasks import TASKS, TaskHead

OPSET = 17
#: How model.onnx is made, as recorded in export_report.json.
FP32_SETTINGS: dict[str, Any] = {"exporter": "torch.onnx.export(dynamo=False)", "opset": OPSET,
                                 "attn_implementation": "eager"}

#: Texts of clearly different lengths: padded together they exercise the attention mask, which is
#: the part of an export most likely to go wrong.
VERIFY_TEXTS: tuple[str, ...] = (
    "Short one.",
    "A medium length sentence, with some punctuation, to check the export.",
    "This is a considerably longer piece of text. It has several sentences so "
    "that its token count is well above the other two samples, which forces "
    "real padding in the batch. If the exported graph ignored the attention "
    "mask, the outputs of the shorter samples would differ from torch.",
)

#: Maximum absolute difference accepted between onnxruntime and torch.
MAX_ABS_DIFF = 1e-3


class _SingleOutput(nn.Module):
    """Wrap a HuggingFace model so it takes positional tensors and returns one.

    The legacy exporter traces `forward` with positional arguments; mapping them back to keyword
    arguments by name keeps the graph inputs identical to the tokenizer's output names, whatever
    subset the tokenizer returns.
    """

    def __init__(self, model: nn.Module, input_names: Sequence[str], output_name: str) -> None:
        super().__init__()
        self.model = model
        self.input_names = tuple(input_names)
        self.output_name = output_name

    def forward(self, *tensors: torch.Tensor) -> torch.Tensor:
        outputs = self.model(**dict(zip(self.input_names, tensors)), return_dict=True)
        return outputs[self.output_name]


def _head(task: str) -> type[TaskHead]:
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; expected one of {sorted(TASKS)}")
    return TASKS[task]


def _load(model_dir: Path, head: type[TaskHead]) -> tuple[nn.Module, Any]:
    """The tokenizer and the head's HuggingFace model (eval mode, eager attention)."""
    import transformers

    tokenizer = transformers.AutoTokenizer.from_pretrained(str(model_dir))
    model = getattr(transformers, head.hf_auto_class).from_pretrained(
        str(model_dir), attn_implementation="eager", dtype=torch.float32
    )
    model.eval()
    return model, tokenizer


def _encode(tokenizer: Any, texts: Sequence[str]) -> dict[str, torch.Tensor]:
    """Tokenize `texts` padded together, as int64 tensors."""
    encoded = tokenizer(list(texts), padding=True, truncation=True, return_tensors="pt")
    return {name: tensor.to(torch.int64) for name, tensor in encoded.items()}


def export_onnx(model_dir: Path, task: str, out_path: Path, opset: int = OPSET) -> Path:
    """Export the model in `model_dir` to `out_path` and verify it.

    `task` names the task head, which picks the model class and the output. The file is written to
    a temporary name and renamed once verified, so a failed export never leaves a broken file
    behind. Raises `ValueError` for an unknown task and `RuntimeError` when onnxruntime disagrees
    with torch.
    """
    head = _head(task)
    model_dir, out_path = Path(model_dir), Path(out_path)
    model, tokenizer = _load(model_dir, head)

    # Trace with a padded batch of unequal lengths, so no shape or "mask is all ones" shortcut gets
    # baked into the graph as a constant.
    sample = _encode(tokenizer, VERIFY_TEXTS[:2])
    input_names = list(sample)
    output_name = head.backend_output
    wrapper = _SingleOutput(model, input_names, output_name).eval()
    dynamic_axes: dict[str, dict[int, str]] = {name: {0: "batch", 1: "sequence"} for name in input_names}
    dynamic_axes[output_name] = {0: "batch", 1: "sequence"} if head.per_token_output else {0: "batch"}

    out_path.parent.mkdir(parents=True, exist_ok=True)
    tmp_path = out_path.with_name(out_path.name + ".tmp")
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer / deprecation chatter of the legacy exporter
        torch.onnx.export(
            wrapper,
            tuple(sample[name] for name in input_names),
            str(tmp_path),
            input_names=input_names,
            output_names=[output_name],
            dynamic_axes=dynamic_axes,
            opset_version=opset,
            do_constant_folding=True,
            dynamo=False,
        )
    try:
        verify_onnx(tmp_path, model, tokenizer, task)
    except Exception:
        tmp_path.unlink(missing_ok=True)
        raise
    os.replace(tmp_path, out_path)
    return out_path


def verify_onnx(
    onnx_path: Path, model: nn.Module, tokenizer: Any, task: str, texts: Sequence[str] = VERIFY_TEXTS
) -> float:
    """Compare onnxruntime with torch on `texts` padded together.

    For per-token outputs only real (non-padding) positions are compared: the values at padded
    positions are never used downstream. Returns the maximum absolute difference; raises
    `RuntimeError` if it is `MAX_ABS_DIFF` or more, or if the graph's inputs/outputs are not the
    expected ones.
    """
    import onnxruntime as ort

    head = _head(task)
    output_name = head.backend_output
    encoded = _encode(tokenizer, texts)
    options = ort.SessionOptions()
    options.intra_op_num_threads = max(1, min(2, os.cpu_count() or 1))
    session = ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])
    graph_inputs = [i.name for i in session.get_inputs()]
    graph_outputs = [o.name for o in session.get_outputs()]
    if sorted(graph_inputs) != sorted(encoded) or graph_outputs != [output_name]:
        raise RuntimeError(
            f"{onnx_path}: graph inputs {graph_inputs} / outputs {graph_outputs} do not match "
            f"tokenizer outputs {sorted(encoded)} / expected output [{output_name!r}]"
        )
    (actual,) = session.run(None, {name: encoded[name].numpy() for name in graph_inputs})
    with torch.inference_mode():
        expected = model(**encoded, return_dict=True)[output_name].float().numpy()
    if actual.shape != expected.shape:
        raise RuntimeError(f"{onnx_path}: onnxruntime shape {actual.shape} != torch shape {expected.shape}")
    diff = np.abs(actual - expected)
    if head.per_token_output:
        diff = diff[encoded["attention_mask"].numpy().astype(bool)]
    max_diff = float(diff.max())
    if not max_diff < MAX_ABS_DIFF:
        raise RuntimeError(f"{onnx_path}: onnxruntime differs from torch by {max_diff:.2e} (limit {MAX_ABS_DIFF:.0e})")
    return max_diff
