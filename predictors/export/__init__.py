"""ONNX export: fp32 export (`fp32`), the int8 quantization ladder (`quantize`), the accuracy gate
(`gate`, running backends through the serving pipeline with `runner` on a `sample`), and the gated
export of a folder as named steps (`pipeline`). torch loads only when a model is exported."""

from .gate import GateFailed, GateResult, Thresholds
from .pipeline import ExportError, check_file, export_model
from .quantize import LADDER, ladder_settings
from .runner import prepare_transformers
from .sample import DEFAULT_MAX_TEXTS

__all__ = [
    "DEFAULT_MAX_TEXTS", "LADDER", "ExportError", "GateFailed", "GateResult", "Thresholds", "check_file", "export_model", "ladder_settings",
    "prepare_transformers",
]
