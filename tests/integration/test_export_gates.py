"""ONNX export behind an accuracy gate: the demo exports passed, a damaged export is refused, the
served int8 models keep their held-out accuracy, and the backend choice follows the gate.

The demo folders are exported by the model build; these tests read what it recorded and re-run the
parts that are quick: the gate on a sample, the refusal path on a copy of review-sentiment with a
damaged graph (the export runs for real, on built-in sentences). The gate's arithmetic, the sample
and the backend choice from a report are unit-tested in tests/unit/export and tests/unit/tasks.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from predictors.backends import choose_backend
from predictors.export import LADDER, GateFailed, check_file, export_model
from predictors.export.runner import Runner
from predictors.model import REPORT_FILE, read_report, write_report
from predictors.tasks import load_model_config

ROOT = Path(__file__).resolve().parents[2]
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
    assert {"torch", "transformers", "onnxruntime", "onnx"} <= set(report["versions"])
    choice = choose_backend(load_model_config(folder))
    assert (choice.name, choice.weights.name) == ("onnx", "model.int8.onnx")
    assert "passed the int8 accuracy gate" in choice.reason


def test_demo_int8_embedding_gate_reruns(demo_models):
    """The installed int8 embedding file still passes its gate (48 built-in sentences, a few seconds)."""
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
        runner = Runner(config, backend)  # None: the folder's own backend choice, as served
        if key == "served":
            assert runner.choice.weights.name == "model.int8.onnx"
        labels = runner.run(texts, workers=2).outputs["label"]
        runner.close()
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
        [sys.executable, "-m", "predictors", "export", str(folder), "--check", str(damaged),
         "--texts", str(texts), "--workers", "1"],
        capture_output=True, text=True, timeout=300, cwd=ROOT,
    )
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "damaged.onnx failed the fp32 accuracy gate: fp32 max abs diff gate:" in proc.stderr
    assert "is not below the limit 1.00e-03" in proc.stderr


def test_cli_refuses_a_folder_that_ships_only_onnx(demo_models, capsys):
    from predictors.cli import main

    assert main(["export", "pii-ner", "--models-dir", str(demo_models)]) == 2  # ships as ONNX, no HF weights
    assert "no HuggingFace weights" in capsys.readouterr().err


@pytest.fixture(scope="module")
def refused_export(demo_models, tmp_path_factory):
    """Export a copy of review-sentiment whose int8 quantization is damaged: the gate must refuse it."""
    import predictors.export.quantize as quantize

    folder = _copy_without_onnx(demo_models / "review-sentiment", tmp_path_factory.mktemp("damaged") / "review-sentiment")
    (folder / "model.int8.onnx").write_bytes(b"stale file of an earlier export")
    real = quantize.quantize_int8

    def damaged_quantize(src, dst, qconfig, model_dir):
        info = real(src, dst, qconfig, model_dir)
        _damage_int8(Path(dst), 3.0)
        return info

    lines: list[str] = []
    with pytest.MonkeyPatch.context() as patch, pytest.raises(GateFailed) as failure:
        patch.setattr(quantize, "quantize_int8", damaged_quantize)
        export_model(folder, benchmark=False, workers=1, ladder=LADDER[:1], log=lines.append)
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
