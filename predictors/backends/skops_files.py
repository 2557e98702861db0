"""scikit-learn text pipelines in skops files: the trusted-type list, reading a file without loading
it, and loading it safely. Nothing here unpickles: a skops file is a zip of a JSON schema and .npy
arrays (read with allow_pickle=False), and loading it constructs only the types the schema names.

Every type a file names is checked against TRUSTED_TYPES before skops constructs anything; a file
naming any other type (a function, a custom transformer, an estimator this server does not serve)
is refused with the names. skops.io.load then runs its own audit with the same list on top of its
defaults. Servable is a Pipeline whose first step is a text vectorizer and whose last step is a
classifier with predict_proba or decision_function.

The names are those skops records (the defining module of each class); a unit test checks that
each still imports, so a scikit-learn release that moves a class fails the tests, not a server.
"""

from __future__ import annotations

import io
import json
import re
import sys
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import numpy as np

TEXT_VECTORIZERS = (
    "sklearn.feature_extraction.text.TfidfVectorizer",
    "sklearn.feature_extraction.text.CountVectorizer",
    "sklearn.feature_extraction.text.HashingVectorizer",
)
TRANSFORMERS = ("sklearn.feature_extraction.text.TfidfTransformer",)
LINEAR_CLASSIFIERS = (
    "sklearn.linear_model._logistic.LogisticRegression",
    "sklearn.linear_model._stochastic_gradient.SGDClassifier",
    "sklearn.linear_model._ridge.RidgeClassifier",
    "sklearn.linear_model._perceptron.Perceptron",
    "sklearn.svm._classes.LinearSVC",
    "sklearn.naive_bayes.MultinomialNB",
    "sklearn.naive_bayes.ComplementNB",
    "sklearn.naive_bayes.BernoulliNB",
)
#: What the classifiers above hold inside: SGD's loss objects, RidgeClassifier's label binarizer.
CLASSIFIER_PARTS = (
    "sklearn._loss._loss.CyHalfBinomialLoss",
    "sklearn.linear_model._sgd_fast.Hinge",
    "sklearn.linear_model._sgd_fast.ModifiedHuber",
    "sklearn.linear_model._sgd_fast.SquaredHinge",
    "sklearn.preprocessing._label.LabelBinarizer",
)
#: Plain values: containers, strings and numbers, numpy arrays and scalar types.
VALUES = (
    "builtins.dict", "builtins.list", "builtins.tuple", "builtins.str", "builtins.int", "builtins.float",
    "builtins.bool", "numpy.ndarray", "numpy.float64", "numpy.float32", "numpy.int64", "numpy.int32",
    "numpy.bool_",
)
#: Every type a servable skops file may name, and nothing else.
TRUSTED_TYPES: tuple[str, ...] = (
    "sklearn.pipeline.Pipeline", *TEXT_VECTORIZERS, *TRANSFORMERS, *LINEAR_CLASSIFIERS, *CLASSIFIER_PARTS, *VALUES,
)
SCHEMA = "schema.json"


class PipelineFileError(ValueError):
    """A skops file that is not a servable text pipeline; the message names the file and why."""


class UntrustedTypes(PipelineFileError):
    """A skops file naming types outside TRUSTED_TYPES."""

    def __init__(self, path: Path, types: list[str]) -> None:
        self.types = types
        super().__init__(
            f"{path.name} names type(s) outside the trusted list, so it is not loaded: {', '.join(types)} "
            "(a scikit-learn text pipeline is a vectorizer then a linear classifier; see "
            "predictors/backends/skops_files.py TRUSTED_TYPES)"
        )


def read_schema(path: Path) -> dict[str, Any]:
    """The JSON schema of a skops file (the zip's schema.json), without constructing anything."""
    try:
        with zipfile.ZipFile(path) as archive:
            schema = json.loads(archive.read(SCHEMA))
    except (OSError, zipfile.BadZipFile, KeyError, json.JSONDecodeError) as exc:
        raise PipelineFileError(f"{path.name} is not a skops file (a zip holding {SCHEMA}): {exc}") from None
    if not isinstance(schema, dict):
        raise PipelineFileError(f"{path.name}: {SCHEMA} is not a JSON object")
    return schema


def _nodes(node: Any) -> Iterator[dict[str, Any]]:
    """Every node of the schema: each JSON object that names a type (`__module__`, `__class__`)."""
    if isinstance(node, dict):
        if "__class__" in node and "__module__" in node:
            yield node
        for value in node.values():
            yield from _nodes(value)
    elif isinstance(node, list):
        for value in node:
            yield from _nodes(value)


def type_name(node: dict[str, Any]) -> str:
    return f"{node['__module__']}.{node['__class__']}"


def untrusted_types(schema: dict[str, Any]) -> list[str]:
    """The types a schema names that are not in TRUSTED_TYPES, sorted."""
    trusted = set(TRUSTED_TYPES)
    return sorted({type_name(node) for node in _nodes(schema)} - trusted)


