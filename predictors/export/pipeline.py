"""The gated export of a model folder (`python -m predictors export`, the model build), as steps.

A HuggingFace folder:

1. `export_fp32`: model.onnx from the HuggingFace weights (`fp32.export_onnx`, verified on its own);
2. `run_reference`: the torch model over the gate sample, through the serving pipeline;
3. `gate_fp32`: the fp32 file against that reference (`gate`);
4. `quantize_int8`: onnxruntime's optimizer, then the int8 ladder (`quantize`) until a rung passes;
5. `measure_throughput`: texts/s of each backend, one thread as served;
6. `install`: move what passed into the folder (or everything, with `force`); a refused file's older
   namesake is moved aside so it is not served;
7. `build_report`: export_report.json (`predictors.model.write_report`), which the backend choice reads.

A scikit-learn pipeline folder (model.skops): `convert` with skl2onnx (sklearn_onnx.py), the
scikit-learn reference, the "converted" gate, the same throughput, install and report steps. A
pipeline skl2onnx cannot convert gets a report that says why (`conversion.error`), which the backend
choice shows, and keeps serving from its skops file.

Every file is written in a scratch folder inside the model folder and moved into place only once it
passed its gate. Progress goes to the "predictors.export" logger.
"""

from __future__ import annotations

import contextlib
import datetime
import logging
import os
import platform
import shutil
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np

from ..backends import default_workers as backend_workers
from ..backends.hf import HFBackend
from ..backends.onnx import OnnxBackend, is_quantized
from ..backends.sklearn_pipeline import SklearnBackend, pickle_refusal
from ..model import ONNX_FILES, REPORT_FILE, ModelConfig, ModelConfigError, file_sha256, library_versions, write_report
from ..backends import load_model_config
from ..tasks import TASKS
from . import quantize
from .gate import CONVERTED, GateFailed, GateResult, Thresholds, check_gate, compare
from .runner import Run, Runner, prepare_transformers
from .sample import DEFAULT_MAX_TEXTS, EDGE_TEXTS, Sample, bench_texts, gate_sample

logger = logging.getLogger("predictors.export")

#: Texts in the throughput measurement (whole length-sorted chunks spread over the sample).
BENCH_TEXTS = 48


#: Told of each gate run: (the file name it is installed as, the sample texts, the outputs on them, as served).
GateRunCallback = Callable[[str, Sequence[str], dict[str, Any]], None]


class ExportError(RuntimeError):
    """A folder that cannot be exported (no HF weights, unknown task...); the message says why."""


def load_export_config(model_dir: Path | str, overrides: dict[str, Any] | None = None) -> ModelConfig:
    """The folder's ModelConfig, with `overrides` applied; ExportError when it has nothing to export."""
    try:
        config = load_model_config(Path(model_dir).resolve())
    except ModelConfigError as exc:
        raise ExportError(str(exc)) from exc
    if config.text_pipeline:
        if config.pipeline_file is None:
            raise ExportError(f"model '{config.name}': {pickle_refusal(config.pickle_files[0])}")
    elif config.hf_weights is None:
        raise ExportError(
            f"model '{config.name}': no HuggingFace weights (model.safetensors) in {config.path}, nothing to "
            "export from; a folder that ships ONNX files is served from them as they are"
        )
    return replace(config, **overrides) if overrides else config


def default_workers() -> int:
    return min(2, backend_workers())


def _mb(path: Path) -> str:
    return f"{path.stat().st_size / 1e6:.1f} MB"


def _verdict(result: GateResult) -> str:
    return "gate " + ("PASSED: " + result.summary() if result.passed else "FAILED: " + "; ".join(result.failures()))


@dataclass
class Candidate:
    """An ONNX file gated in the scratch folder, waiting to be installed as `target`."""

    precision: str  # "fp32" | "int8" | "converted"
    path: Path
    result: GateResult
    settings: dict[str, Any]  # how it was made, for the report
    runner: Runner | None = None  # still loaded, for the throughput measurement

    @property
    def target(self) -> str:
        """The file name it is installed as (a converted pipeline is the folder's fp32 model.onnx)."""
        return ONNX_FILES.get(self.precision, ONNX_FILES["fp32"])


