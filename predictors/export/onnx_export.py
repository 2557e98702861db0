"""Export a HuggingFace text model folder to a single-file fp32 ONNX graph.

Why this module exists: the ONNX Runtime backend of the predictors serves a
plain ``model.onnx`` next to the HuggingFace files, so that one folder can be
served either by torch or by onnxruntime.  The export is deliberately simple
and checked numerically right after it is written, because a silently wrong
graph (for instance one that ignores the attention mask) would only show up
as bad predictions at serving time.

Choices, and why:

* ``attn_implementation="eager"``: the explicit matmul/softmax attention is
  what onnxruntime's transformer optimizer knows how to fuse into its
  ``Attention`` kernel; SDPA exports as a pattern it does not recognise.
* The legacy TorchScript exporter (``dynamo=False``): the default dynamo
  exporter needs ``onnxscript`` and writes weights as external data, while the
  serving side expects one self-contained file.
* Inputs are exactly what the folder's tokenizer returns (``input_ids``,
  ``attention_mask`` and ``token_type_ids`` when the tokenizer produces it),
  all int64 with dynamic batch and sequence axes, so the server can feed the
  tokenizer output straight in.
* A single named output (``logits`` or ``last_hidden_state``), produced by a
  small wrapper module, so the graph does not carry every optional output of
  the HuggingFace model.

``export_onnx`` only depends on torch, transformers, numpy and onnxruntime.

``export_model`` (``python -m predictors export``, ``tools/export_onnx.py``,
the model build) runs the whole gated export of a folder: the fp32 file
above, an int8 file quantized with onnxruntime (``predictors.quantize``: the
first configuration of its ladder that passes), each compared with PyTorch
through the serving pipeline (``predictors.export_gate``), a throughput
measurement, and ``export_report.json``.  A file is moved into place only
after it passed its gate (or with ``force``); the server then serves the best
file that passed (``predictors.backends.choose_backend``).
"""

from __future__ import annotations

import datetime
import importlib.metadata
import os
import platform
import shutil
import sys
import tempfile
import time
import warnings
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable, Sequence

# Never reach the HuggingFace hub: every model folder is local.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import numpy as np
import torch
from torch import nn

__all__ = ["TASK_OUTPUTS", "VERIFY_TEXTS", "ExportError", "check_file", "cli", "export_model", "export_onnx", "verify_onnx"]

#: The one output tensor the exported graph has, per task.
TASK_OUTPUTS: dict[str, str] = {
    "classification": "logits",  # [batch, num_labels]
    "token_classification": "logits",  # [batch, sequence, num_labels]
    "embedding": "last_hidden_state",  # [batch, sequence, hidden]
}

#: Texts of clearly different lengths: padded together they exercise the
#: attention mask, which is the part of an export most likely to go wrong.
VERIFY_TEXTS: tuple[str, ...] = (
    "Short one.",
    "A medium length sentence, with some punctuation, to check the export.",
    "This is a considerably longer piece of text. It has several sentences so "
    "that its token count is well above the other two samples, which forces "
    "real padding in the batch. If the exported graph ignored the attention "
    "mask, the outputs of the shorter samples would differ from torch.",
)

#: Maximum absolute difference accepted between onnxruntime and torch.
MAX_ABS_DIFF = 1e-3


class _SingleOutput(nn.Module):
    """Wrap a HuggingFace model so it takes positional tensors and returns one.

    The legacy exporter traces ``forward`` with positional arguments; mapping
    them back to keyword arguments by name keeps the graph inputs identical to
    the tokenizer's output names, whatever subset the tokenizer returns.
    """

    def __init__(self, model: nn.Module, input_names: Sequence[str], output_name: str) -> None:
        super().__init__()
        self.model = model
        self.input_names = tuple(input_names)
        self.output_name = output_name

    def forward(self, *tensors: torch.Tensor) -> torch.Tensor:
        outputs = self.model(**dict(zip(self.input_names, tensors)), return_dict=True)
        return outputs[self.output_name]


