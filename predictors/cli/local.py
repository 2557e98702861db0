"""`list`: the model folders found, with the backend each would be served on and why, and when each
is loaded (predictor.yaml `loading`, else PREDICTORS_LOADING)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..backends import NoBackendError, choose_backend, device_for, discover_models
from ..model import PREDICTOR_FILE, ModelSettingsError, read_settings, remote_models
from ..model.environment import EnvironmentSettingError, server_environment


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("list", help="the model folders found, as a table", description="The models found, as a table.")
    parser.add_argument("--models-dir", default="models")
    parser.set_defaults(func=run)


def table(rows: list[tuple[str, ...]]) -> str:
    """Left-aligned columns, the first row a header."""
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows)


def run(args: argparse.Namespace) -> int:
    try:
        configs, errors = discover_models(args.models_dir)
    except FileNotFoundError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    try:
        default_loading = server_environment().loading
    except EnvironmentSettingError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2

    def loading(folder: Path) -> str:
        try:
            return read_settings(folder / PREDICTOR_FILE, folder.name).loading or default_loading
        except ModelSettingsError:
            return "-"

    rows = [("NAME", "TASK", "BACKEND", "BATCH", "LABELS", "VERSION", "ACCURACY", "LOADING")]
    reasons = []
    for config in configs:
        try:
            choice = choose_backend(config)
            backend = f"{choice.name} ({choice.weights.name})"
            device = device_for(choice.name)
            reasons.append(f"{config.name}: {choice.name} because {choice.reason}; on {device.device}: {device.reason}")
        except NoBackendError as exc:
            backend = "none: no weights"
            reasons.append(f"{config.name}: {exc}")
        accuracy = config.recorded_metrics().get("heldout_accuracy")
        labels = ",".join(config.labels) if len(config.labels) <= 6 else f"{len(config.labels)} labels"
        rows.append(
            (config.name, config.task, backend, str(config.batch_size), labels or "-", config.version,
             f"{accuracy:.3f}" if isinstance(accuracy, (int, float)) else "-", loading(config.path))
        )
    remote = remote_models(args.models_dir)
    for name, uri in remote.items():
        rows.append((name, "-", "-", "-", "-", "-", "-", loading(Path(args.models_dir) / name)))
        reasons.append(f"{name}: its files are fetched from {uri} when it is loaded")
    print(table(rows))
    if reasons:
        print()
    for line in reasons:
        print(line)
    for name, message in errors.items():
        print(f"{name}: cannot be served: {message}")
    if not configs and not errors and not remote:
        print(f"no models in {args.models_dir}")
    return 0
