"""`python -m predictors [serve|list|infer|export] ...`

serve (the default) takes kserve's standard server flags (--http_port, --grpc_port, --workers, ...):
kserve parses them itself when it is imported, so they behave exactly as in any kserve server.
"""

from __future__ import annotations

import argparse
import json
import socket
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

COMMANDS = ("serve", "list", "infer", "export")


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    command = argv.pop(0) if argv and argv[0] in COMMANDS else "serve"
    if command == "serve":
        return serve(argv)
    if command == "list":
        return list_models(argv)
    if command == "infer":
        return infer(argv)
    from .onnx_export import cli as export_cli

    return export_cli(argv)


# ---- serve --------------------------------------------------------------------------------------
def _serve_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m predictors serve",
        description="Serve text models over KServe V2 REST, V1 REST and gRPC. Also accepts kserve's server flags.",
    )
    parser.add_argument("--models-dir", default="models", help="serve every model folder in this folder")
    parser.add_argument("--model_dir", help="KServe container mode: serve the one model in this folder")
    parser.add_argument("--model_name", help="with --model_dir: the name to serve it under")
    parser.add_argument("--http_port", type=int, default=8080)
    parser.add_argument("--grpc_port", type=int, default=8081)
    parser.add_argument("--enable_grpc", default="true")
    return parser


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("0.0.0.0", port))
        except OSError:
            return False
    return True


def _container_model_folder(model_dir: Path) -> Path:
    """storageUri may point at the model folder itself or at a folder holding exactly one model."""
    if (model_dir / "config.json").is_file():
        return model_dir
    children = [p for p in model_dir.iterdir() if p.is_dir() and (p / "config.json").is_file()] if model_dir.is_dir() else []
    if len(children) == 1:
        return children[0]
    raise SystemExit(f"error: {model_dir} holds no model (expected config.json in it or in exactly one sub-folder)")


def serve(argv: list[str]) -> int:
    args, _kserve_flags = _serve_parser().parse_known_args(argv)
    from .config import ModelConfigError, discover_models, load_model_config

    if args.model_dir:
        folder = _container_model_folder(Path(args.model_dir))
        try:
            configs = [load_model_config(folder, args.model_name or folder.name)]
        except ModelConfigError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        errors: dict[str, str] = {}
    else:
        try:
            configs, errors = discover_models(args.models_dir)
        except FileNotFoundError:
            print(
                f"error: models folder '{args.models_dir}' does not exist. Build the demo models with "
                f"`make models`, or point --models-dir at a folder of HuggingFace model folders.",
                file=sys.stderr,
            )
            return 2
    for name, message in errors.items():
        print(f"warning: skipping model '{name}': {message}", file=sys.stderr)
    if not configs:
        print(
            f"error: no models found in '{args.models_dir}'. Each model is a sub-folder with a config.json "
            f"(run `make models` to build the demo models).",
            file=sys.stderr,
        )
        return 2
    ports = [args.http_port] + ([args.grpc_port] if str(args.enable_grpc).lower() in ("true", "1", "yes") else [])
    for port in ports:
        if not _port_free(port):
            print(f"error: port {port} is already in use; choose another with --http_port / --grpc_port", file=sys.stderr)
            return 2

    from .server import FolderModelRepository, PredictorServer

    repository = FolderModelRepository(args.model_dir or args.models_dir)
    for config in configs:
        repository.register(config)
    print(f"serving {', '.join(c.name for c in configs)} on http :{args.http_port} / grpc :{args.grpc_port}", flush=True)
    PredictorServer(repository, http_port=args.http_port, grpc_port=args.grpc_port).start()
    return 0


# ---- list ---------------------------------------------------------------------------------------
def list_models(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m predictors list", description="The models found, as a table.")
    parser.add_argument("--models-dir", default="models")
    args = parser.parse_args(argv)
    from .backends import NoBackendError, choose_backend
    from .config import discover_models

    try:
        configs, errors = discover_models(args.models_dir)
    except FileNotFoundError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    rows = [("NAME", "TASK", "BACKEND", "BATCH", "LABELS", "VERSION", "ACCURACY")]
    reasons = []
    for config in configs:
        try:
            choice = choose_backend(config)
            backend = f"{choice.name} ({choice.weights.name})"
            reasons.append(f"{config.name}: {choice.name} because {choice.reason}")
        except NoBackendError as exc:
            backend = "none: no weights"
            reasons.append(f"{config.name}: {exc}")
        accuracy = config.recorded_metrics().get("heldout_accuracy")
        labels = ",".join(config.labels) if len(config.labels) <= 6 else f"{len(config.labels)} labels"
        rows.append(
            (config.name, config.task, backend, str(config.batch_size), labels or "-", config.version,
             f"{accuracy:.3f}" if isinstance(accuracy, (int, float)) else "-")
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip())
    if reasons:
        print()
    for line in reasons:
        print(line)
    for name, message in errors.items():
        print(f"{name}: cannot be served: {message}")
    if not configs and not errors:
        print(f"no models in {args.models_dir}")
    return 0


# ---- infer --------------------------------------------------------------------------------------
def infer(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m predictors infer", description="Send a V2 request and print the answer.")
    parser.add_argument("model")
    parser.add_argument("texts", nargs="+")
    parser.add_argument("--url", default="http://127.0.0.1:8080")
    parser.add_argument("--json", action="store_true", help="print the raw V2 response")
    args = parser.parse_args(argv)
    body = {"inputs": [{"name": "text", "datatype": "BYTES", "shape": [len(args.texts)], "data": args.texts}]}
    request = urllib.request.Request(
        f"{args.url.rstrip('/')}/v2/models/{args.model}/infer",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=120) as reply:
            response = json.loads(reply.read())
    except urllib.error.HTTPError as exc:
        print(f"error: HTTP {exc.code}: {exc.read().decode(errors='replace')}", file=sys.stderr)
        return 1
    except urllib.error.URLError as exc:
        print(f"error: cannot reach {args.url}: {exc.reason}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(response, indent=2))
        return 0
    print(format_response(args.texts, response))
    return 0


def format_response(texts: list[str], response: dict[str, Any]) -> str:
    outputs = {o["name"]: o for o in response["outputs"]}
    lines = []
    for i, text in enumerate(texts):
        lines.append(f"{text!r}")
        if "label" in outputs:
            label = outputs["label"]["data"][i]
            score = outputs["score"]["data"][i] if "score" in outputs else None
            lines.append(f"  label: {label}" + (f"  score: {score:.4f}" if score is not None else ""))
        if "embedding" in outputs:
            dim = outputs["embedding"]["shape"][1]
            vector = outputs["embedding"]["data"][i * dim : (i + 1) * dim]
            lines.append(f"  embedding: dim {dim} [{', '.join(f'{v:.4f}' for v in vector[:4])}, ...]")
        if "entities" in outputs:
            entities = json.loads(outputs["entities"]["data"][i])
            if not entities:
                lines.append("  entities: none")
            for entity in entities:
                lines.append(
                    f"  {entity['entity']:<14} {entity['text']!r} [{entity['start']}:{entity['end']}] score {entity['score']:.3f}"
                )
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
