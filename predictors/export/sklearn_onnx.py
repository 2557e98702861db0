"""A scikit-learn text pipeline as an ONNX graph, converted by skl2onnx and made to run as served.

The graph takes the cleaned texts as a [n, 1] string tensor (`text`) and featurizes them with ONNX
operators (StringNormalizer, Tokenizer, TfIdfVectorizer), then runs the classifier. skl2onnx's
output needs three changes to run here and to answer as the scikit-learn backend does:

- StringNormalizer (the vectorizer's lowercase=True) defaults to the en_US.UTF-8 locale, which
  slim images lack (onnxruntime then refuses the whole graph): set to C.UTF-8, which glibc builds in;
- scikit-learn's default token_pattern, `(?u)\\b\\w\\w+\\b` (runs of two or more Unicode word
  characters), becomes `[a-zA-Z0-9_]+` in skl2onnx, which keeps one-letter words (so bigrams
  differ) and splits accented words: replaced by the RE2 equivalent `[\\p{L}\\p{N}_]{2,}`;
- the outputs (a label and a ZipMap of probabilities, or decision scores) become one `logits`
  tensor [n, C] with the scikit-learn backend's convention (sklearn_pipeline.pipeline_logits):
  log(probabilities), or decision scores ([-d/2, d/2] for two classes).

What the converter gets wrong beyond that (skl2onnx 1.20 computes sublinear_tf as log(1 + tf)
instead of 1 + log(tf), for one) the accuracy gate finds: a graph that does not agree is not
installed, and the pipeline keeps serving from its skops file.
"""

from __future__ import annotations

import importlib.metadata
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from ..backends.sklearn_pipeline import MIN_PROBABILITY

OPSET = 17
INPUT = "text"
OUTPUT = "logits"
GRAPH_NAME = "text_pipeline"
LOCALE = "C.UTF-8"
SKLEARN_DEFAULT_TOKEN_PATTERN = r"(?u)\b\w\w+\b"
#: Runs of two or more Unicode letters, digits or underscores, as Python's `\w\w+` between `\b`s.
RE2_DEFAULT_TOKEN_PATTERN = r"[\p{L}\p{N}_]{2,}"


class ConversionError(RuntimeError):
    """skl2onnx cannot convert the pipeline; the message says which part and why."""


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"[:300]


def convert_pipeline(pipeline: Any, target: Path) -> dict[str, Any]:
    """Convert a loaded text pipeline (skops_files.load_pipeline) into `target`; returns how (for
    export_report.json)."""
    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import StringTensorType

    steps = " -> ".join(type(step).__name__ for _, step in pipeline.steps)
    version = importlib.metadata.version("skl2onnx")
    try:
        # No converter options: with options skl2onnx walks every attribute of the pipeline, the
        # vocabulary included, which takes seconds; the changes below are made on the graph instead.
        # A fixed graph name: skl2onnx's default is a random uuid.
        model = convert_sklearn(pipeline, name=GRAPH_NAME, initial_types=[(INPUT, StringTensorType([None, 1]))],
                                target_opset=OPSET)
    except Exception as exc:
        raise ConversionError(f"skl2onnx {version} cannot convert {steps}: {_first_line(exc)}") from exc
    _sort_opset_imports(model)
    fixes = [*_set_locale(model), *_default_token_pattern(model, pipeline.steps[0][1])]
    _logits_output(model, pipeline, steps)
    onnx.checker.check_model(model)
    onnx.save(model, str(target))
    return {"converter": "skl2onnx", "version": version, "opset": OPSET, "pipeline": steps,
            "input": f"{INPUT}: [n, 1] strings (the cleaned texts)", "output": f"{OUTPUT}: [n, classes]", "fixes": fixes}


def _sort_opset_imports(model: onnx.ModelProto) -> None:
    """skl2onnx lists the opset domains in set order, which follows the process's string hash seed:
    sorted, two exports of one pipeline are the same bytes (and the demo image is reused)."""
    imports = sorted(((o.domain, o.version) for o in model.opset_import))
    del model.opset_import[:]
    model.opset_import.extend(onnx.helper.make_opsetid(domain, version) for domain, version in imports)


def _set_locale(model: onnx.ModelProto) -> list[str]:
    fixes = []
    for node in model.graph.node:
        if node.op_type == "StringNormalizer":
            for attribute in [a for a in node.attribute if a.name == "locale"]:
                node.attribute.remove(attribute)
            node.attribute.append(helper.make_attribute("locale", LOCALE))
            fixes.append(f"StringNormalizer locale {LOCALE} (en_US.UTF-8 is missing from slim images)")
    return fixes


def _default_token_pattern(model: onnx.ModelProto, vectorizer: Any) -> list[str]:
    if getattr(vectorizer, "token_pattern", None) != SKLEARN_DEFAULT_TOKEN_PATTERN:
        return []
    fixes = []
    for node in model.graph.node:
        if node.op_type == "Tokenizer":
            for attribute in node.attribute:
                if attribute.name == "tokenexp":
                    attribute.s = RE2_DEFAULT_TOKEN_PATTERN.encode()
                    fixes.append(f"Tokenizer tokenexp {RE2_DEFAULT_TOKEN_PATTERN} (scikit-learn's default token_pattern)")
    return fixes


def _logits_output(model: onnx.ModelProto, pipeline: Any, steps: str) -> None:
    """Replace the graph's outputs by `logits` [n, C], as the scikit-learn backend computes them."""
    graph = model.graph
    classes = len(pipeline.classes_)
    outputs = {o.name: o for o in graph.output}
    zipmap = [node for node in graph.node if node.op_type == "ZipMap"]
    if zipmap:  # predict_proba's probabilities, as a list of maps: take the tensor the map is made of
        scores = zipmap[0].input[0]
        graph.node.remove(zipmap[0])
    elif len(graph.output) == 2:  # (label, scores)
        scores = graph.output[1].name
    else:
        raise ConversionError(f"skl2onnx's graph for {steps} has outputs {list(outputs)}; expected a label and scores")
    del graph.output[:]
    constant = lambda name, value: graph.initializer.append(  # noqa: E731
        numpy_helper.from_array(np.array(value, dtype=np.float32 if isinstance(value, float) else np.int64), name))
    if hasattr(pipeline, "predict_proba"):
        constant("min_probability", float(MIN_PROBABILITY))
        graph.node.extend([helper.make_node("Max", [scores, "min_probability"], ["floored_probabilities"]),
                           helper.make_node("Log", ["floored_probabilities"], [OUTPUT])])
    elif classes == 2:
        # The positive class's score d is the last column, whether skl2onnx writes [d] or [-d, d]
        # (its declared shape does not say which): logits [-d/2, d/2].
        for name, value in (("last", [-1]), ("end", [2**62]), ("columns", [1])):
            constant(name, value)
        constant("minus_half", -0.5)
        constant("half", 0.5)
        graph.node.extend([helper.make_node("Slice", [scores, "last", "end", "columns"], ["positive_score"]),
                           helper.make_node("Mul", ["positive_score", "minus_half"], ["negative_half"]),
                           helper.make_node("Mul", ["positive_score", "half"], ["positive_half"]),
                           helper.make_node("Concat", ["negative_half", "positive_half"], [OUTPUT], axis=1)])
    else:
        graph.node.append(helper.make_node("Identity", [scores], [OUTPUT]))
    graph.output.append(helper.make_tensor_value_info(OUTPUT, TensorProto.FLOAT, [None, classes]))