#: Each reference backend's name in gate messages and its precision in the throughput table.
REFERENCES = {HFBackend.name: ("torch", "fp32"), SklearnBackend.name: ("scikit-learn", "fp64")}


class _Export:
    """The state the steps share: the folder's config, the sample, the reference run (torch, or
    scikit-learn for a pipeline) and the loaded runners (closed, and torch's thread count restored,
    by `close`)."""

    def __init__(self, config: ModelConfig, sample: Sample, workers: int, thresholds: Thresholds,
                 on_gate_run: GateRunCallback | None = None) -> None:
        self.config, self.sample, self.workers, self.thresholds = config, sample, workers, thresholds
        self.on_gate_run = on_gate_run
        self.runners: list[Runner] = []
        self.reference: Run | None = None
        self.reference_runner: Runner | None = None
        self.torch_threads: int | None = None

    def runner(self, backend: str, path: Path | None = None) -> Runner:
        runner = Runner(self.config, backend, path)
        self.runners.append(runner)
        return runner

    def release(self, runner: Runner) -> None:
        runner.close()
        self.runners.remove(runner)

    def close(self) -> None:
        for runner in self.runners:
            runner.close()
        self.runners.clear()
        if self.torch_threads is not None:
            import torch

            torch.set_num_threads(self.torch_threads)

    @property
    def reference_name(self) -> str:
        assert self.reference_runner is not None
        return REFERENCES[self.reference_runner.choice.name][0]

    def gate(self, precision: str, path: Path, name: str) -> tuple[GateResult, Runner, Run]:
        """Run `path` over the sample and hold it to the `precision` gate against the reference.
        An fp32 file runs a fifth of the sample spread over its lengths: an exact export gives
        torch's outputs to float rounding on every text, so the spread shows it as well as all of
        them, and the int8 file, made from it, is still held to torch on every text (a full pass
        saved: 10-20 s a model of a cold build on 2 cores). An int8 file first runs the texts its
        answers most likely differ on (the task head's screen order); when those already fail it,
        the rest are not run (the same verdict, sooner)."""
        runner = self.runner(OnnxBackend.name, path)
        texts, progress = self.sample.texts, f"{precision} {path.name}"
        assert self.reference is not None
        part = subset_size(len(texts))
        if precision == "fp32" and len(texts) > part:
            chosen = spread_by_length(texts, part)
            run = runner.run([texts[i] for i in chosen], workers=self.workers, progress=f"{progress} ({part} texts)")
            return self._verdict(name, precision, run, chosen), runner, run
        order = TASKS[self.config.task].gate_screen_order(self.reference) if precision == "int8" else None
        if order is None or len(texts) <= part:
            run = runner.run(texts, workers=self.workers, progress=progress)
        else:
            first, rest = order[:part], order[part:]
            screened = runner.run([texts[i] for i in first], workers=self.workers, progress=f"{progress} (screen)")
            failed = self._screened_failure(name, precision, first, screened)
            if failed is not None:
                return failed, runner, screened
            run = merge_runs(len(texts), [(first, screened), (rest, runner.run(
                [texts[i] for i in rest], workers=self.workers, progress=progress))])
        return self._verdict(name, precision, run), runner, run

    def _verdict(self, name: str, precision: str, run: Run, indices: list[int] | None = None) -> GateResult:
        """The gate's verdict on `run` against the reference, over the sample texts `indices` (None:
        every one); `on_gate_run` gets the run's outputs."""
        assert self.reference is not None
        sample = self.sample
        texts = sample.texts if indices is None else [sample.texts[i] for i in indices]
        labels = sample.labels if indices is None or not sample.labels else [sample.labels[i] for i in indices]
        reference = self.reference if indices is None else subset_run(self.reference, indices)
        if self.on_gate_run is not None:
            self.on_gate_run(name, texts, run.outputs)
        figures = compare(self.config.task, reference, run, labels, texts, self.reference_name)
        if indices is not None:
            figures["sample"] = len(sample.texts)
        return check_gate(name, precision, self.config.task, figures, self.thresholds)

    def _screened_failure(self, name: str, precision: str, indices: np.ndarray, run: Run) -> GateResult | None:
        """The gate's verdict when the answers changed among the screened texts alone exceed what the
        whole sample may change; None while it can still pass."""
        assert self.reference is not None
        n = len(self.sample.texts)
        figures = compare(self.config.task, subset_run(self.reference, indices), run, (), (), self.reference_name)
        changed = figures.get("changed")
        if changed is None or (n - changed) / n >= self.thresholds.min_agreement(precision):
            return None
        logger.info("%s %s: %d answers changed among the %d least certain texts: failed without running the other %d",
                    precision, name, changed, len(indices), n - len(indices))
        figures.update(texts=n, changed=changed, top1_agreement=(n - changed) / n, screened=len(indices))
        return check_gate(name, precision, self.config.task, figures, self.thresholds)

    # ---- the steps ------------------------------------------------------------------------------
    def export_fp32(self, work_dir: Path) -> Path:
        from .fp32 import OPSET, export_onnx  # torch's exporter: loaded only when exporting

        path = export_onnx(self.config.path, self.config.task, work_dir / ONNX_FILES["fp32"])
        logger.info("fp32: exported %s (%s, opset %d, legacy exporter, eager attention)", path.name, _mb(path), OPSET)
        return path

    def run_reference(self, backend: str = HFBackend.name) -> None:
        """The sample through the framework the exports are held to (torch, or scikit-learn)."""
        if backend == HFBackend.name:
            import torch  # the HF backend sets 1 thread (as served); restored for the caller by close()

            self.torch_threads = torch.get_num_threads()
        self.reference_runner = self.runner(backend)
        name = self.reference_name
        self.reference = self.reference_runner.run(self.sample.texts, workers=self.workers, progress=f"{name} reference")
        logger.info("%s reference: %d texts in %.1fs", name, len(self.sample.texts), self.reference.seconds)

    def gate_fp32(self, path: Path) -> Candidate:
        from .fp32 import FP32_SETTINGS

        result, runner, _ = self.gate("fp32", path, ONNX_FILES["fp32"])
        logger.info("fp32 %s", _verdict(result))
        return Candidate("fp32", path, result, dict(FP32_SETTINGS), runner)

    def quantize_int8(self, fp32: Path, work_dir: Path, ladder: Sequence[quantize.QuantConfig]
                      ) -> tuple[Candidate | None, dict[str, Any]]:
        """Optimize once, then try the ladder until a rung passes. Returns the rung that passed, else
        the one closest to passing (its runner closed), and the report's quantization section."""
        source, optimizer = quantize.optimize_or_plain(fp32, work_dir, self.config.path)
        if "error" in optimizer:
            logger.info("int8: optimizer failed (%s); quantizing the plain export", optimizer["error"])
        else:
            logger.info("int8: onnxruntime transformer optimizer fused %s",
                        ", ".join(f"{k} x{v}" for k, v in optimizer["fused"].items()) or "nothing")
        tried: list[dict[str, Any]] = []
        best: Candidate | None = None
        for rung, qconfig in enumerate(ladder, 1):
            path = work_dir / f"model.int8.{qconfig.name}.onnx"
            quantize.quantize_int8(source, path, qconfig, self.config.path)
            result, runner, run = self.gate("int8", path, ONNX_FILES["int8"])
            tried.append({"name": qconfig.name, "passed": result.passed, "summary": result.summary(),
                          "failures": result.failures(), "size_bytes": path.stat().st_size,
                          "seconds": round(run.seconds, 1)})
            logger.info("int8 [%d/%d %s] (%s) %s", rung, len(ladder), qconfig.name, _mb(path), _verdict(result))
            candidate = Candidate("int8", path, result, {"optimizer": optimizer, "quantization": qconfig.settings()})
            if result.passed:
                candidate.runner = runner
                best = candidate
                break
            self.release(runner)
            if best is None or result.closeness() > best.result.closeness():
                best = candidate
        passed = next((t["name"] for t in tried if t["passed"]), None)
        return best, {"passed": passed, "installed": None, "tried": tried, "ladder": [q.name for q in ladder]}

    def measure_throughput(self, candidates: Sequence[Candidate], force: bool) -> dict[str, Any]:
        """Texts/s at batch 1 and 8 (length-sorted chunks), one thread as each server worker runs,
        for torch and each file that will be installed."""
        texts = bench_texts(self.sample.texts, BENCH_TEXTS)
        logger.info("throughput: %d texts, batch 1 and 8 (length-sorted), 1 thread ...", len(texts))
        assert self.reference_runner is not None
        reference = self.reference_runner.choice.name
        runners = {f"{reference}_{REFERENCES[reference][1]}": self.reference_runner}
        for candidate in candidates:
            if candidate.runner is None and force:
                candidate.runner = self.runner(OnnxBackend.name, candidate.path)
            if candidate.runner is not None:
                runners[f"{OnnxBackend.name}_{candidate.precision}"] = candidate.runner
        throughput = {key: {f"batch_{b}": runner.throughput(texts, b) for b in (1, 8)} for key, runner in runners.items()}
        logger.info("throughput (texts/s, batch 1 / 8): %s",
                    ", ".join(f"{k} {v['batch_1']} / {v['batch_8']}" for k, v in throughput.items()))
        return throughput

    def install(self, candidates: Sequence[Candidate], force: bool) -> tuple[dict[str, Any], list[GateResult]]:
        """Move what passed (or, forced, everything) into the folder; a refused file's older namesake
        is moved aside to `<name>.previous` so it is not served. Returns the report's files section
        and the failed gates."""
        files: dict[str, Any] = {}
        failed: list[GateResult] = []
        for candidate in candidates:
            result, path = candidate.result, candidate.path
            target = self.config.path / candidate.target
            install = result.passed or force
            files[target.name] = {
                "precision": candidate.precision, "installed": install, "forced": install and not result.passed,
                "size_bytes": path.stat().st_size, "sha256": file_sha256(path), "gate": result.as_dict(),
                **candidate.settings,
            }
            if install:
                os.replace(path, target)
                logger.info("installed %s (%s)%s", target.name, _mb(target),
                            "" if result.passed else " although it FAILED its gate (--force)")
                continue
            failed.append(result)
            if target.exists():
                os.replace(target, target.with_name(target.name + ".previous"))
                logger.info("moved the previous %s aside to %s.previous (not served)", target.name, target.name)
            logger.info("NOT installed %s: it failed its gate", target.name)
        return files, failed

    def finish(self, candidates: Sequence[Candidate], force: bool, throughput: dict[str, Any], started: float,
               quantization: dict[str, Any] | None = None, **extra: Any) -> tuple[dict[str, Any], list[GateResult]]:
        """Release the runners, install (`install`), write export_report.json (with `extra` sections);
        returns the report and the failed gates."""
        self.close()
        files, failed = self.install(candidates, force)
        int8 = next((c for c in candidates if c.precision == "int8"), None)
        if quantization is not None and int8 is not None and files[int8.target]["installed"]:
            quantization["installed"] = int8.settings["quantization"]["name"]
        report = {**self.build_report(files, candidates[0], quantization, throughput, time.monotonic() - started), **extra}
        write_report(self.config.path, report)
        logger.info("wrote %s (%.1fs)", REPORT_FILE, report["export_seconds"])
        return report, failed

    def build_report(self, files: dict[str, Any], fp32: Candidate, quantization: dict[str, Any] | None,
                     throughput: dict[str, Any], seconds: float) -> dict[str, Any]:
        """export_report.json; `quantization` is the int8 ladder's section (None: no int8 step)."""
        assert self.reference_runner is not None and self.reference is not None
        config, sample, weights = self.config, self.sample, self.reference_runner.choice.weights
        # Over the whole sample: the fp32 gate may have run a spread of it only.
        accuracy = compare(config.task, self.reference, self.reference, sample.labels, sample.texts).get("reference_accuracy")
        report = {
            "model": config.name,
            "task": config.task,
            "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "export_seconds": round(seconds, 1),
            "sample": {"source": sample.source, "texts": len(sample.texts), "labelled": sample.labelled,
                       "batch_size": config.batch_size, "max_length": config.max_length, "workers": self.workers},
            "thresholds": self.thresholds.as_dict(),
            "reference": {"backend": self.reference_runner.choice.name, "file": weights.name,
                          "size_bytes": weights.stat().st_size, "sha256": file_sha256(weights),
                          "seconds": round(self.reference.seconds, 1),
                          **({"accuracy": accuracy} if accuracy is not None else {})},
            "files": files,
            "quantization": quantization,
            "throughput": {"unit": "texts/s", "threads": 1, "texts": BENCH_TEXTS if throughput else 0,
                           "note": "one intra-op thread per run, as each server worker runs; batch 8 on "
                                   "length-sorted texts; the tokenizer (or text cleaning) and task head are included",
                           **throughput},
            "versions": library_versions(),
            "machine": {"platform": platform.platform(), "cpus": os.cpu_count()},
        }
        if quantization is None:
            del report["quantization"]
        return report


