"""The scikit-learn backend: what it serves from a folder (skops yes, pickles never), and its output
convention (the classification head's logits) on real tiny pipelines."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression, RidgeClassifier, SGDClassifier
from sklearn.naive_bayes import MultinomialNB
from sklearn.svm import LinearSVC

from predictors.backends import BACKENDS, NoBackendError, choose_backend, load_model_config
from predictors.backends.base import RANK_FRAMEWORK
from predictors.backends.sklearn_pipeline import pipeline_logits
from predictors.tasks import head_for
from predictors.tasks.base import softmax
from tests.helpers import PIPELINE_TEXTS, write_pipeline_folder

TEXTS = [*PIPELINE_TEXTS, "", "never seen words", "great great great"]


@pytest.mark.parametrize("classifier", [LogisticRegression(), MultinomialNB(), SGDClassifier(loss="log_loss")])
@pytest.mark.parametrize("labels", [("great", "other"), ("a", "b", "c")])
def test_softmax_of_the_logits_is_predict_proba(tmp_path, classifier, labels):
    _, pipeline = write_pipeline_folder(tmp_path / "m", classifier=classifier, labels=labels)
    np.testing.assert_allclose(softmax(pipeline_logits(pipeline, TEXTS)), pipeline.predict_proba(TEXTS), atol=1e-12)


@pytest.mark.parametrize("classifier", [LinearSVC(), RidgeClassifier(), SGDClassifier(loss="hinge")])
@pytest.mark.parametrize("labels", [("great", "other"), ("a", "b", "c")])
def test_decision_function_classifiers_keep_their_prediction(tmp_path, classifier, labels):
    _, pipeline = write_pipeline_folder(tmp_path / "m", classifier=classifier, labels=labels)
    logits = pipeline_logits(pipeline, TEXTS)
    assert logits.shape == (len(TEXTS), len(labels))
    assert list(pipeline.classes_[logits.argmax(axis=1)]) == list(pipeline.predict(TEXTS))
    if len(labels) == 2:  # [-d/2, d/2]: the positive class's probability is sigmoid(d)
        d = pipeline.decision_function(TEXTS)
        np.testing.assert_allclose(softmax(logits)[:, 1], 1 / (1 + np.exp(-d)), atol=1e-12)


def test_the_backend_runs_cleaned_texts_through_the_pipeline(tmp_path):
    folder, pipeline = write_pipeline_folder(tmp_path / "m")
    config = load_model_config(folder)
    choice = choose_backend(config)
    assert (choice.name, choice.weights.name, choice.rank) == ("sklearn", "model.skops", RANK_FRAMEWORK)
    backend = BACKENDS[choice.name](config, head_for(config), choice.weights)
    assert backend.takes_texts and backend.input_names == ()
    np.testing.assert_allclose(backend.run_texts(TEXTS), pipeline_logits(pipeline, TEXTS), rtol=1e-6)
    with pytest.raises(NotImplementedError, match="takes texts"):
        backend.run({})


class _Tripwire:
    """Unpickling this creates a file (the side effect a malicious pickle would have)."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_a_pickle_beside_the_skops_file_is_refused_and_never_loaded(tmp_path):
    import pickle

    folder, _ = write_pipeline_folder(tmp_path / "m")
    pickle_file = folder / "old_model.pkl"
    pickle_file.write_bytes(pickle.dumps(_Tripwire(tmp_path / "tripped")))
    config = load_model_config(folder)
    choice = choose_backend(config)
    BACKENDS[choice.name](config, head_for(config), choice.weights)
    assert not (tmp_path / "tripped").exists()
    assert choice.weights.name == "model.skops"
    assert choice.refused == (
        f"old_model.pkl is a pickle, and this server never loads pickles (loading one runs whatever code it holds); "
        f"if you trust it, convert it once: python -m predictors convert-pickle {pickle_file.resolve()} "
        "(it shows what the file references before converting it to model.skops)",
    )
    assert "; not served: old_model.pkl is a pickle" in choice.reason


def test_the_conversion_command_in_the_message_exists():
    from predictors.backends.sklearn_pipeline import CONVERT_COMMAND
    from predictors.cli import build_parser

    command = CONVERT_COMMAND.split()[-1]
    assert build_parser().parse_args([command, "model.pkl", "--yes"]).func.__module__ == "predictors.cli.convert_pickle"


def test_an_untrusted_skops_file_leaves_nothing_to_serve_and_says_why(tmp_path):
    import os

    import skops.io
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import FunctionTransformer

    folder, _ = write_pipeline_folder(tmp_path / "m")
    config = load_model_config(folder)
    skops.io.dump(Pipeline([("run", FunctionTransformer(os.system)), ("c", LogisticRegression())]), folder / "model.skops")
    with pytest.raises(NoBackendError, match=r"not served: model.skops names type\(s\) outside the trusted list.*posix.system"):
        choose_backend(config)


def test_an_onnx_file_no_gate_covers_goes_before_the_skops_file(tmp_path):
    folder, _ = write_pipeline_folder(tmp_path / "m")
    (folder / "model.onnx").write_bytes(b"")
    choice = choose_backend(load_model_config(folder))
    assert choice.name == "onnx" and choice.rank < RANK_FRAMEWORK
