#!/usr/bin/env python3
"""Render manifests/ from the model configs (models/<name>/predictor.yaml), or check them.

    python tools/render_manifests.py            # write manifests/
    python tools/render_manifests.py --check    # exit 1 and list what differs from the rendering

The rules live in predictors/deploy.py; the per-model numbers in each predictor.yaml `deploy:`
section (measured by tools/measure_deploy.py). Never edit manifests/ by hand.
"""

from __future__ import annotations

import argparse
import difflib
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from predictors.model import ModelConfigError  # noqa: E402
from predictors.deploy.render import render_all  # noqa: E402


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
    for path in sorted(out_dir.glob("*.y*ml")) if out_dir.is_dir() else []:
        if path.name not in rendered:
            problems.append(f"{path}: not rendered from any model (stale file)")
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models-dir", default=str(ROOT / "models"))
    parser.add_argument("--out", default=str(ROOT / "manifests"))
    parser.add_argument("--check", action="store_true", help="compare, write nothing, exit 1 on any difference")
    args = parser.parse_args(argv)
    out_dir = Path(args.out)
    try:
        rendered = render_all(args.models_dir)
    except (ModelConfigError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.check:
        problems = differences(rendered, out_dir)
        for problem in problems:
            print(problem, file=sys.stderr)
        if problems:
            print(f"{len(problems)} manifest(s) differ; run `python tools/render_manifests.py`", file=sys.stderr)
            return 1
        print(f"{len(rendered)} manifest(s) match the rendering")
        return 0
    out_dir.mkdir(parents=True, exist_ok=True)
    for path in out_dir.glob("*.y*ml"):
        if path.name not in rendered:
            path.unlink()
            print(f"removed {path}")
    for name, text in sorted(rendered.items()):
        path = out_dir / name
        if not path.is_file() or path.read_text(encoding="utf-8") != text:
            path.write_text(text, encoding="utf-8")
            print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
