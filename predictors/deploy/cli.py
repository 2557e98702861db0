"""`manifests render|check|validate` (registered under `python -m predictors manifests`)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def register(actions: argparse._SubParsersAction) -> None:
    render = actions.add_parser("render", help="write manifests/ from the model folders")
    check = actions.add_parser("check", help="exit 1 if manifests/ differs from the rendering")
    for parser in (render, check):
        parser.add_argument("--models-dir", default=str(ROOT / "models"))
        parser.add_argument("--out", default=str(ROOT / "manifests"))
    render.set_defaults(func=lambda args: _render(args, check=False))
    check.set_defaults(func=lambda args: _render(args, check=True))
    validate = actions.add_parser("validate", help="validate manifests strictly against the CRD schemas")
    validate.add_argument("paths", nargs="*", default=[str(ROOT / "manifests")], help="manifest folders or files")
    validate.add_argument("--crd-dir", default=None, help="KServe CRD folder (default ../shared/k8s-schemas/kserve)")
    validate.set_defaults(func=_validate)


def _render(args: argparse.Namespace, check: bool) -> int:
    sys.path.insert(0, str(ROOT / "tools"))
    import render_manifests  # interim: the rendering CLI moves here from tools/

    return render_manifests.main(["--models-dir", args.models_dir, "--out", args.out] + (["--check"] if check else []))


def _validate(args: argparse.Namespace) -> int:
    from .validate import main

    return main([*args.paths] + (["--crd-dir", args.crd_dir] if args.crd_dir else []))