def _load(model_dir: Path, task: str) -> tuple[nn.Module, object]:
    """Load the tokenizer and the task-specific model (eval mode, eager attention)."""
    from transformers import (
        AutoModel,
        AutoModelForSequenceClassification,
        AutoModelForTokenClassification,
        AutoTokenizer,
    )

    model_classes = {
        "classification": AutoModelForSequenceClassification,
        "token_classification": AutoModelForTokenClassification,
        "embedding": AutoModel,
    }
    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    model = model_classes[task].from_pretrained(
        str(model_dir), attn_implementation="eager", dtype=torch.float32
    )
    model.eval()
    return model, tokenizer


def _encode(tokenizer: object, texts: Sequence[str]) -> dict[str, torch.Tensor]:
    """Tokenize ``texts`` padded together, as int64 tensors."""
    encoded = tokenizer(list(texts), padding=True, truncation=True, return_tensors="pt")  # type: ignore[operator]
    return {name: tensor.to(torch.int64) for name, tensor in encoded.items()}


def export_onnx(model_dir: Path, task: str, out_path: Path, opset: int = 17) -> Path:
    """Export the model in ``model_dir`` to ``out_path`` and verify it.

    ``task`` is one of ``TASK_OUTPUTS`` and picks both the model class and the
    output (``logits`` or ``last_hidden_state``).  The file is written to a
    temporary name and renamed once verified, so a failed export never leaves
    a broken ``model.onnx`` behind.  Raises ``ValueError`` for an unknown task
    and ``RuntimeError`` when onnxruntime disagrees with torch.
    """
    if task not in TASK_OUTPUTS:
        raise ValueError(f"unknown task {task!r}; expected one of {sorted(TASK_OUTPUTS)}")
    model_dir, out_path = Path(model_dir), Path(out_path)
    output_name = TASK_OUTPUTS[task]
    model, tokenizer = _load(model_dir, task)

    # Trace with a padded batch of unequal lengths, so no shape or "mask is all
    # ones" shortcut gets baked into the graph as a constant.
    sample = _encode(tokenizer, VERIFY_TEXTS[:2])
    input_names = list(sample)
    wrapper = _SingleOutput(model, input_names, output_name).eval()
    dynamic_axes: dict[str, dict[int, str]] = {name: {0: "batch", 1: "sequence"} for name in input_names}
    dynamic_axes[output_name] = {0: "batch"} if task == "classification" else {0: "batch", 1: "sequence"}

    out_path.parent.mkdir(parents=True, exist_ok=True)
    tmp_path = out_path.with_name(out_path.name + ".tmp")
    with torch.no_grad():
        torch.onnx.export(
            wrapper,
            tuple(sample[name] for name in input_names),
            str(tmp_path),
            input_names=input_names,
            output_names=[output_name],
            dynamic_axes=dynamic_axes,
            opset_version=opset,
            do_constant_folding=True,
            dynamo=False,
        )
    try:
        verify_onnx(tmp_path, model, tokenizer, task)
    except Exception:
        tmp_path.unlink(missing_ok=True)
        raise
    os.replace(tmp_path, out_path)
    return out_path


def verify_onnx(
    onnx_path: Path,
    model: nn.Module,
    tokenizer: object,
    task: str,
    texts: Sequence[str] = VERIFY_TEXTS,
) -> float:
    """Compare onnxruntime with torch on ``texts`` padded together.

    For sequence outputs only real (non-padding) positions are compared: the
    values at padded positions are never used downstream.  Returns the maximum
    absolute difference; raises ``RuntimeError`` if it is ``MAX_ABS_DIFF`` or
    more, or if the graph's inputs/outputs are not the expected ones.
    """
    import onnxruntime as ort

    output_name = TASK_OUTPUTS[task]
    encoded = _encode(tokenizer, texts)
    options = ort.SessionOptions()
    options.intra_op_num_threads = max(1, min(2, os.cpu_count() or 1))
    session = ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])
    graph_inputs = [i.name for i in session.get_inputs()]
    graph_outputs = [o.name for o in session.get_outputs()]
    if sorted(graph_inputs) != sorted(encoded) or graph_outputs != [output_name]:
        raise RuntimeError(
            f"{onnx_path}: graph inputs {graph_inputs} / outputs {graph_outputs} do not match "
            f"tokenizer outputs {sorted(encoded)} / expected output [{output_name!r}]"
        )
    (actual,) = session.run(None, {name: encoded[name].numpy() for name in graph_inputs})
    with torch.inference_mode():
        expected = model(**encoded, return_dict=True)[output_name].float().numpy()
    if actual.shape != expected.shape:
        raise RuntimeError(f"{onnx_path}: onnxruntime shape {actual.shape} != torch shape {expected.shape}")
    diff = np.abs(actual - expected)
    if task != "classification":
        diff = diff[encoded["attention_mask"].numpy().astype(bool)]
    max_diff = float(diff.max())
    if not max_diff < MAX_ABS_DIFF:
        raise RuntimeError(
            f"{onnx_path}: onnxruntime differs from torch by {max_diff:.2e} (limit {MAX_ABS_DIFF:.0e})"
        )
    return max_diff