def audit(path: Path) -> dict[str, Any]:
    """The file's schema, once every type it names is trusted; UntrustedTypes otherwise."""
    schema = read_schema(path)
    untrusted = untrusted_types(schema)
    if untrusted:
        raise UntrustedTypes(path, untrusted)
    return schema


# ---- reading a pipeline's labels and features from its schema, without loading it ---------------
def _value(node: Any) -> Any:
    """A JSON-stored scalar, list or tuple of the schema (None for anything else)."""
    if not isinstance(node, dict):
        return None
    loader = node.get("__loader__")
    if loader == "JsonNode":
        try:
            return json.loads(node["content"])
        except (KeyError, TypeError, json.JSONDecodeError):
            return None
    if loader in ("TupleNode", "ListNode"):
        return [_value(item) for item in node.get("content") or []]
    return None


def _attributes(node: dict[str, Any]) -> dict[str, Any]:
    """An estimator node's attributes (its __dict__ as skops stored it)."""
    content = node.get("content")
    inner = content.get("content") if isinstance(content, dict) else None
    return inner if isinstance(inner, dict) else {}


def _array(node: Any, archive: zipfile.ZipFile) -> np.ndarray | None:
    """An ndarray node: its .npy member (numpy.load, allow_pickle=False) or its JSON content."""
    if not isinstance(node, dict) or node.get("__loader__") != "NdArrayNode":
        return None
    if node.get("type") == "numpy":
        with archive.open(str(node.get("file"))) as member:
            return np.load(io.BytesIO(member.read()), allow_pickle=False)
    if node.get("type") == "json":
        return np.asarray(node.get("content"), dtype=object)
    return None


@dataclass(frozen=True)
class PipelineSummary:
    """What a pipeline's schema says: its steps, the classifier's classes and the vectorizer's features."""

    steps: list[tuple[str, str]]  # (step name, class name)
    classes: list[str] = field(default_factory=list)
    features: dict[str, Any] = field(default_factory=dict)

    @property
    def description(self) -> str:
        return "Pipeline(" + ", ".join(f"{name}={cls}" for name, cls in self.steps) + ")"


VECTORIZER_FEATURES = ("ngram_range", "analyzer", "lowercase", "max_features", "min_df", "sublinear_tf", "n_features")


def summarize(path: Path, schema: dict[str, Any]) -> PipelineSummary:
    """The steps, classes and vectorizer features of a (trusted) pipeline schema."""
    if type_name(schema) != "sklearn.pipeline.Pipeline":
        raise PipelineFileError(f"{path.name} holds a {type_name(schema)}, not a scikit-learn Pipeline")
    steps = []
    for item in _value_nodes(_attributes(schema).get("steps")):
        parts = item.get("content") if isinstance(item, dict) else None
        if not isinstance(parts, list) or len(parts) != 2 or not isinstance(parts[1], dict) or "__class__" not in parts[1]:
            raise PipelineFileError(f"{path.name}: a pipeline step is not a (name, estimator) pair")
        steps.append((str(_value(parts[0])), parts[1]))
    if len(steps) < 2:
        raise PipelineFileError(f"{path.name}: a text pipeline needs a vectorizer and a classifier; it has {len(steps)} step(s)")
    (first_name, vectorizer), (_, classifier) = steps[0], steps[-1]
    if type_name(vectorizer) not in TEXT_VECTORIZERS:
        raise PipelineFileError(
            f"{path.name}: the first step ({first_name}) is a {vectorizer['__class__']}, not a text vectorizer "
            f"({', '.join(t.rsplit('.', 1)[1] for t in TEXT_VECTORIZERS)}): the pipeline must take raw texts"
        )
    attributes = _attributes(vectorizer)
    features: dict[str, Any] = {"vectorizer": vectorizer["__class__"]}
    vocabulary = attributes.get("vocabulary_")
    if isinstance(vocabulary, dict) and isinstance(vocabulary.get("content"), dict):
        features["vocabulary_size"] = len(vocabulary["content"])
    for key in VECTORIZER_FEATURES:
        if key in attributes and _value(attributes[key]) is not None:
            features[key] = _value(attributes[key])
    features["classifier"] = classifier["__class__"]
    with zipfile.ZipFile(path) as archive:
        classes = _array(_attributes(classifier).get("classes_"), archive)
    return PipelineSummary(
        [(name, node["__class__"]) for name, node in steps],
        [str(c) for c in classes.tolist()] if classes is not None else [],
        features,
    )


def _value_nodes(node: Any) -> list[Any]:
    content = node.get("content") if isinstance(node, dict) else None
    return content if isinstance(content, list) else []


@dataclass(frozen=True)
class FileFacts:
    """What a skops file is, read once per file version: its summary, or why it is refused."""

    summary: PipelineSummary | None
    error: str | None


