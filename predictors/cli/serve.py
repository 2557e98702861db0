"""`serve`: every model folder under --models-dir, or KServe's container mode (--model_dir)."""

from __future__ import annotations

import argparse
import socket
import sys
from pathlib import Path

from kserve.model_server import parser as kserve_parser

from ..model import CONFIG_FILE
from ..tasks import discover_models, load_model_config
from ..model import ModelConfigError


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "serve",
        parents=[kserve_parser],  # kserve's own server flags (--http_port, --grpc_port, --workers...)
        help="serve model folders over KServe V2 REST, V1 REST and gRPC (the default command)",
        description="Serve text models over KServe V2 REST, V1 REST and gRPC. Takes kserve's server flags.",
    )
    parser.add_argument("--models-dir", default="models", help="serve every model folder in this folder")
    parser.add_argument("--model_dir", help="KServe container mode: serve the one model in this folder")
    parser.set_defaults(func=run, model_name=None)


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("0.0.0.0", port))
        except OSError:
            return False
    return True


def container_model_folder(model_dir: Path) -> Path:
    """storageUri may point at the model folder itself or at a folder holding exactly one model."""
    if (model_dir / CONFIG_FILE).is_file():
        return model_dir
    children = (
        [p for p in model_dir.iterdir() if p.is_dir() and (p / CONFIG_FILE).is_file()] if model_dir.is_dir() else []
    )
    if len(children) == 1:
        return children[0]
    raise SystemExit(f"error: {model_dir} holds no model (expected config.json in it or in exactly one sub-folder)")


def run(args: argparse.Namespace) -> int:
    if args.model_dir:
        folder = container_model_folder(Path(args.model_dir))
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
    ports = [args.http_port] + ([args.grpc_port] if args.enable_grpc else [])
    for port in ports:
        if not _port_free(port):
            print(f"error: port {port} is already in use; choose another with --http_port / --grpc_port", file=sys.stderr)
            return 2

    from ..serving.server import FolderModelRepository, PredictorServer

    repository = FolderModelRepository(args.model_dir or args.models_dir)
    for config in configs:
        repository.register(config)
    print(f"serving {', '.join(c.name for c in configs)} on http :{args.http_port} / grpc :{args.grpc_port}", flush=True)
    PredictorServer(
        repository,
        http_port=args.http_port,
        grpc_port=args.grpc_port,
        workers=args.workers,
        max_threads=args.max_threads,
        max_asyncio_workers=args.max_asyncio_workers,
        enable_grpc=args.enable_grpc,
        enable_docs_url=args.enable_docs_url,
        enable_latency_logging=args.enable_latency_logging,
        access_log_format=args.access_log_format,
        timeout_keep_alive=args.timeout_keep_alive,
    ).start()
    return 0