#: The part of the sample an fp32 gate runs, and an int8 gate screens first: this share, at least SUBSET_MIN texts.
SUBSET_SHARE, SUBSET_MIN = 0.2, 50


def subset_size(texts: int) -> int:
    return max(SUBSET_MIN, int(texts * SUBSET_SHARE))


def spread_by_length(texts: Sequence[str], count: int) -> list[int]:
    """`count` indices of `texts` evenly spread over them sorted by length (shortest to longest
    included), in sample order."""
    by_length = sorted(range(len(texts)), key=lambda i: (len(texts[i]), i))
    if count >= len(texts):
        return list(range(len(texts)))
    picks = np.linspace(0, len(texts) - 1, count).round().astype(int)
    return sorted({by_length[p] for p in picks})


def subset_run(run: Run, indices: Sequence[int]) -> Run:
    """The texts `indices` of `run`, in that order."""
    return Run([run.raw[i] for i in indices], {k: _take(v, indices) for k, v in run.outputs.items()}, run.seconds)


def merge_runs(n: int, parts: Sequence[tuple[Sequence[int], Run]]) -> Run:
    """One run over all `n` texts in sample order, from runs over the texts `indices` each."""
    raw: list[Any] = [None] * n
    position = np.empty(n, dtype=np.int64)
    offset = 0
    for indices, part in parts:
        for j, i in enumerate(indices):
            raw[i] = part.raw[j]
        position[np.asarray(indices, dtype=np.int64)] = np.arange(offset, offset + len(indices))
        offset += len(indices)
    outputs = {key: _take(_concat([part.outputs[key] for _, part in parts]), position) for key in parts[0][1].outputs}
    return Run(raw, outputs, sum(part.seconds for _, part in parts))


