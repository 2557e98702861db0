"""Commands that manage a running server's models: `models` (the repository index as a table),
`load NAME` (load or hot-swap from the folder) and `unload NAME`.

Exit codes: 0 done, 1 the server refused (the reason is printed), 2 the server cannot be reached."""

from __future__ import annotations

import argparse
import json
import sys
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

from .client import DEFAULT_URL
from .local import table


def register(subparsers: argparse._SubParsersAction) -> None:
    models = subparsers.add_parser("models", help="a running server's models and versions with their state",
                                   description="The repository index of a running server, as a table.")
    models.add_argument("--url", default=DEFAULT_URL)
    models.add_argument("--json", action="store_true", help="print the index as JSON")
    models.set_defaults(func=run_models)
    for action, text in (("load", "load a model, or hot-swap it to what its folder holds now"),
                         ("unload", "unload a model: new requests get 503, in-flight ones finish, memory is freed")):
        parser = subparsers.add_parser(action, help=text, description=text[0].upper() + text[1:] + ".")
        parser.add_argument("name", help="the model's folder name under the server's models folder")
        parser.add_argument("--url", default=DEFAULT_URL)
        parser.set_defaults(func=run_action, action=action)


class ServerError(Exception):
    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def post(url: str, path: str, timeout: float = 600) -> Any:
    request = urllib.request.Request(f"{url.rstrip('/')}{path}", data=b"{}", method="POST",
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as reply:
            return json.loads(reply.read() or b"null")
    except urllib.error.HTTPError as exc:
        body = exc.read().decode(errors="replace")
        try:
            message = json.loads(body).get("error", body)
        except (ValueError, AttributeError):
            message = body
        raise ServerError(f"HTTP {exc.code}: {message}", 1) from None
    except urllib.error.URLError as exc:
        raise ServerError(f"cannot reach {url}: {exc.reason}", 2) from None


def run_models(args: argparse.Namespace) -> int:
    try:
        rows = post(args.url, "/v2/repository/index", timeout=30)
    except ServerError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    header = ("NAME", "VERSION", "STATE", "REASON")
    print(table([header, *((r["name"], r.get("version") or "-", r["state"], r.get("reason") or "") for r in rows)]))
    return 0


def run_action(args: argparse.Namespace) -> int:
    path = f"/v2/repository/models/{urllib.parse.quote(args.name, safe='')}/{args.action}"
    try:
        result = post(args.url, path)
    except ServerError as exc:
        print(f"error: cannot {args.action} '{args.name}': {exc}", file=sys.stderr)
        return exc.exit_code
    if args.action == "load":
        print(f"{args.name}: loaded; serving versions {result.get('versions')}, default {result.get('default')}")
    else:
        print(f"{args.name}: unloaded (versions {result.get('unloaded')})")
    return 0
