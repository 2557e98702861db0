"""The backend choice follows export_report.json: the best file that passed its gate is served, a
forced one only with a reason that says so, a refused or re-weighted one never (config-only folders
with hand-written reports, no models)."""

from __future__ import annotations

import hashlib

from predictors.backends import choose_backend
from predictors.model import read_report, write_report
from predictors.tasks import load_model_config
from tests.helpers import write_folder


def _entry(size, passed=True, installed=True, forced=False, precision="int8"):
    content = b"w" * size  # what _folder writes (when size == 10)
    return {"precision": precision, "installed": installed, "forced": forced, "size_bytes": size,
            "sha256": hashlib.sha256(content).hexdigest(),
            "gate": {"passed": passed, "summary": "top-1 agreement 99.60%",
                     "failures": [] if passed else ["int8 top-1 agreement gate: 97.00% is below the limit 99.00%"]}}


def _folder(tmp_path, files, report=None, yaml_text=None):
    folder = write_folder(tmp_path / "m", files=(), predictor_yaml=yaml_text)
    for name in files:
        (folder / name).write_bytes(b"w" * 10)
    if report is not None:
        write_report(folder, {"files": report})
    return load_model_config(folder)


ALL = ("model.safetensors", "model.onnx", "model.int8.onnx")


def test_choice_int8_that_passed(tmp_path):
    choice = choose_backend(_folder(tmp_path, ALL, {"model.int8.onnx": _entry(10), "model.onnx": _entry(10, precision="fp32")}))
    assert choice.weights.name == "model.int8.onnx" and "passed the int8 accuracy gate" in choice.reason


def test_choice_skips_a_failed_int8_for_the_fp32_that_passed(tmp_path):
    report = {"model.int8.onnx": _entry(10, passed=False, installed=False), "model.onnx": _entry(10, precision="fp32")}
    choice = choose_backend(_folder(tmp_path, ALL, report))
    assert choice.weights.name == "model.onnx" and "passed the fp32 accuracy gate" in choice.reason


def test_choice_falls_back_to_hf_when_no_onnx_passed(tmp_path):
    report = {"model.int8.onnx": _entry(10, passed=False, installed=False),
              "model.onnx": _entry(10, passed=False, installed=False, precision="fp32")}
    choice = choose_backend(_folder(tmp_path, ALL, report))
    assert choice.name == "hf"
    assert "HuggingFace weights present" in choice.reason and "not served: model.int8.onnx failed" in choice.reason


def test_choice_forced_int8_is_served_and_says_why(tmp_path):
    report = {"model.int8.onnx": _entry(10, passed=False, forced=True), "model.onnx": _entry(10, precision="fp32")}
    choice = choose_backend(_folder(tmp_path, ALL, report))
    assert choice.weights.name == "model.int8.onnx"
    assert "FAILED its int8 accuracy gate" in choice.reason and "installed with --force" in choice.reason


def test_choice_gated_before_ungated(tmp_path):
    """An int8 file the report does not cover (put there by hand) ranks after a gated fp32 file."""
    choice = choose_backend(_folder(tmp_path, ALL, {"model.onnx": _entry(10, precision="fp32")}))
    assert choice.weights.name == "model.onnx"


def test_choice_file_changed_since_the_report(tmp_path):
    choice = choose_backend(_folder(tmp_path, ("model.safetensors", "model.int8.onnx"), {"model.int8.onnx": _entry(999)}))
    assert choice.weights.name == "model.int8.onnx" and "changed since export_report.json" in choice.reason


def test_choice_onnx_gated_against_other_weights_is_stale(tmp_path):
    """A retrained model.safetensors next to an int8 file gated against the old weights."""
    config = _folder(tmp_path, ALL, {"model.int8.onnx": _entry(10), "model.onnx": _entry(10, precision="fp32")})
    report = read_report(config.path)
    report["reference"] = {"file": "model.safetensors", "sha256": hashlib.sha256(b"old weights").hexdigest()}
    write_report(config.path, report)
    choice = choose_backend(config)  # neither ONNX file matches these weights: HF
    assert choice.name == "hf" and "model.int8.onnx was gated against other weights" in choice.reason
    report["reference"]["sha256"] = hashlib.sha256(b"w" * 10).hexdigest()
    write_report(config.path, report)
    assert "passed the int8 accuracy gate" in choose_backend(config).reason


def test_choice_forced_backend_reports_the_gate(tmp_path):
    report = {"model.int8.onnx": _entry(10, passed=False, forced=True)}
    choice = choose_backend(_folder(tmp_path, ALL, report, "backend: onnx\n"))
    assert choice.reason.startswith("forced by predictor.yaml; int8 gate forced")
    assert choose_backend(_folder(tmp_path, ALL, report, "backend: hf\n")).name == "hf"
