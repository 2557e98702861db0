"""`export`: gated ONNX export of a model folder (the pipeline lives in predictors.export)."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from ..export import DEFAULT_MAX_TEXTS, ExportError, GateFailed, check_file, export_model


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "export",
        help="export a model folder to gated ONNX",
        description="Export a HuggingFace model folder to model.onnx (fp32) and model.int8.onnx, each installed "
        "only if it passes its accuracy gate against PyTorch; or a scikit-learn pipeline folder (model.skops) "
        "to model.onnx with skl2onnx, installed only if it agrees with scikit-learn. Writes export_report.json. "
        "Exit status 1 when a gate failed (that file is not installed), 2 when the folder cannot be exported "
        "(a pipeline skl2onnx cannot convert keeps serving from its skops file; the report says why).",
    )
    parser.add_argument("model", help="a model folder, or the name of one under --models-dir")
    parser.add_argument("--models-dir", default="models", help="where model names are looked up (default: %(default)s)")
    parser.add_argument("--texts", metavar="FILE",
                        help="extra gate texts, one per line (used with the held-out texts where the folder has "
                             "them, else alone; built-in sentences when neither)")
    parser.add_argument("--force", action="store_true",
                        help="install files that fail their gate anyway; the report and the server say so")
    parser.add_argument("--max-texts", type=int, default=DEFAULT_MAX_TEXTS, metavar="N",
                        help="at most N texts per source, evenly spread (default: %(default)s)")
    parser.add_argument("--workers", type=int, default=None, metavar="N",
                        help="threads running the gate (default: min(2, CPUs))")
    parser.add_argument("--no-benchmark", action="store_true", help="skip the throughput measurement")
    parser.add_argument("--check", metavar="ONNX_FILE",
                        help="only gate this existing ONNX file against the folder's torch model (or scikit-learn "
                             "pipeline); install nothing")
    parser.set_defaults(func=run)


def _model_folder(model: str, models_dir: str) -> Path:
    for candidate in (Path(model), Path(models_dir) / model):
        if candidate.is_dir():
            return candidate
    raise ExportError(f"no model folder '{model}' (not a folder, and no {Path(models_dir) / model})")


def _show_progress() -> None:
    """The export's progress lines on stderr, one timestamped line per step."""
    logger = logging.getLogger("predictors.export")
    if not logger.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s export: %(message)s", "%H:%M:%S"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        logger.propagate = False


def run(args: argparse.Namespace) -> int:
    """Exit status: 0 every file passed its gate (or was forced in), 1 a gate failed (that file was
    not installed), 2 the folder cannot be exported."""
    _show_progress()
    try:
        folder = _model_folder(args.model, args.models_dir)
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
