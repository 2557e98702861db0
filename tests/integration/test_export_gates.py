"""ONNX export behind an accuracy gate: the demo exports passed, a damaged export is refused, the
served int8 models keep their held-out accuracy, and the backend choice follows the gate.

The demo folders are exported by the model build (tools/build_models.py); these tests read what
it recorded and re-run the parts that are quick: the gate on a sample, the refusal path on a copy
of review-sentiment with a damaged graph (the export runs for real, on built-in sentences).
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from predictors.backends import choose_backend
from predictors.config import load_model_config
from predictors.export_gate import (
    REPORT_FILE, GateFailed, Pipeline, Thresholds, check_gate, gate_sample, read_report, write_report,
)
from predictors.quantize import LADDER
from tests.helpers import write_folder

ROOT = Path(__file__).resolve().parent.parent
EXPORTED = ("review-sentiment", "news-topic", "sentence-embedding")  # pii-ner ships as ONNX, no HF weights
CLASSIFIERS = ("review-sentiment", "news-topic")


# ---- the demo exports ----------------------------------------------------------------------
@pytest.mark.parametrize("model", EXPORTED)
def test_demo_export_passed_its_gates_and_is_served_as_int8(demo_models, model):
    folder = demo_models / model
    report = read_report(folder)
    assert report, f"{folder / REPORT_FILE} missing: the build exports the demo models (make models)"
    for name, precision in (("model.onnx", "fp32"), ("model.int8.onnx", "int8")):
        entry = report["files"][name]
        assert entry["precision"] == precision
        assert entry["installed"] and entry["gate"]["passed"] and not entry["forced"], entry["gate"]
        assert (folder / name).stat().st_size == entry["size_bytes"]
    assert report["quantization"]["passed"] in [q.name for q in LADDER]
    throughput = report["throughput"]
    for backend in ("hf_fp32", "onnx_fp32", "onnx_int8"):
        assert throughput[backend]["batch_1"] > 0 and throughput[backend]["batch_8"] > 0
    assert throughput["onnx_int8"]["batch_1"] > throughput["hf_fp32"]["batch_1"]  # the point of int8
    assert {"torch", "transformers", "onnxruntime", "onnx"} <= set(report["versions"])
    choice = choose_backend(load_model_config(folder))
    assert (choice.name, choice.weights.name) == ("onnx", "model.int8.onnx")
    assert "passed the int8 accuracy gate" in choice.reason


def test_demo_int8_embedding_gate_reruns(demo_models):
    """The installed int8 embedding file still passes its gate (48 built-in sentences, a few seconds)."""
    from predictors.onnx_export import check_file

    result = check_file(demo_models / "sentence-embedding", "model.int8.onnx", workers=1, log=lambda _: None)
    assert result.precision == "int8" and result.passed
    assert result.figures["cosine_mean"] >= 0.99


@pytest.mark.parametrize("model", CLASSIFIERS)
def test_served_int8_heldout_accuracy_within_one_point_of_hf(demo_models, model):
    """Held-out accuracy of what the server serves (int8) and of the HuggingFace model, both computed
    here in process through the serving pipeline, on every held-out text."""
    config = load_model_config(demo_models / model)
    examples = config.heldout()
    texts = [e["text"] for e in examples]
    accuracy = {}
    for key, backend in (("served", None), ("hf", "hf")):
        pipeline = Pipeline(config, backend)  # None: the folder's own backend choice, as served
        if key == "served":
            assert pipeline.choice.weights.name == "model.int8.onnx"
        labels = pipeline.run(texts, workers=2).outputs["label"]
        pipeline.close()
        accuracy[key] = float(np.mean([a == e["label"] for a, e in zip(labels, examples)]))
    assert accuracy["served"] >= accuracy["hf"] - 0.01, accuracy
    report = read_report(config.path)  # and the export measured the same on the same texts
    assert report["sample"]["texts"] == len(examples)
    assert report["reference"]["accuracy"] == pytest.approx(accuracy["hf"], abs=0.002)
    assert report["files"]["model.int8.onnx"]["gate"]["figures"]["accuracy"] == pytest.approx(accuracy["served"], abs=0.002)


# ---- refusing a damaged export -----------------------------------------------------------------
def _copy_without_onnx(source: Path, target: Path) -> Path:
    """HF files of a model folder (symlinked), without held-out texts or ONNX files."""
    target.mkdir(parents=True)
    for path in source.iterdir():
        if path.is_file() and path.suffix != ".onnx" and path.name not in ("heldout.jsonl", REPORT_FILE):
            os.symlink(path, target / path.name)
    return target


def _scale_initializers(src: Path, dst: Path, names: list[str], factor: float) -> None:
    model = onnx.load(str(src))
    for init in model.graph.initializer:
        if init.name in names:
            init.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(init) * factor, init.name))
    onnx.save(model, str(dst))


def _damage_fp32(src: Path, dst: Path, factor: float) -> None:
    """Scale the weight of the first MatMul with a constant weight: a subtly wrong fp32 export."""
    model = onnx.load(str(src), load_external_data=False)
    weights = {init.name for init in model.graph.initializer if init.data_type == onnx.TensorProto.FLOAT}
    name = next(n.input[1] for n in model.graph.node if n.op_type == "MatMul" and n.input[1] in weights)
    _scale_initializers(src, dst, [name], factor)


def _damage_int8(path: Path, factor: float) -> None:
    """Scale the int8 weight scales of every quantized attention (QAttention input 4): a bad int8 file."""
    model = onnx.load(str(path), load_external_data=False)
    names = [n.input[4] for n in model.graph.node if n.op_type == "QAttention"]
    assert names, "expected fused, quantized attention in the int8 graph"
    _scale_initializers(path, path, names, factor)


def test_damaged_fp32_file_is_refused_by_the_cli(demo_models, tmp_path):
    folder = _copy_without_onnx(demo_models / "review-sentiment", tmp_path / "review-sentiment")
    damaged = tmp_path / "damaged.onnx"
    _damage_fp32(demo_models / "review-sentiment" / "model.onnx", damaged, 1.05)
    texts = tmp_path / "texts.txt"
    texts.write_text("\n".join(e["text"] for e in load_model_config(demo_models / "review-sentiment").heldout()[:24]))
    proc = subprocess.run(
        [sys.executable, str(ROOT / "tools" / "export_onnx.py"), str(folder), "--check", str(damaged),
         "--texts", str(texts), "--workers", "1"],
        capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "damaged.onnx failed the fp32 accuracy gate: fp32 max abs diff gate:" in proc.stderr
    assert "is not below the limit 1.00e-03" in proc.stderr


def test_cli_refuses_folders_it_cannot_export(demo_models, tmp_path, capsys):
    from predictors.onnx_export import cli

    assert cli(["pii-ner", "--models-dir", str(demo_models)]) == 2  # ships as ONNX, no HF weights
    assert "no HuggingFace weights" in capsys.readouterr().err
    assert cli([str(tmp_path / "nowhere")]) == 2
    assert "no model folder" in capsys.readouterr().err


@pytest.fixture(scope="module")
def refused_export(demo_models, tmp_path_factory):
    """Export a copy of review-sentiment whose int8 quantization is damaged: the gate must refuse it."""
    import predictors.quantize as quantize
    from predictors.onnx_export import export_model

    folder = _copy_without_onnx(demo_models / "review-sentiment", tmp_path_factory.mktemp("damaged") / "review-sentiment")
    (folder / "model.int8.onnx").write_bytes(b"stale file of an earlier export")
    real = quantize.quantize_int8

    def damaged_quantize(src, dst, qconfig, model_dir):
        info = real(src, dst, qconfig, model_dir)
        _damage_int8(Path(dst), 3.0)
        return info

    lines: list[str] = []
    quantize.quantize_int8 = damaged_quantize
    try:
        with pytest.raises(GateFailed) as failure:
            export_model(folder, benchmark=False, workers=1, ladder=LADDER[:1], log=lines.append)
    finally:
        quantize.quantize_int8 = real
    return folder, failure.value, lines


def test_damaged_int8_export_is_not_installed(refused_export):
    folder, failure, lines = refused_export
    assert "model.int8.onnx failed the int8 accuracy gate: int8 top-1 agreement gate:" in str(failure)
    assert "is below the limit 99.00%" in str(failure)
    assert not (folder / "model.int8.onnx").exists()
    assert (folder / "model.int8.onnx.previous").read_bytes() == b"stale file of an earlier export"
    assert (folder / "model.onnx").is_file()  # the fp32 export passed and is installed
    assert not [p for p in folder.iterdir() if p.name.startswith(".export-")]  # temp files cleaned up
    report = read_report(folder)
    assert report["files"]["model.onnx"]["installed"] and report["files"]["model.onnx"]["gate"]["passed"]
    int8 = report["files"]["model.int8.onnx"]
    assert not int8["installed"] and not int8["gate"]["passed"] and int8["gate"]["failures"]
    assert report["quantization"]["passed"] is None
    assert any("NOT installed model.int8.onnx" in line for line in lines)
    choice = choose_backend(load_model_config(folder))
    assert (choice.name, choice.weights.name) == ("onnx", "model.onnx")
    assert "passed the fp32 accuracy gate" in choice.reason


def test_forced_install_is_served_and_says_so(refused_export, tmp_path):
    """--force semantics on the refused export's report: installed, recorded as forced, and the
    backend choice serves it only with a reason that says so (no second export needed)."""
    folder, _, _ = refused_export
    forced = tmp_path / "forced"
    forced.mkdir()
    for path in folder.iterdir():
        if path.is_file() and not path.name.endswith(".previous"):
            os.symlink(path.resolve(), forced / path.name)
    report = read_report(folder)
    (forced / "model.int8.onnx").write_bytes(b"x" * 64)
    report["files"]["model.int8.onnx"].update(installed=True, forced=True, size_bytes=64,
                                              sha256=hashlib.sha256(b"x" * 64).hexdigest())
    (forced / REPORT_FILE).unlink()
    write_report(forced, report)
    choice = choose_backend(load_model_config(forced))
    assert choice.weights.name == "model.int8.onnx"
    assert "FAILED its int8 accuracy gate" in choice.reason and "--force" in choice.reason


# ---- the gate itself ----------------------------------------------------------------------------
def test_gate_messages_name_the_gate_and_the_margin():
    figures = {"texts": 1000, "max_abs_diff": 0.2, "top1_agreement": 0.985, "changed": 15,
               "labelled": 1000, "reference_accuracy": 0.843, "accuracy": 0.83, "accuracy_drop": 0.013}
    result = check_gate("model.int8.onnx", "int8", "classification", figures)
    assert not result.passed
    assert result.failures() == [
        "int8 top-1 agreement gate: 98.50% is below the limit 99.00% (off by 0.50%) (15 of 1000 texts changed label)",
        "int8 accuracy drop gate: 1.30 pt is above the limit 1.00 pt (off by 0.30 pt) (accuracy 83.00% vs torch 84.30%)",
    ]
    fp32 = check_gate("model.onnx", "fp32", "classification", {**figures, "top1_agreement": 1.0, "changed": 0,
                                                                 "accuracy_drop": 0.0, "max_abs_diff": 2e-6})
    assert fp32.passed
    embedding = check_gate("model.int8.onnx", "int8", "embedding",
                           {"texts": 48, "max_abs_diff": 0.5, "cosine_mean": 0.985, "cosine_min": 0.95})
    assert embedding.failures()[0].startswith("int8 embedding cosine gate: 0.9850 is below the limit 0.9900")
    spans = check_gate("model.int8.onnx", "int8", "token_classification",
                       {"texts": 10, "max_abs_diff": 0.1, "span_agreement": 0.995, "spans": 200,
                        "token_agreement": 0.999, "texts_with_same_spans": 0.9}, Thresholds(int8_min_agreement=0.999))
    assert not spans.passed and "int8 span agreement gate" in spans.failures()[0]


def test_gate_sample_sources(tmp_path):
    folder = write_folder(tmp_path / "m", labels=("neg", "pos"))
    builtin = gate_sample(load_model_config(folder))
    assert builtin.source.endswith("built-in sentences") and builtin.labelled == 0
    (folder / "heldout.jsonl").write_text("".join(
        json.dumps({"text": f"text {i}", "label": ("neg", "pos", "???")[i % 3]}) + "\n" for i in range(30)))
    extra = tmp_path / "extra.txt"
    extra.write_text("one\n\ntwo\nthree\n")
    sample = gate_sample(load_model_config(folder), extra, max_texts=10)
    assert len(sample.texts) == 13 and sample.texts[-3:] == ["one", "two", "three"]
    assert sample.texts[:3] == ["text 0", "text 3", "text 6"]  # evenly spread subset
    assert sample.labels[:2] == ["neg", "neg"] and sample.labels[-1] is None
    assert "held-out" in sample.source and "extra.txt" in sample.source


# ---- backend choice with export reports ---------------------------------------------------------
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
    assert "no ONNX file that passed its gate" in choice.reason and "model.int8.onnx failed" in choice.reason


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
