"""`serve`: every model folder under --models-dir, or KServe's container mode (--model_dir)."""

from __future__ import annotations

import argparse
import socket
import sys
from pathlib import Path

from kserve.model_server import parser as kserve_parser

from ..model import ModelConfigError
from ..model.environment import EnvironmentSettingError, ServerEnvironment, server_environment
from ..model.files import holds_a_model
from ..serving.observability.logs import configure_logging
from ..serving.repository import PredictorRepository
from ..serving.transport.server import PredictorServer, ServerOptions, ServerStartError, loop_factory
from ..backends import load_model_config


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "serve",
        parents=[kserve_parser],  # kserve's own server flags (--http_port, --grpc_port, --workers...)
        help="serve model folders over KServe V2 REST, V1 REST and gRPC (the default command)",
        description="Serve text models over KServe V2 REST, V1 REST and gRPC. Takes kserve's server flags.",
    )
    parser.add_argument("--models-dir", default="models", help="serve every model folder in this folder")
    parser.add_argument("--model_dir", help="KServe container mode: serve the one model in this folder")
    parser.add_argument(
        "--watch", type=float, default=0.0, metavar="SECONDS",
        help="poll the models folder every SECONDS: new folders, finished builds and changed versions load "
        "without a restart (0: off; POST /v2/repository/models/<name>/load does it on demand)",
    )
    parser.add_argument(
        "--cors-allowed-origins", metavar="ORIGINS",
        help="comma-separated origins whose browser pages may call the API (CORS), e.g. "
        "https://app.example.com, or *; default: PREDICTORS_CORS_ALLOWED_ORIGINS, else off",
    )
    parser.add_argument(
        "--log-format", choices=("text", "json"), default="text",
        help="text: kserve's format; json: one JSON object per line (timestamp, level, model, request_id, message)",
    )
    # kserve's per-request latency log lines are off by default: predictors_* metrics measure every
    # stage, and two log lines per request cost throughput (--enable_latency_logging true brings them back).
    parser.set_defaults(func=run, model_name=None, enable_latency_logging=False)


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
    if holds_a_model(model_dir):
        return model_dir
    children = [p for p in model_dir.iterdir() if p.is_dir() and holds_a_model(p)] if model_dir.is_dir() else []
    if len(children) == 1:
        return children[0]
    raise SystemExit(f"error: {model_dir} holds no model (expected config.json or a .skops file in it or in exactly "
                     "one sub-folder)")


def _repository(models_dir: Path | str, environment: ServerEnvironment, **kwargs: object) -> PredictorRepository | None:
    try:
        return PredictorRepository.from_environment(models_dir, environment, **kwargs)
    except ValueError as exc:  # an allow-list prefix the URI parser refuses
        print(f"error: {exc}", file=sys.stderr)
        return None


def run(args: argparse.Namespace) -> int:
    try:  # every setting checked before anything starts: the pod restarts with the reason
        flags = {"cors_allowed_origins": args.cors_allowed_origins} if args.cors_allowed_origins is not None else {}
        environment = server_environment(**flags)
        options = ServerOptions.from_args(args)
        options.check()
        loop_factory(options.event_loop)
    except (EnvironmentSettingError, ServerStartError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.model_dir:
        folder = container_model_folder(Path(args.model_dir))
        name = args.model_name or folder.name
        try:
            load_model_config(folder, name)  # fail fast on a broken folder: the pod restarts with the reason
        except ModelConfigError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        repository = _repository(folder.parent, environment, strict=True)
        if repository is None:
            return 2
        repository.add_folder(folder, name)
    else:
        if not Path(args.models_dir).is_dir():
            print(
                f"error: models folder '{args.models_dir}' does not exist. Build the demo models with "
                f"`make models`, or point --models-dir at a folder of HuggingFace model folders.",
                file=sys.stderr,
            )
            return 2
        repository = _repository(args.models_dir, environment)
        if repository is None:
            return 2
        repository.scan()
        if not repository.entries and not args.watch and not environment.storage_allow:
            print(
                f"error: no models found in '{args.models_dir}'. Each model is a sub-folder with a config.json or a "
                f".skops file (run `make models` to build the demo models).",
                file=sys.stderr,
            )
            return 2
    ports = [options.http_port] + ([options.grpc_port] if options.enable_grpc else [])
    if len(set(ports)) < len(ports):
        print(f"error: --http_port and --grpc_port are both {options.http_port}; HTTP and gRPC need a port each",
              file=sys.stderr)
        return 2
    for port in ports:
        if not _port_free(port):
            print(f"error: port {port} is already in use; choose another with --http_port / --grpc_port", file=sys.stderr)
            return 2

    if args.configure_logging:
        configure_logging(args.log_format, args.log_config_file)

    names = ", ".join(sorted(repository.entries)) or f"(none yet; watching {args.models_dir})"
    print(f"serving {names} on http :{options.http_port} / grpc :{options.grpc_port}", flush=True)
    PredictorServer(repository, options, environment, watch_seconds=args.watch).run()
    return 0
