"""`manifests render|check|validate`: the Kubernetes manifests rendered from the model folders."""

from __future__ import annotations

import argparse

from ..deploy import cli as deploy_cli


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("manifests", help="render, check or validate the Kubernetes manifests")
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    deploy_cli.register(actions)