# ---- int8 and the gated export of a model folder -------------------------------------------------
# `export_model` is what `python -m predictors export` / tools/export_onnx.py / the model build run:
# fp32 export (above), onnxruntime's int8 ladder (predictors.quantize), the accuracy gate against
# torch (predictors.export_gate), a throughput measurement and export_report.json.  Every file is
# written under a temporary name in the folder and moved into place only once it passed its gate.

EXPORTED_FILES = {"fp32": "model.onnx", "int8": "model.int8.onnx"}
#: Texts in the throughput measurement (evenly spread over the sample's lengths).
BENCH_TEXTS = 48
#: onnxruntime ops that only a quantized graph has (how `--check` tells int8 from fp32).
QUANTIZED_OPS = frozenset({
    "DynamicQuantizeLinear", "MatMulInteger", "DynamicQuantizeMatMul", "QAttention", "QLinearMatMul",
    "MatMulIntegerToFloat", "QEmbedLayerNormalization", "MatMulNBits", "QGemm",
})
LIBRARIES = ("torch", "transformers", "tokenizers", "onnx", "onnxruntime", "numpy")


class ExportError(RuntimeError):
    """A folder that cannot be exported (no HF weights, unknown task...); the message says why."""


class Progress:
    """Flushed progress lines with the time since the export started."""

    def __init__(self, name: str, sink: Callable[[str], None] | None = None) -> None:
        self.name = name
        self.start = time.monotonic()
        self.sink = sink

    def __call__(self, message: str) -> None:
        if self.sink is not None:
            self.sink(message)
        else:
            print(f"[export {self.name} {time.monotonic() - self.start:6.1f}s] {message}", flush=True)


def _mb(path: Path) -> str:
    return f"{path.stat().st_size / 1e6:.1f} MB"


def library_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in LIBRARIES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def _default_workers() -> int:
    from ..backends import default_workers

    return min(2, default_workers())


def _load_config(model_dir: Path) -> Any:
    from ..model import ModelConfigError
    from ..tasks import load_model_config

    try:
        config = load_model_config(model_dir)
    except ModelConfigError as exc:
        raise ExportError(str(exc)) from exc
    if config.task not in TASK_OUTPUTS:
        raise ExportError(f"model '{config.name}': task {config.task!r} has no ONNX export")
    if config.hf_weights is None:
        raise ExportError(
            f"model '{config.name}': no HuggingFace weights (model.safetensors) in {config.path}, nothing to "
            "export from; a folder that ships ONNX files is served from them as they are"
        )
    return config


def _quiet_transformers() -> None:
    """No per-load progress bars between the progress lines."""
    import transformers

    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()


def _is_quantized(path: Path) -> bool:
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    return any(node.op_type in QUANTIZED_OPS for node in graph.node)


