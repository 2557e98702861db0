"""`python -m predictors export` refuses what it cannot export with exit status 2 and a message
naming the problem (config-only folders, in process; nothing is exported)."""

from __future__ import annotations

from predictors.cli import main
from tests.helpers import write_folder


def test_no_such_folder(tmp_path, capsys):
    assert main(["export", str(tmp_path / "nowhere")]) == 2
    assert "no model folder" in capsys.readouterr().err


def test_a_folder_without_huggingface_weights(tmp_path, capsys):
    write_folder(tmp_path / "onnx-only", files=("model.onnx",))
    assert main(["export", "onnx-only", "--models-dir", str(tmp_path)]) == 2
    assert "model 'onnx-only': no HuggingFace weights" in capsys.readouterr().err


def test_check_of_a_missing_file(tmp_path, capsys):
    folder = write_folder(tmp_path / "m", files=("model.safetensors",))
    assert main(["export", str(folder), "--check", "nope.onnx"]) == 2
    assert "nope.onnx does not exist" in capsys.readouterr().err


def test_a_folder_that_is_not_a_model(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert main(["export", str(tmp_path / "empty")]) == 2
    assert "config.json" in capsys.readouterr().err