def _take(values: Any, indices: Sequence[int]) -> Any:
    return values[np.asarray(indices, dtype=np.int64)] if isinstance(values, np.ndarray) else [values[i] for i in indices]


def _concat(values: Sequence[Any]) -> Any:
    if all(isinstance(v, np.ndarray) for v in values):
        return np.concatenate(values)
    return [item for v in values for item in v]


@contextlib.contextmanager
def _export_job(config: ModelConfig, sample: Sample, workers: int, thresholds: Thresholds,
                on_gate_run: GateRunCallback | None = None) -> Iterator[tuple[_Export, Path]]:
    """The job's state and its scratch folder inside the model folder, both gone afterwards."""
    job = _Export(config, sample, workers, thresholds, on_gate_run)
    work_dir = Path(tempfile.mkdtemp(dir=config.path, prefix=".export-"))
    try:
        yield job, work_dir
    finally:
        job.close()
        shutil.rmtree(work_dir, ignore_errors=True)


class _Forward(logging.Handler):
    def __init__(self, sink: Callable[[str], None]) -> None:
        super().__init__(logging.INFO)
        self.sink = sink

    def emit(self, record: logging.LogRecord) -> None:
        self.sink(record.getMessage())


@contextlib.contextmanager
def _logging_to(sink: Callable[[str], None] | None) -> Iterator[None]:
    """Also hand each progress line to `sink` (the model build's log), while the export runs."""
    if sink is None:
        yield
        return
    handler, level = _Forward(sink), logger.level
    logger.addHandler(handler)
    if not logger.isEnabledFor(logging.INFO):
        logger.setLevel(logging.INFO)
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


