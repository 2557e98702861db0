"""The `deploy:` section of a model's predictor.yaml, rewritten in place by
`tools/measure_deploy.py --write` (everything else in the file is kept byte for byte)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

PREDICTOR_FILE_COMMENT = (
    "Kubernetes sizing for manifests/ (rules: predictors/deploy/sizing.py). startup_seconds and\n"
    "peak_rss_mib are measured by `tools/measure_deploy.py --write`; other keys override the defaults there."
)


def update_deploy_section(predictor_yaml: Path, updates: dict[str, Any], comment: str = "") -> str:
    """Rewrite only the top-level `deploy:` block of a predictor.yaml (appending one if absent).

    Everything outside that block is kept byte for byte. Returns the new text (also written).
    """
    text = predictor_yaml.read_text(encoding="utf-8") if predictor_yaml.is_file() else ""
    current = (yaml.safe_load(text) or {}).get("deploy") or {}
    merged = {**current, **updates}
    body = yaml.safe_dump(merged, sort_keys=False, default_flow_style=False, width=120)
    block = "deploy:\n"
    if comment:
        block += "".join(f"  # {line}\n" for line in comment.splitlines())
    block += "".join(f"  {line}\n" for line in body.splitlines())
    lines = text.splitlines(keepends=True)
    start = next((i for i, line in enumerate(lines) if re.match(r"deploy\s*:", line)), None)
    if start is None:
        new_text = text + ("" if not text or text.endswith("\n") else "\n") + block
    else:
        end = start + 1
        while end < len(lines) and (not lines[end].strip() or lines[end][0] in " \t#"):
            end += 1
        # trailing blank lines and comments belong to what follows
        while end > start + 1 and (not lines[end - 1].strip() or lines[end - 1].lstrip().startswith("#")) and lines[end - 1][:1] not in " \t":
            end -= 1
        new_text = "".join(lines[:start]) + block + "".join(lines[end:])
    predictor_yaml.write_text(new_text, encoding="utf-8")
    return new_text
