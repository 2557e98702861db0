"""`export`: gated ONNX export of a model folder (the pipeline lives in predictors.export)."""

from __future__ import annotations

import argparse

from ..export.gate import DEFAULT_MAX_TEXTS


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "export",
        help="export a model folder to gated fp32 and int8 ONNX",
        description="Export a HuggingFace model folder to model.onnx (fp32) and model.int8.onnx, each installed "
        "only if it passes its accuracy gate against PyTorch; writes export_report.json.",
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
                        help="only gate this existing ONNX file against the folder's torch model; install nothing")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..export.onnx_export import run as export  # torch: loaded only when exporting

    return export(args)
