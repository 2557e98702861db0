"""Commands that talk to a running server: `infer`."""

from __future__ import annotations

import argparse
import json
import sys
import urllib.error
import urllib.request
from typing import Any

from ..tasks import TASKS

DEFAULT_URL = "http://127.0.0.1:8080"


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("infer", help="send a V2 request and print the answer",
                                   description="Send a V2 request and print the answer.")
    parser.add_argument("model")
    parser.add_argument("texts", nargs="+")
    parser.add_argument("--url", default=DEFAULT_URL)
    parser.add_argument("--json", action="store_true", help="print the raw V2 response")
    parser.set_defaults(func=infer)


def infer(args: argparse.Namespace) -> int:
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
    """Each text and, under it, what each task head makes of its outputs."""
    outputs = {o["name"]: o for o in response["outputs"]}
    lines = []
    for i, text in enumerate(texts):
        lines.append(f"{text!r}")
        for head in TASKS.values():
            lines.extend(head.format_text(outputs, i))
    return "\n".join(lines)
