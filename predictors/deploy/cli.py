"""`manifests render|check|validate` (registered under `python -m predictors manifests`).

    python -m predictors manifests render      # write manifests/ from models/*/predictor.yaml
    python -m predictors manifests check       # exit 1 and list what differs from the rendering
    python -m predictors manifests validate    # strict validation against the CRD schemas (+ kubectl kustomize)

Never edit manifests/ by hand: the rules are in predictors/deploy/ (sizing.py, render.py), the
per-model numbers in each predictor.yaml `deploy:` section (measured by tools/measure_deploy.py).
"""

from __future__ import annotations

import argparse
import difflib
import sys
from pathlib import Path

from ..model import ModelConfigError
from .render import render_all

def register(actions: argparse._SubParsersAction) -> None:
    render = actions.add_parser("render", help="write manifests/ from the model folders")
    check = actions.add_parser("check", help="exit 1 if manifests/ differs from the rendering")
    for parser in (render, check):
        # Relative to where the command runs (a checkout's root), never to where the package is installed.
        parser.add_argument("--models-dir", default="models", help="model folders to render (default: %(default)s)")
        parser.add_argument("--out", default="manifests", help="where the manifests go (default: %(default)s)")
    render.set_defaults(func=_render)
    check.set_defaults(func=_check)
    validate = actions.add_parser("validate", help="validate manifests strictly against the CRD schemas")
    validate.add_argument("paths", nargs="*", default=["manifests"], help="manifest folders or files (default: manifests)")
    validate.add_argument("--crd-dir", default=None,
                          help="folder of CRD files, searched recursively (default $PREDICTORS_CRD_DIR, "
                               "$KSERVE_CRD_DIR or ../shared/k8s-schemas)")
    validate.set_defaults(func=_validate)


def _rendered_dirs(rendered: dict[str, str], out_dir: Path) -> set[Path]:
    """The folders the rendering writes into (only their YAML files can be stale)."""
    return {(out_dir / name).parent for name in rendered}


def differences(rendered: dict[str, str], out_dir: Path) -> list[str]:
    """One entry per file that is missing, stale (with a unified diff) or no longer rendered."""
    problems: list[str] = []
    for name, text in sorted(rendered.items()):
        path = out_dir / name
        if not path.is_file():
            problems.append(f"{path}: missing (rendered, not written)")
            continue
        current = path.read_text(encoding="utf-8")
        if current != text:
            diff = "".join(difflib.unified_diff(
                current.splitlines(keepends=True), text.splitlines(keepends=True),
                fromfile=f"{path} (committed)", tofile=f"{path} (rendered)", n=1,
            ))
            problems.append(f"{path}: differs from the rendering\n{diff}")
    for path in _stale_files(rendered, out_dir):
        problems.append(f"{path}: not rendered from any model (stale file)")
    return problems


def _stale_files(rendered: dict[str, str], out_dir: Path) -> list[Path]:
    written = {(out_dir / name).resolve() for name in rendered}
    return sorted(path for directory in _rendered_dirs(rendered, out_dir) if directory.is_dir()
                  for path in directory.glob("*.y*ml") if path.resolve() not in written)


def _rendering(args: argparse.Namespace) -> dict[str, str] | None:
    try:
        return render_all(args.models_dir)
    except (ModelConfigError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return None


def _check(args: argparse.Namespace) -> int:
    rendered = _rendering(args)
    if rendered is None:
        return 2
    problems = differences(rendered, Path(args.out))
    for problem in problems:
        print(problem, file=sys.stderr)
    if problems:
        print(f"{len(problems)} manifest(s) differ; run `python -m predictors manifests render`", file=sys.stderr)
        return 1
    print(f"{len(rendered)} manifest(s) match the rendering")
    return 0


def _render(args: argparse.Namespace) -> int:
    rendered = _rendering(args)
    if rendered is None:
        return 2
    out_dir = Path(args.out)
    for path in _stale_files(rendered, out_dir):
        path.unlink()
        print(f"removed {path}")
    for name, text in sorted(rendered.items()):
        path = out_dir / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if not path.is_file() or path.read_text(encoding="utf-8") != text:
            path.write_text(text, encoding="utf-8")
            print(f"wrote {path}")
    return 0


def _validate(args: argparse.Namespace) -> int:
    try:
        from .validation import (
            CrdSchemasNotFound, ManifestError, SchemaRegistry, kubectl_build_errors, load_file, validate_documents,
            validate_folder,
        )
    except ImportError as exc:  # jsonschema comes with the `deploy` extra
        print(f"error: {exc}; install it with `pip install 'predictors[deploy]'`", file=sys.stderr)
        return 2
    try:
        registry = SchemaRegistry.from_crd_dir(args.crd_dir)
    except CrdSchemasNotFound as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    errors: list[str] = []
    count = 0
    for raw in args.paths:
        path = Path(raw)
        if path.is_dir():
            docs, found = validate_folder(path, registry)
            built = kubectl_build_errors(path)
            if built is None:
                print(f"note: kubectl is not installed; skipped the `kubectl kustomize {path}` comparison", file=sys.stderr)
            else:
                found += built
        else:
            try:
                docs = load_file(path)
            except (ManifestError, OSError) as exc:
                errors.append(str(exc))
                continue
            found = validate_documents(docs, registry)
        count += len(docs)
        errors += found
    for error in errors:
        print(f"error: {error}", file=sys.stderr)
    print(f"{count} document(s), {len(errors)} error(s)")
    return 1 if errors else 0
