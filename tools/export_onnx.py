#!/usr/bin/env python3
"""Export a HuggingFace model folder to ONNX, fp32 and int8, each behind an accuracy gate.

    python tools/export_onnx.py models/<name> [--texts FILE] [--force] [--check FILE] ...

The same as `python -m predictors export <name-or-path>`: writes model.onnx (fp32) and
model.int8.onnx next to the HuggingFace files, installs each only if it passes its gate against
PyTorch, and writes export_report.json (sizes, gate figures, texts/s, library versions, the int8
configuration that passed). Exit status 1 when a gate failed (that file is not installed), 2 when
the folder cannot be exported. `--help` lists every option.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:  # also works without `pip install -e .`
    sys.path.insert(0, str(REPO_ROOT))

from predictors.onnx_export import cli  # noqa: E402

if __name__ == "__main__":
    sys.exit(cli(sys.argv[1:]))
