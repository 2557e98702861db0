"""`python -m predictors convert-pickle`: a trusted pickle or joblib file becomes a skops file the
server serves; anything referencing more than a text pipeline is refused without being loaded."""

from __future__ import annotations

import os
import pickle

import joblib
import numpy as np
import pytest

from predictors.backends import choose_backend, load_model_config
from predictors.backends.skops_files import load_pipeline
from predictors.cli import main
from tests.helpers import PIPELINE_TEXTS, write_pipeline_folder


class Tripwire:
    """Unpickling this creates a file: what a malicious pickle's side effect would be."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


@pytest.fixture
def fitted(tmp_path):
    folder, pipeline = write_pipeline_folder(tmp_path / "fit")
    (folder / "model.skops").unlink()
    return pipeline


@pytest.mark.parametrize("save", [
    lambda p, path: joblib.dump(p, path, compress=3),
    lambda p, path: joblib.dump(p, path),
    lambda p, path: path.write_bytes(pickle.dumps(p, protocol=5)),
    lambda p, path: path.write_bytes(pickle.dumps(p, protocol=2)),
], ids=["joblib-zlib", "joblib", "pickle-5", "pickle-2"])
def test_a_trusted_pickle_becomes_a_served_skops_file(tmp_path, fitted, save, capsys):
    folder = tmp_path / "legacy"
    folder.mkdir()
    save(fitted, folder / "model.joblib")
    assert main(["convert-pickle", str(folder / "model.joblib"), "--yes"]) == 0
    out = capsys.readouterr().out
    assert "trusted      sklearn.pipeline.Pipeline" in out and "NOT TRUSTED" not in out
    assert "It builds: sklearn.pipeline.Pipeline with steps tfidf=TfidfVectorizer, classifier=LogisticRegression" in out
    assert f"wrote {folder / 'model.skops'}" in out
    served = load_pipeline(folder / "model.skops")
    np.testing.assert_array_equal(served.predict_proba(list(PIPELINE_TEXTS)), fitted.predict_proba(list(PIPELINE_TEXTS)))
    choice = choose_backend(load_model_config(folder))  # the pickle stays, refused; the skops file serves
    assert choice.weights.name == "model.skops" and "model.joblib is a pickle" in choice.refused[0]


def test_a_pickle_that_calls_anything_else_is_refused_and_never_loaded(tmp_path, fitted, capsys):
    path = tmp_path / "model.pkl"
    path.write_bytes(pickle.dumps({"model": fitted, "payload": Tripwire(tmp_path / "tripped")}))
    assert main(["convert-pickle", str(path), "--yes"]) == 1
    captured = capsys.readouterr()
    assert "NOT TRUSTED  io.open" in captured.out
    assert "refusing to load" in captured.err and "unpickling it may run that code" in captured.err
    assert not (tmp_path / "tripped").exists()
    assert not (tmp_path / "model.skops").exists()


def test_without_yes_and_without_a_terminal_nothing_is_converted(tmp_path, fitted, capsys, monkeypatch):
    path = tmp_path / "model.pkl"
    path.write_bytes(pickle.dumps(fitted))
    monkeypatch.setattr("sys.stdin", open(os.devnull))
    assert main(["convert-pickle", str(path)]) == 1
    assert "pass --yes" in capsys.readouterr().err
    assert not (tmp_path / "model.skops").exists()


def test_something_that_is_not_a_pipeline_is_not_converted(tmp_path, capsys):
    path = tmp_path / "model.pkl"
    path.write_bytes(pickle.dumps({"weights": np.zeros(3)}))
    assert main(["convert-pickle", str(path), "--yes", "--output", str(tmp_path / "out.skops")]) == 1
    assert "holds a dict, not a scikit-learn Pipeline" in capsys.readouterr().err
    assert not (tmp_path / "out.skops").exists()


def test_a_file_that_is_not_a_pickle_is_an_error(tmp_path, capsys):
    path = tmp_path / "model.pkl"
    path.write_bytes(b"\x80\x05 truncated")
    assert main(["convert-pickle", str(path), "--yes"]) == 1
    assert "is not a readable pickle" in capsys.readouterr().err
    assert main(["convert-pickle", str(tmp_path / "missing.pkl")]) == 2
