"""`list`: the model folders found, with the backend each would be served on and why, when each is
loaded (predictor.yaml `loading`, else PREDICTORS_LOADING), how each was trained (date, data, sizes,
held-out accuracy) and what its inputs are made of (features)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

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


def features_line(features: dict[str, Any]) -> str:
    """`tokenizer BertTokenizer (WordPiece, 30522), max_length 128` or
    `TfidfVectorizer, vocabulary 35316, n-grams 1-2, then LogisticRegression`."""
    if not features:
        return "-"
    if "vectorizer" in features:
        parts = [str(features["vectorizer"])]
        if "vocabulary_size" in features:
            parts.append(f"vocabulary {features['vocabulary_size']}")
        if "n_features" in features:
            parts.append(f"{features['n_features']} hashed features")
        if isinstance(features.get("ngram_range"), list):
            low, high = features["ngram_range"]
            parts.append(f"n-grams {low}-{high}" if low != high else f"{low}-grams")
        return ", ".join(parts) + (f", then {features['classifier']}" if "classifier" in features else "")
    kind = ", ".join(str(features[k]) for k in ("subwords", "vocabulary_size") if k in features)
    tokenizer = f"tokenizer {features.get('tokenizer', '?')}" + (f" ({kind})" if kind else "")
    return f"{tokenizer}, max_length {features.get('max_length', '?')}"


def training_line(training: dict[str, Any]) -> str:
    """`trained 2026-12-07 on <data> (4000 train / 1000 held out), held-out accuracy 0.807`."""
    if not training:
        return "not recorded (add training: to predictor.yaml)"
    sizes = " / ".join(f"{training[k]} {what}" for k, what in (("train_size", "train"), ("heldout_size", "held out"))
                       if k in training)
    parts = [f"trained {training['date']}"] if "date" in training else []
    if "data" in training:
        parts.append(f"on {training['data']}" if parts else str(training["data"]))
    if sizes:
        parts.append(f"({sizes})")
    text = " ".join(parts)
    if "heldout_accuracy" in training:
        text += f", held-out accuracy {training['heldout_accuracy']:.3f}"
    return text


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
        reasons.append(f"  training: {training_line(config.training_metadata())}")
        cleaning = config.cleaner.steps()
        reasons.append(f"  features: {features_line(config.features)}"
                       + (f"; text cleaning: {', '.join(cleaning)}" if cleaning else ""))
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
