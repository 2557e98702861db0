"""skl2onnx conversion of text pipelines (tiny real ones): the graph answers as the scikit-learn
backend does, the export gates and installs it, and a pipeline skl2onnx cannot convert keeps
serving from skops with the reason in the backend choice."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from sklearn.feature_extraction.text import CountVectorizer, HashingVectorizer
from sklearn.linear_model import LogisticRegression, RidgeClassifier, SGDClassifier
from sklearn.naive_bayes import MultinomialNB

from predictors.backends import choose_backend, load_model_config
from predictors.backends.sklearn_pipeline import pipeline_logits
from predictors.export import ExportError, export_model
from predictors.export.sklearn_onnx import ConversionError, convert_pipeline
from predictors.model import read_report
from tests.helpers import PIPELINE_TEXTS, write_pipeline_folder

TEXTS = [*PIPELINE_TEXTS, "", "Café ÉCOLE naïve", "a b c great", "GREAT Coffee, torn bag!", "x" * 300]


def onnx_logits(path, texts):
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(["logits"], {"text": np.array(texts, dtype=object).reshape(-1, 1)})[0]


@pytest.mark.parametrize("classifier", [LogisticRegression(), MultinomialNB(), RidgeClassifier(), SGDClassifier(loss="hinge")])
@pytest.mark.parametrize("labels", [("great", "other"), ("a", "b", "c")])
def test_the_graph_answers_as_the_scikit_learn_backend(tmp_path, classifier, labels):
    _, pipeline = write_pipeline_folder(tmp_path / "m", classifier=classifier, labels=labels)
    convert_pipeline(pipeline, tmp_path / "model.onnx")
    np.testing.assert_allclose(onnx_logits(tmp_path / "model.onnx", TEXTS), pipeline_logits(pipeline, TEXTS), atol=2e-5)


def test_conversions_in_two_processes_are_the_same_bytes(tmp_path):
    """The demo image is reused only when a rebuild makes the same files (tools/image/file_digests.py);
    skl2onnx's output depended on the graph's random name and on the process's string hash seed."""
    folder, _ = write_pipeline_folder(tmp_path / "m", classifier=LogisticRegression(), labels=("great", "other"))
    script = ("import sys; from pathlib import Path; from predictors.backends.skops_files import load_pipeline; "
              "from predictors.export.sklearn_onnx import convert_pipeline; "
              "convert_pipeline(load_pipeline(Path(sys.argv[1])), Path(sys.argv[2]))")
    for seed, name in (("0", "first.onnx"), ("1", "second.onnx")):  # two seeds that order the domains apart
        subprocess.run([sys.executable, "-c", script, str(folder / "model.skops"), str(tmp_path / name)],
                       env={**os.environ, "PYTHONHASHSEED": seed}, check=True, timeout=300)
    assert (tmp_path / "first.onnx").read_bytes() == (tmp_path / "second.onnx").read_bytes()


def test_scikit_learns_default_tokens_and_lowercasing_survive_conversion(tmp_path):
    """lowercase=True (StringNormalizer, whose default locale slim images lack) and the default
    token_pattern (two or more Unicode word characters; skl2onnx's own regex keeps one-letter words
    and splits accented ones)."""
    _, pipeline = write_pipeline_folder(tmp_path / "m", vectorizer=CountVectorizer(ngram_range=(1, 2)))
    settings = convert_pipeline(pipeline, tmp_path / "model.onnx")
    assert settings["fixes"] == [
        "StringNormalizer locale C.UTF-8 (en_US.UTF-8 is missing from slim images)",
        r"Tokenizer tokenexp [\p{L}\p{N}_]{2,} (scikit-learn's default token_pattern)",
    ]
    texts = [*TEXTS, "a great coffee", "GRÈAT cAfé smooth", "i x great y coffee"]
    np.testing.assert_allclose(onnx_logits(tmp_path / "model.onnx", texts), pipeline_logits(pipeline, texts), atol=2e-5)
    graph = onnx.load(str(tmp_path / "model.onnx")).graph
    assert [o.name for o in graph.output] == ["logits"] and [i.name for i in graph.input] == ["text"]


def test_a_vectorizer_skl2onnx_has_no_converter_for_is_a_conversion_error(tmp_path):
    _, pipeline = write_pipeline_folder(tmp_path / "m", vectorizer=HashingVectorizer(n_features=256))
    with pytest.raises(ConversionError, match=r"skl2onnx \S+ cannot convert HashingVectorizer -> LogisticRegression: "
                                              r"MissingShapeCalculator"):
        convert_pipeline(pipeline, tmp_path / "model.onnx")


def test_the_export_gates_and_installs_the_graph_which_is_then_served(tmp_path):
    folder, _ = write_pipeline_folder(tmp_path / "m", predictor_yaml="preprocess: {lowercase: true}\n")
    report = export_model(folder, workers=1, benchmark=False, log=lambda _: None)
    entry = report["files"]["model.onnx"]
    assert entry["installed"] and entry["precision"] == "converted" and entry["gate"]["passed"]
    assert [c["gate"] for c in entry["gate"]["checks"]] == [
        "converted top-1 agreement", "converted probability difference (99.5th percentile of texts)"]
    assert report["reference"]["backend"] == "sklearn" and report["reference"]["file"] == "model.skops"
    assert report["conversion"]["converter"] == "skl2onnx" and "quantization" not in report
    choice = choose_backend(load_model_config(folder))
    assert (choice.name, choice.weights.name) == ("onnx", "model.onnx")
    assert choice.reason.startswith("model.onnx passed the converted accuracy gate: top-1 agreement 100.00%")


def test_a_pipeline_skl2onnx_cannot_convert_keeps_serving_from_skops_and_says_why(tmp_path):
    folder, _ = write_pipeline_folder(tmp_path / "m", vectorizer=HashingVectorizer(n_features=256))
    (folder / "model.onnx").write_bytes(b"an export of earlier weights")
    with pytest.raises(ExportError, match="cannot convert HashingVectorizer.*it keeps serving from model.skops"):
        export_model(folder, workers=1, benchmark=False, log=lambda _: None)
    assert not (folder / "model.onnx").exists()  # no gate covers it any more: set aside, not served
    assert (folder / "model.onnx.previous").read_bytes() == b"an export of earlier weights"
    assert "cannot convert HashingVectorizer" in read_report(folder)["conversion"]["error"]
    choice = choose_backend(load_model_config(folder))
    assert choice.name == "sklearn"
    assert "; no ONNX export: skl2onnx" in choice.reason and "cannot convert HashingVectorizer" in choice.reason
