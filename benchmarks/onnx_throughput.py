#!/usr/bin/env python3
"""Measure texts/s of each backend of the exported demo models, now, and print the README table.

    python benchmarks/onnx_throughput.py [--models-dir models] [--only NAME ...] [--texts 48]

For every model folder with an export_report.json: the HuggingFace model on torch, model.onnx
(fp32) and model.int8.onnx, each through the serving pipeline (tokenizer, backend, task head) on
one intra-op thread (as each server worker runs), at batch 1 and at batch 8 over length-sorted
chunks of the same length-representative texts the export measures. Sizes and held-out accuracy
come from the report (the gate measured them on the whole held-out set); only speed is re-measured,
so the numbers can be refreshed on a quiet machine without re-running the export.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from predictors.export import prepare_transformers  # noqa: E402
from predictors.export.runner import Runner  # noqa: E402
from predictors.export.sample import bench_texts, gate_sample  # noqa: E402
from predictors.model import REPORT_FILE, ONNX_FILES, read_report  # noqa: E402
from predictors.backends import load_model_config  # noqa: E402


def quality(report: dict, key: str | None) -> str:
    """Held-out accuracy (classification) or mean cosine to torch (embedding) of one backend."""
    if key is None:
        accuracy = report["reference"].get("accuracy")
        return f"{100 * accuracy:.1f}%" if accuracy is not None else "(reference)"
    figures = report["files"][key]["gate"]["figures"]
    if "accuracy" in figures:
        return f"{100 * figures['accuracy']:.1f}%"
    if "cosine_mean" in figures:
        return f"cosine {figures['cosine_mean']:.4f}"
    return "-"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models-dir", type=Path, default=REPO_ROOT / "models")
    parser.add_argument("--only", nargs="+", metavar="NAME")
    parser.add_argument("--texts", type=int, default=48, help="texts per measurement (default: %(default)s)")
    args = parser.parse_args(argv)
    prepare_transformers()

    rows = ["| model | backend | file | size | texts/s batch 1 | texts/s batch 8 | held-out accuracy / quality |",
            "|---|---|---|---:|---:|---:|---|"]
    for folder in sorted(p for p in args.models_dir.iterdir() if (p / REPORT_FILE).is_file()):
        if args.only and folder.name not in args.only:
            continue
        config = load_model_config(folder)
        report = read_report(folder)
        texts = bench_texts(gate_sample(config).texts, args.texts, config.batch_size)
        backends = [("torch fp32 (HF)", "hf", None, config.hf_weights)]
        for key, label in ((ONNX_FILES["fp32"], "ONNX fp32"), (ONNX_FILES["int8"], "ONNX int8")):
            if (folder / key).is_file() and report["files"].get(key, {}).get("installed"):
                backends.append((label, "onnx", key, folder / key))
        for label, backend, key, path in backends:
            runner = Runner(config, backend, path if backend == "onnx" else None)
            speeds = [runner.throughput(texts, batch) for batch in (1, 8)]
            runner.close()
            row = (f"| {config.name} | {label} | {path.name} | {path.stat().st_size / 1e6:.1f} MB | "
                   f"{speeds[0]:.1f} | {speeds[1]:.1f} | {quality(report, key)} |")
            print(row, file=sys.stderr, flush=True)
            rows.append(row)
    print("\n".join(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