_FACTS: dict[tuple[str, int, int], FileFacts] = {}


def file_facts(path: Path) -> FileFacts:
    """audit + summarize, remembered per (path, size, mtime): the schema of a 35,000-term vocabulary
    is 22 MB of JSON, which the backend choice, `list` and the config would otherwise parse each time."""
    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    if key not in _FACTS:
        try:
            _FACTS[key] = FileFacts(summarize(path, audit(path)), None)
        except PipelineFileError as exc:
            _FACTS[key] = FileFacts(None, str(exc))
    return _FACTS[key]


# ---- loading ---------------------------------------------------------------------------------
#: scikit-learn's array-API shim for torch: importing it imports torch.
TORCH_SHIM = "sklearn.externals.array_api_compat.torch"


def import_skops_io() -> Any:
    """skops.io, imported without importing torch.

    Importing skops.io lists every scikit-learn estimator (sklearn.utils.all_estimators), whose walk
    over scikit-learn's packages imports each package it descends into, the array-API shim for
    torch included, and so torch itself (measured: 358 MiB RSS after the import instead of 178,
    seconds more) although the walk then ignores everything under `externals`. The shim is marked
    as not importable for the duration of this import only (the walk skips packages that raise
    ImportError), unless torch is loaded already, when it costs nothing."""
    if "skops.io" not in sys.modules and "torch" not in sys.modules and TORCH_SHIM not in sys.modules:
        sys.modules[TORCH_SHIM] = None  # type: ignore[assignment]  # `import` raises ImportError
        try:
            import skops.io  # noqa: F401
        finally:
            if sys.modules.get(TORCH_SHIM, False) is None:
                del sys.modules[TORCH_SHIM]
    import skops.io

    return skops.io


def dump_pipeline(pipeline: Any, path: Path | str) -> None:
    """skops.io.dump, byte for byte the same for the same pipeline (reproducible_archive)."""
    raw = import_skops_io().dumps(pipeline, compression=zipfile.ZIP_DEFLATED)
    Path(path).write_bytes(reproducible_archive(raw))


def reproducible_archive(raw: bytes) -> bytes:
    """A skops archive rewritten so that two dumps of one pipeline are the same bytes.

    skops names each object after its memory address (`__id__` in schema.json, and the .npy member
    holding an array) and stamps each member with the time of the dump, so two builds of the same
    model made two different files (and a new demo image). Here every address is replaced by its
    order of first appearance in the schema (from 1: skops reads 0 as "no id"), members are written
    in name order with a fixed time. skops.io.load reads the result as it reads its own output."""
    with zipfile.ZipFile(io.BytesIO(raw)) as source:
        schema = source.read(SCHEMA).decode()
        order: dict[str, str] = {}
        for address in re.findall(r'"__id__":\s*(\d+)', schema):
            order.setdefault(address, str(len(order) + 1))

        def renumbered(text: str) -> str:
            return re.sub(r"\b\d+\b", lambda match: order.get(match.group(), match.group()), text)

        out = io.BytesIO()
        with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED) as target:
            for name, original in sorted((renumbered(n), n) for n in source.namelist()):
                member = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
                member.compress_type = zipfile.ZIP_DEFLATED
                member.external_attr = 0o644 << 16
                target.writestr(member, renumbered(schema).encode() if original == SCHEMA else source.read(original))
    return out.getvalue()


def load_pipeline(path: Path) -> Any:
    """The pipeline in a skops file, constructed by skops.io only after the audit passed; then
    checked to be a text pipeline the classification head can serve."""
    audit(path)
    skops_io = import_skops_io()  # imports scikit-learn: only when a pipeline is loaded
    try:
        pipeline = skops_io.load(path, trusted=list(TRUSTED_TYPES))
    except Exception as exc:  # skops' own audit, or a file its loaders reject
        raise PipelineFileError(f"skops refused {path.name}: {type(exc).__name__}: {exc}") from exc
    check_pipeline(pipeline, path.name)
    return pipeline


def check_pipeline(pipeline: Any, source: str) -> None:
    """A Pipeline whose last step classifies (classes_, and predict_proba or decision_function)."""
    from sklearn.pipeline import Pipeline

    if not isinstance(pipeline, Pipeline):
        raise PipelineFileError(f"{source} holds a {type(pipeline).__name__}, not a scikit-learn Pipeline")
    last = pipeline.steps[-1][1]
    if not hasattr(last, "classes_"):
        raise PipelineFileError(f"{source}: the last step ({type(last).__name__}) is not a fitted classifier (no classes_)")
    if not (hasattr(pipeline, "predict_proba") or hasattr(pipeline, "decision_function")):
        raise PipelineFileError(
            f"{source}: the classifier ({type(last).__name__}) has neither predict_proba nor decision_function"
        )
