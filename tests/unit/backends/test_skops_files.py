"""skops files: the trusted-type list, refusing anything outside it by name before anything is
constructed, and reading a pipeline's labels and features without loading it."""

from __future__ import annotations

import copy
import importlib
import json
import os
import zipfile

import pytest
import skops.io
from sklearn.feature_extraction.text import CountVectorizer, HashingVectorizer
from sklearn.linear_model import LogisticRegression, RidgeClassifier, SGDClassifier
from sklearn.naive_bayes import MultinomialNB
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer
from sklearn.svm import LinearSVC

from predictors.backends.skops_files import (
    TRUSTED_TYPES, PipelineFileError, UntrustedTypes, audit, dump_pipeline, file_facts, load_pipeline, read_schema,
    summarize, untrusted_types,
)
from tests.helpers import PIPELINE_TEXTS, write_pipeline_folder


@pytest.mark.parametrize("name", TRUSTED_TYPES)
def test_every_trusted_name_still_names_a_type(name):
    """scikit-learn moving a class must fail here, not as a refused model in production."""
    module, _, attribute = name.rpartition(".")
    assert isinstance(getattr(importlib.import_module(module), attribute), type)


@pytest.mark.parametrize("classifier", [LogisticRegression(), RidgeClassifier(), LinearSVC(), MultinomialNB(),
                                        SGDClassifier(loss="hinge"), SGDClassifier(loss="log_loss")])
@pytest.mark.parametrize("labels", [("great", "other"), ("a", "b", "c")])
def test_text_pipelines_of_the_served_kinds_pass_the_audit_and_load(tmp_path, classifier, labels):
    folder, fitted = write_pipeline_folder(tmp_path / "m", classifier=classifier, labels=labels)
    loaded = load_pipeline(folder / "model.skops")
    assert list(loaded.predict(list(PIPELINE_TEXTS))) == list(fitted.predict(list(PIPELINE_TEXTS)))


@pytest.mark.parametrize("classifier", [LogisticRegression(), MultinomialNB(), SGDClassifier(loss="hinge")])
def test_dump_pipeline_writes_the_same_bytes_for_the_same_pipeline_and_loads_back(tmp_path, classifier):
    """skops' own dump names objects after memory addresses and stamps the time; a copy of the same
    pipeline (other addresses) must give the same file, whose members carry no time of the dump."""
    _, fitted = write_pipeline_folder(tmp_path / "m", classifier=classifier, labels=("a", "b", "c"))
    plain = [skops.io.dumps(fitted), skops.io.dumps(copy.deepcopy(fitted))]
    assert plain[0] != plain[1], "skops' own output is expected to differ between copies"
    dump_pipeline(fitted, tmp_path / "first.skops")
    dump_pipeline(copy.deepcopy(fitted), tmp_path / "second.skops")
    assert (tmp_path / "first.skops").read_bytes() == (tmp_path / "second.skops").read_bytes()
    loaded = load_pipeline(tmp_path / "second.skops")
    texts = list(PIPELINE_TEXTS)

    def scores(pipeline):
        return (pipeline.predict_proba if hasattr(pipeline, "predict_proba") else pipeline.decision_function)(texts)

    assert scores(loaded).tolist() == scores(fitted).tolist()
    with zipfile.ZipFile(tmp_path / "second.skops") as archive:
        assert {info.date_time for info in archive.infolist()} == {(1980, 1, 1, 0, 0, 0)}


def test_a_function_in_the_file_is_refused_by_name_before_anything_is_built(tmp_path, monkeypatch):
    pipeline = Pipeline([("run", FunctionTransformer(os.system)), ("classifier", LogisticRegression())])
    skops.io.dump(pipeline, tmp_path / "model.skops")
    monkeypatch.setattr(skops.io, "load", lambda *a, **k: pytest.fail("skops.io.load was reached"))
    with pytest.raises(UntrustedTypes) as error:
        load_pipeline(tmp_path / "model.skops")
    assert error.value.types == ["posix.system", "sklearn.preprocessing._function_transformer.FunctionTransformer"]
    assert "model.skops names type(s) outside the trusted list, so it is not loaded: posix.system" in str(error.value)


def test_a_type_hidden_deep_in_the_schema_is_found(tmp_path):
    """An attacker editing schema.json: a function node inside the vocabulary's values."""
    folder, _ = write_pipeline_folder(tmp_path / "m")
    path = folder / "model.skops"
    with zipfile.ZipFile(path) as archive:
        members = {name: archive.read(name) for name in archive.namelist()}
    schema = json.loads(members["schema.json"])
    vectorizer = schema["content"]["content"]["steps"]["content"][0]["content"][1]
    vocabulary = vectorizer["content"]["content"]["vocabulary_"]["content"]
    first = next(iter(vocabulary))
    vocabulary[first] = {"__class__": "system", "__module__": "os", "__loader__": "FunctionNode", "__id__": 1}
    members["schema.json"] = json.dumps(schema).encode()
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    assert untrusted_types(read_schema(path)) == ["os.system"]
    with pytest.raises(UntrustedTypes, match="os.system"):
        load_pipeline(path)


def test_a_file_that_is_not_skops_is_refused(tmp_path):
    (tmp_path / "model.skops").write_bytes(b"\x80\x04 a pickle wearing the wrong name")
    with pytest.raises(PipelineFileError, match=r"model.skops is not a skops file \(a zip holding schema.json\)"):
        audit(tmp_path / "model.skops")


def test_the_summary_reads_classes_and_features_without_loading(tmp_path):
    folder, _ = write_pipeline_folder(tmp_path / "m", vectorizer=HashingVectorizer(n_features=2**10), labels=(3, 7))
    summary = summarize(folder / "model.skops", audit(folder / "model.skops"))
    assert summary.classes == ["3", "7"]
    assert summary.steps == [("tfidf", "HashingVectorizer"), ("classifier", "LogisticRegression")]
    assert summary.features["n_features"] == 1024 and summary.features["vectorizer"] == "HashingVectorizer"


def test_a_pipeline_that_does_not_start_with_a_vectorizer_is_refused(tmp_path):
    from sklearn.feature_extraction.text import TfidfTransformer

    pipeline = Pipeline([("tfidf", TfidfTransformer()), ("classifier", LogisticRegression())])
    pipeline.fit(CountVectorizer().fit_transform(PIPELINE_TEXTS), [0, 1] * 4)
    skops.io.dump(pipeline, tmp_path / "model.skops")
    facts = file_facts(tmp_path / "model.skops")
    assert facts.summary is None
    assert "the first step (tfidf) is a TfidfTransformer, not a text vectorizer" in facts.error
    assert "the pipeline must take raw texts" in facts.error


def test_a_bare_classifier_is_not_a_pipeline(tmp_path):
    skops.io.dump(LogisticRegression().fit([[0.0], [1.0]], [0, 1]), tmp_path / "model.skops")
    assert "holds a sklearn.linear_model._logistic.LogisticRegression, not a scikit-learn Pipeline" in \
        file_facts(tmp_path / "model.skops").error