def export_model(
    model_dir: Path | str,
    texts_file: Path | str | None = None,
    force: bool = False,
    max_texts: int | None = None,
    workers: int | None = None,
    benchmark: bool = True,
    thresholds: Thresholds | None = None,
    ladder: Sequence[quantize.QuantConfig] | None = None,
    log: Callable[[str], None] | None = None,
    overrides: dict[str, Any] | None = None,
    on_gate_run: GateRunCallback | None = None,
) -> dict[str, Any]:
    """Export `model_dir` to model.onnx (fp32) and model.int8.onnx, each behind its accuracy gate.

    `overrides` replaces fields of the folder's ModelConfig (name, max_length, batch_size...): the
    build exports in a scratch folder that lacks the repository's predictor.yaml, yet the gate must
    run the texts the way they will be served. `log` also receives each progress line; `on_gate_run`
    each candidate's outputs on the sample (the build's drift reference reuses the served file's).

    Returns the report (also written to export_report.json). A file that fails its gate is not
    installed and, once the report is written, `GateFailed` is raised naming each failed gate. With
    `force=True` failing files are installed anyway (the int8 rung closest to passing) and the report
    records `"forced": true`; nothing is raised.
    """
    config = load_export_config(model_dir, overrides)
    thresholds = thresholds or Thresholds()
    workers = workers or default_workers()
    if config.text_pipeline:
        return export_pipeline(config, texts_file, force, max_texts, workers, benchmark, thresholds, log)
    ladder = tuple(quantize.LADDER if ladder is None else ladder)
    started = time.monotonic()
    prepare_transformers()
    with _logging_to(log):
        sample = gate_sample(config, texts_file, max_texts or DEFAULT_MAX_TEXTS)
        logger.info("export %s: %s; %d labelled; chunks of %d, max_length %d, %d worker(s)", config.name,
                    sample.source, sample.labelled, config.batch_size, config.max_length, workers)
        with _export_job(config, sample, workers, thresholds, on_gate_run) as (job, work_dir):
            fp32_path = job.export_fp32(work_dir)
            job.run_reference()
            fp32 = job.gate_fp32(fp32_path)
            int8, quantization = job.quantize_int8(fp32_path, work_dir, ladder)
            candidates = [fp32] if int8 is None else [fp32, int8]
            throughput = job.measure_throughput(candidates, force) if benchmark else {}
            report, failed = job.finish(candidates, force, throughput, started, quantization)
    if failed:
        raise GateFailed(failed)
    return report


