"""The backend choice rules (which file a folder is served from), without loading weights."""

from __future__ import annotations

import pytest

from predictors.backends import BACKENDS, NoBackendError, choose_backend
from predictors.tasks import load_model_config
from tests.helpers import write_folder


def choice(tmp_path, files, yaml_text=None):
    return choose_backend(load_model_config(write_folder(tmp_path / "m", files=files, predictor_yaml=yaml_text)))


def test_registry_has_the_three_runtimes():
    assert set(BACKENDS) == {"hf", "onnx", "sklearn"}


def test_onnx_preferred_when_present(tmp_path):
    picked = choice(tmp_path, ("model.safetensors", "model.onnx"))
    assert (picked.name, picked.weights.name) == ("onnx", "model.onnx")


def test_int8_before_fp32(tmp_path):
    picked = choice(tmp_path, ("model.safetensors", "model.onnx", "model.int8.onnx"))
    assert picked.weights.name == "model.int8.onnx"


def test_hf_when_no_onnx(tmp_path):
    assert choice(tmp_path, ("model.safetensors",)).name == "hf"


def test_predictor_yaml_forces_hf(tmp_path):
    picked = choice(tmp_path, ("model.safetensors", "model.onnx"), "backend: hf\n")
    assert (picked.name, picked.reason) == ("hf", "forced by predictor.yaml")


def test_configured_onnx_file(tmp_path):
    picked = choice(tmp_path, ("onnx/model_q4.onnx",), "onnx_file: onnx/model_q4.onnx\n")
    assert picked.weights.as_posix().endswith("onnx/model_q4.onnx")


def test_forcing_a_missing_backend_is_an_error(tmp_path):
    with pytest.raises(NoBackendError, match="backend onnx forced"):
        choice(tmp_path, ("model.safetensors",), "backend: onnx\n")


def test_no_weights_is_an_error(tmp_path):
    with pytest.raises(NoBackendError, match="no weights"):
        choice(tmp_path, ())
