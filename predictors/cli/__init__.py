"""`python -m predictors COMMAND ...`: one argparse sub-command per module, registered in COMMANDS.

With no command, or with only flags (KServe's container mode passes `--model_name ... --model_dir
...`), the command is `serve`. An unknown command is an error, never a server.
"""

from __future__ import annotations

import argparse
import sys
from typing import Callable

from . import benchmark, client, convert_pickle, export, local, manifests, repository, serve, stats

#: Each module's `register(subparsers)` adds its sub-command(s) and sets `func`.
COMMANDS: tuple[Callable[[argparse._SubParsersAction], None], ...] = (
    serve.register,
    local.register,
    client.register,
    repository.register,
    export.register,
    convert_pickle.register,
    manifests.register,
    benchmark.register,
    stats.register,
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m predictors",
        description="KServe predictors for text models: serve model folders, query and manage a running "
        "server, export ONNX, render and validate Kubernetes manifests.",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for register in COMMANDS:
        register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or (argv[0].startswith("-") and argv[0] not in ("-h", "--help")):
        argv = ["serve", *argv]
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)