def export_pipeline(
    config: ModelConfig, texts_file: Path | str | None, force: bool, max_texts: int | None, workers: int,
    benchmark: bool, thresholds: Thresholds, log: Callable[[str], None] | None,
) -> dict[str, Any]:
    """model.onnx from a scikit-learn pipeline (skl2onnx), installed only if it passes the
    "converted" gate against scikit-learn on the sample (plus a few edge texts). A pipeline skl2onnx
    cannot convert gets a report saying why, and a previous model.onnx is moved aside; both raise
    ExportError, and the folder keeps serving from its skops file."""
    from .sklearn_onnx import ConversionError, convert_pipeline

    started = time.monotonic()
    with _logging_to(log):
        sample = gate_sample(config, texts_file, max_texts or DEFAULT_MAX_TEXTS)
        sample = Sample([*sample.texts, *EDGE_TEXTS], [*sample.labels, *[None] * len(EDGE_TEXTS)],
                        f"{sample.source} + {len(EDGE_TEXTS)} edge texts")
        logger.info("export %s: %s; %d labelled; chunks of %d, %d worker(s)", config.name, sample.source,
                    sample.labelled, config.batch_size, workers)
        with _export_job(config, sample, workers, thresholds) as (job, work_dir):
            assert config.pipeline_file is not None
            target = config.path / ONNX_FILES["fp32"]
            job.run_reference(SklearnBackend.name)
            assert job.reference_runner is not None
            try:  # the pipeline the reference runner loaded (skops' load of a large vocabulary takes seconds)
                settings = convert_pipeline(job.reference_runner.predictor.backend.pipeline, work_dir / target.name)
            except ConversionError as exc:
                _set_aside(target)
                write_report(config.path, _conversion_report(config, str(exc), time.monotonic() - started))
                raise ExportError(f"model '{config.name}': {exc}; it keeps serving from {config.pipeline_file.name}") from exc
            logger.info("converted %s with skl2onnx (%s): %s", config.pipeline_file.name, _mb(work_dir / target.name),
                        "; ".join(settings["fixes"]) or "no fixes needed")
            result, runner, _ = job.gate(CONVERTED, work_dir / target.name, target.name)
            logger.info("converted %s", _verdict(result))
            candidate = Candidate(CONVERTED, work_dir / target.name, result, {"conversion": settings}, runner)
            throughput = job.measure_throughput([candidate], force) if benchmark else {}
            report, failed = job.finish([candidate], force, throughput, started, conversion=settings)
    if failed:
        raise GateFailed(failed)
    return report