def export_model(
    model_dir: Path | str,
    texts_file: Path | str | None = None,
    force: bool = False,
    max_texts: int | None = None,
    workers: int | None = None,
    benchmark: bool = True,
    thresholds: Any = None,
    ladder: Sequence[Any] | None = None,
    log: Callable[[str], None] | None = None,
    overrides: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Export `model_dir` to model.onnx (fp32) and model.int8.onnx, each behind its accuracy gate.

    `overrides` replaces fields of the folder's ModelConfig (name, max_length, batch_size...):
    the build exports in a scratch folder that lacks the repository's predictor.yaml, yet the gate
    must run the texts the way they will be served.

    Returns the report (also written to export_report.json).  A file that fails its gate is not
    installed (a previous file of that name is moved aside to `<name>.previous` so it is not
    served) and, once the report is written, `GateFailed` is raised naming each failed gate.  With
    `force=True` failing files are installed anyway (the int8 candidate closest to passing) and the
    report records `"forced": true`; nothing is raised.
    """
    from .gate import (
        DEFAULT_MAX_TEXTS, REPORT_FILE, GateFailed, Pipeline, Thresholds, bench_texts, check_gate, compare,
        file_sha256, gate_sample, write_report,
    )
    from .quantize import LADDER, OPTIMIZER, optimize_for_cpu, quantize_int8

    thresholds = thresholds or Thresholds()
    ladder = tuple(LADDER if ladder is None else ladder)
    model_dir = Path(model_dir).resolve()
    config = _load_config(model_dir)
    if overrides:
        config = replace(config, **overrides)
    _quiet_transformers()
    progress = Progress(config.name, log)
    workers = workers or _default_workers()
    started = time.monotonic()

    sample = gate_sample(config, texts_file, max_texts or DEFAULT_MAX_TEXTS)
    progress(f"sample: {sample.source}; {sample.labelled} labelled; chunks of {config.batch_size}, "
             f"max_length {config.max_length}, {workers} worker(s)")
    tmp_dir = Path(tempfile.mkdtemp(dir=model_dir, prefix=".export-"))
    pipelines: list[Any] = []
    torch_threads = torch.get_num_threads()  # the HF backend sets 1 (as served); restore for the caller
    try:
        # fp32 export (verified on VERIFY_TEXTS by export_onnx itself, then gated on the sample).
        fp32_tmp = tmp_dir / EXPORTED_FILES["fp32"]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # tracer / deprecation chatter of the legacy exporter
            export_onnx(model_dir, config.task, fp32_tmp)
        progress(f"fp32: exported {fp32_tmp.name} ({_mb(fp32_tmp)}, opset 17, legacy exporter, eager attention)")

        hf = Pipeline(config, "hf")
        pipelines.append(hf)
        reference = hf.run(sample.texts, workers=workers)
        progress(f"torch reference: {len(sample.texts)} texts in {reference.seconds:.1f}s")

        fp32 = Pipeline(config, "onnx", fp32_tmp)
        pipelines.append(fp32)
        fp32_run = fp32.run(sample.texts, workers=workers)
        fp32_result = check_gate(EXPORTED_FILES["fp32"], "fp32", config.task,
                                 compare(config.task, reference, fp32_run, sample.labels, sample.texts), thresholds)
        progress(f"fp32 gate {'PASSED' if fp32_result.passed else 'FAILED'}: " + (
            fp32_result.summary() if fp32_result.passed else "; ".join(fp32_result.failures())))

        # int8: optimize once, then the ladder until a configuration passes.
        optimizer_info: dict[str, Any]
        source = tmp_dir / "model.fp32-optimized.onnx"
        try:
            fused = optimize_for_cpu(fp32_tmp, source, model_dir)
            optimizer_info = {**OPTIMIZER, "fused": fused}
            progress("int8: onnxruntime transformer optimizer fused "
                     + (", ".join(f"{k} x{v}" for k, v in fused.items()) or "nothing"))
        except Exception as exc:  # an architecture the optimizer does not know: quantize the plain graph
            source = fp32_tmp
            optimizer_info = {**OPTIMIZER, "error": f"{type(exc).__name__}: {exc}", "fused": {}}
            progress(f"int8: optimizer failed ({type(exc).__name__}: {exc}); quantizing the plain export")
        tried: list[dict[str, Any]] = []
        int8_choice: tuple[Any, Path, Any, Any] | None = None  # (qconfig, path, result, pipeline)
        closest: tuple[Any, Path, Any] | None = None
        for rung, qconfig in enumerate(ladder, 1):
            candidate = tmp_dir / f"model.int8.{qconfig.name}.onnx"
            quantize_int8(source, candidate, qconfig, model_dir)
            pipeline = Pipeline(config, "onnx", candidate)
            run = pipeline.run(sample.texts, workers=workers)
            result = check_gate(EXPORTED_FILES["int8"], "int8", config.task,
                                compare(config.task, reference, run, sample.labels, sample.texts), thresholds)
            tried.append({"name": qconfig.name, "passed": result.passed, "summary": result.summary(),
                          "failures": result.failures(), "size_bytes": candidate.stat().st_size,
                          "seconds": round(run.seconds, 1)})
            progress(f"int8 [{rung}/{len(ladder)} {qconfig.name}] ({_mb(candidate)}) gate "
                     + ("PASSED: " + result.summary() if result.passed else "FAILED: " + "; ".join(result.failures())))
            if result.passed:
                int8_choice = (qconfig, candidate, result, pipeline)
                pipelines.append(pipeline)
                break
            if closest is None or _closeness(result) > _closeness(closest[2]):
                closest = (qconfig, candidate, result)
            pipeline.close()
        if int8_choice is None and closest is not None:
            qconfig, candidate, result = closest
            int8_choice = (qconfig, candidate, result, None)

        # Throughput, single thread as served per worker, before anything moves.
        throughput: dict[str, Any] = {}
        if benchmark:
            texts = bench_texts(sample.texts, BENCH_TEXTS)
            progress(f"throughput: {len(texts)} texts, batch 1 and 8 (length-sorted), 1 thread ...")
            runners = {"hf_fp32": hf, "onnx_fp32": fp32}
            if int8_choice is not None and int8_choice[3] is not None:
                runners["onnx_int8"] = int8_choice[3]
            elif int8_choice is not None and force:
                runners["onnx_int8"] = Pipeline(config, "onnx", int8_choice[1])
                pipelines.append(runners["onnx_int8"])
            for key, pipeline in runners.items():
                throughput[key] = {f"batch_{b}": pipeline.throughput(texts, b) for b in (1, 8)}
            progress("throughput (texts/s, batch 1 / 8): " + ", ".join(
                f"{k} {v['batch_1']} / {v['batch_8']}" for k, v in throughput.items()))

        for pipeline in pipelines:
            pipeline.close()
        pipelines.clear()

        # Install what passed (or everything, forced); move stale files of the same name aside.
        files: dict[str, Any] = {}
        failed: list[Any] = []
        installs = [("fp32", fp32_tmp, fp32_result, {"exporter": "torch.onnx.export(dynamo=False)", "opset": 17,
                                                      "attn_implementation": "eager"})]
        if int8_choice is not None:
            qconfig, candidate, result, _ = int8_choice
            installs.append(("int8", candidate, result, {"optimizer": optimizer_info,
                                                          "quantization": qconfig.settings()}))
        for precision, path, result, how in installs:
            target = model_dir / EXPORTED_FILES[precision]
            install = result.passed or force
            entry = {"precision": precision, "installed": install, "forced": install and not result.passed,
                     "size_bytes": path.stat().st_size, "sha256": file_sha256(path), "gate": result.as_dict(), **how}
            if install:
                os.replace(path, target)
                progress(f"installed {target.name} ({_mb(target)})"
                         + ("" if result.passed else " although it FAILED its gate (--force)"))
            else:
                failed.append(result)
                if target.exists():
                    os.replace(target, target.with_name(target.name + ".previous"))
                    progress(f"moved the previous {target.name} aside to {target.name}.previous (not served)")
                progress(f"NOT installed {target.name}: it failed its gate")
            files[target.name] = entry

        hf_weights = config.hf_weights
        passed_q = next((t["name"] for t in tried if t["passed"]), None)
        report = {
            "model": config.name,
            "task": config.task,
            "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "export_seconds": round(time.monotonic() - started, 1),
            "sample": {"source": sample.source, "texts": len(sample.texts), "labelled": sample.labelled,
                       "batch_size": config.batch_size, "max_length": config.max_length, "workers": workers},
            "thresholds": thresholds.as_dict(),
            "reference": {"backend": "hf", "file": hf_weights.name, "size_bytes": hf_weights.stat().st_size,
                          "sha256": file_sha256(hf_weights),
                          "seconds": round(reference.seconds, 1),
                          **({"accuracy": fp32_result.figures["reference_accuracy"]}
                             if "reference_accuracy" in fp32_result.figures else {})},
            "files": files,
            "quantization": {"passed": passed_q,
                             "installed": int8_choice[0].name if int8_choice and files.get(
                                 EXPORTED_FILES["int8"], {}).get("installed") else None,
                             "tried": tried, "ladder": [q.name for q in ladder]},
            "throughput": {"unit": "texts/s", "threads": 1, "texts": BENCH_TEXTS if benchmark else 0,
                           "note": "one intra-op thread per run, as each server worker runs; batch 8 on "
                                   "length-sorted texts; the tokenizer and task head are included",
                           **throughput},
            "versions": library_versions(),
            "machine": {"platform": platform.platform(), "cpus": os.cpu_count()},
        }
        write_report(model_dir, report)
        progress(f"wrote {REPORT_FILE} ({report['export_seconds']:.0f}s)")
    finally:
        for pipeline in pipelines:
            pipeline.close()
        shutil.rmtree(tmp_dir, ignore_errors=True)
        torch.set_num_threads(torch_threads)
    if failed:
        raise GateFailed(failed)
    return report


def _closeness(result: Any) -> float:
    """How close a failing int8 candidate came: the smallest margin over its checks."""
    margins = []
    for check in result.checks:
        value, limit = check["value"], check["limit"]
        margins.append(value - limit if check["op"] == ">=" else limit - value)
    return min(margins) if margins else 0.0


def check_file(
    model_dir: Path | str,
    onnx_file: Path | str,
    texts_file: Path | str | None = None,
    max_texts: int | None = None,
    workers: int | None = None,
    thresholds: Any = None,
    log: Callable[[str], None] | None = None,
) -> Any:
    """Gate an existing ONNX file against the folder's HuggingFace weights; installs nothing.

    The precision (hence the gate) is read from the graph: int8 when it holds quantized ops.
    Returns the `GateResult`; raises `GateFailed` when it fails.
    """
    from .gate import DEFAULT_MAX_TEXTS, GateFailed, Pipeline, Thresholds, check_gate, compare, gate_sample

    model_dir = Path(model_dir).resolve()
    onnx_path = Path(onnx_file)
    if not onnx_path.is_absolute() and not onnx_path.exists():
        onnx_path = model_dir / onnx_path
    if not onnx_path.is_file():
        raise ExportError(f"{onnx_path} does not exist")
    config = _load_config(model_dir)
    _quiet_transformers()
    progress = Progress(config.name, log)
    workers = workers or _default_workers()
    precision = "int8" if _is_quantized(onnx_path) else "fp32"
    sample = gate_sample(config, texts_file, max_texts or DEFAULT_MAX_TEXTS)
    progress(f"check {onnx_path.name} ({precision}) against torch on {sample.source}")
    hf = Pipeline(config, "hf")
    reference = hf.run(sample.texts, workers=workers)
    hf.close()
    candidate = Pipeline(config, "onnx", onnx_path)
    run = candidate.run(sample.texts, workers=workers)
    candidate.close()
    result = check_gate(onnx_path.name, precision, config.task,
                        compare(config.task, reference, run, sample.labels, sample.texts), thresholds or Thresholds())
    progress(f"{precision} gate {'PASSED' if result.passed else 'FAILED'}: " + (
        result.summary() if result.passed else "; ".join(result.failures())))
    if not result.passed:
        raise GateFailed([result])
    return result


def _resolve_model(model: str, models_dir: str) -> Path:
    path = Path(model)
    if path.is_dir():
        return path
    candidate = Path(models_dir) / model
    if candidate.is_dir():
        return candidate
    raise ExportError(f"no model folder '{model}' (not a folder, and no {candidate})")


def run(args: Any) -> int:
    """Exit status: 0 every file passed its gate (or was forced in), 1 a gate failed (that file was
    not installed), 2 the folder cannot be exported."""
    try:
        folder = _resolve_model(args.model, args.models_dir)
        if args.check:
            check_file(folder, args.check, args.texts, args.max_texts, args.workers)
            return 0
        report = export_model(folder, args.texts, force=args.force, max_texts=args.max_texts,
                              workers=args.workers, benchmark=not args.no_benchmark)
    except GateFailed as exc:
        print(f"error: {exc}", file=sys.stderr)
        if not args.check:
            print("error: files that fail their gate are not installed; see export_report.json "
                  "(--force installs them anyway)", file=sys.stderr)
        return 1
    except (ExportError, ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    forced = [name for name, entry in report["files"].items() if entry["forced"]]
    if forced:
        print(f"warning: installed despite failing the gate (--force): {', '.join(forced)}", file=sys.stderr)
    return 0