def _set_aside(path: Path) -> None:
    """A previous export that no gate covers any more must not be served: moved to <name>.previous."""
    if path.exists():
        os.replace(path, path.with_name(path.name + ".previous"))
        logger.info("moved the previous %s aside to %s.previous (not served)", path.name, path.name)


def _conversion_report(config: ModelConfig, error: str, seconds: float) -> dict[str, Any]:
    assert config.pipeline_file is not None
    weights = config.pipeline_file
    return {
        "model": config.name, "task": config.task,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "export_seconds": round(seconds, 1),
        "reference": {"backend": SklearnBackend.name, "file": weights.name, "size_bytes": weights.stat().st_size,
                      "sha256": file_sha256(weights)},
        "files": {},
        "conversion": {"converter": "skl2onnx", "error": error},
        "versions": library_versions(),
    }


def check_file(
    model_dir: Path | str,
    onnx_file: Path | str,
    texts_file: Path | str | None = None,
    max_texts: int | None = None,
    workers: int | None = None,
    thresholds: Thresholds | None = None,
    log: Callable[[str], None] | None = None,
) -> GateResult:
    """Gate an existing ONNX file against the folder's HuggingFace weights (or its scikit-learn
    pipeline); installs nothing.

    The precision (hence the gate) is read from the graph: int8 when it holds quantized ops;
    "converted" for a pipeline folder. Returns the `GateResult`; raises `GateFailed` when it fails.
    """
    model_dir = Path(model_dir).resolve()
    onnx_path = Path(onnx_file)
    if not onnx_path.is_absolute() and not onnx_path.exists():
        onnx_path = model_dir / onnx_path
    if not onnx_path.is_file():
        raise ExportError(f"{onnx_path} does not exist")
    config = load_export_config(model_dir)
    if config.text_pipeline:
        precision, reference = CONVERTED, SklearnBackend.name
    else:
        precision, reference = ("int8" if is_quantized(onnx_path) else "fp32"), HFBackend.name
        prepare_transformers()
    with _logging_to(log):
        sample = gate_sample(config, texts_file, max_texts or DEFAULT_MAX_TEXTS)
        logger.info("check %s (%s) against %s on %s", onnx_path.name, precision, REFERENCES[reference][0], sample.source)
        job = _Export(config, sample, workers or default_workers(), thresholds or Thresholds())
        try:
            job.run_reference(reference)
            result, _, _ = job.gate(precision, onnx_path, onnx_path.name)
        finally:
            job.close()
        logger.info("%s %s", precision, _verdict(result))
    if not result.passed:
        raise GateFailed([result])
    return result
