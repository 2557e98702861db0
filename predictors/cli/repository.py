"""Commands that manage a running server's models: `models` (the repository index as a table, with
how each model loads, its measured memory and the budget), `load NAME [--uri URI]` (load or
hot-swap from the folder, or fetch it from a storage URI) and `unload NAME`.

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
    for action, text in (("load", "load a model, or hot-swap it to what its folder (or --uri) holds now"),
                         ("unload", "unload a model: new requests get 503, in-flight ones finish, memory is freed")):
        parser = subparsers.add_parser(action, help=text, description=text[0].upper() + text[1:] + ".")
        parser.add_argument("name", help="the model's name: its folder under the server's models folder, or the "
                                         "name to serve a --uri model under")
        parser.add_argument("--url", default=DEFAULT_URL)
        if action == "load":
            parser.add_argument("--uri", metavar="URI", help="fetch the model from a storage URI (s3://, gs://, https://, "
                                "pvc://...) with KServe's storage library; the server must allow its prefix "
                                "(PREDICTORS_STORAGE_ALLOW)")
        parser.set_defaults(func=run_action, action=action)


class ServerError(Exception):
    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def post(url: str, path: str, timeout: float = 600, body: dict | None = None) -> Any:
    return call(url, path, timeout, json.dumps(body or {}).encode())


def call(url: str, path: str, timeout: float = 600, data: bytes | None = None) -> Any:
    """POST `data` (GET without it) and the JSON answer, or ServerError with the server's reason."""
    request = urllib.request.Request(f"{url.rstrip('/')}{path}", data=data, method="POST" if data is not None else "GET",
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
    header = ("NAME", "VERSION", "STATE", "LOADING", "MEMORY", "REASON")
    print(table([header, *((r["name"], r.get("version") or "-", r["state"], r.get("loading") or "-",
                            mebibytes(r.get("resident_bytes")), r.get("reason") or "") for r in rows)]))
    try:
        memory = call(args.url, "/v2/repository/memory", timeout=30)
    except ServerError:
        return 0  # an older server: the table is all there is
    used, budget = mebibytes(memory.get("used_bytes")), memory.get("budget_bytes")
    print(f"\nmodel memory: {used} used of {mebibytes(budget) if budget is not None else 'no budget'} "
          f"({memory.get('source')}); process RSS {mebibytes(memory.get('process_resident_bytes'))}")
    return 0


def mebibytes(count: int | None) -> str:
    return "-" if count is None else f"{count / 2**20:.0f} MiB"


def run_action(args: argparse.Namespace) -> int:
    path = f"/v2/repository/models/{urllib.parse.quote(args.name, safe='')}/{args.action}"
    uri = getattr(args, "uri", None)
    try:
        result = post(args.url, path, body={"parameters": {"storage_uri": uri}} if uri else None)
    except ServerError as exc:
        print(f"error: cannot {args.action} '{args.name}': {exc}", file=sys.stderr)
        return exc.exit_code
    if args.action == "load":
        fetched = result.get("download") or {}
        source = f" from {result['storage_uri']}" if result.get("storage_uri") else ""
        download = f" ({fetched['bytes']} bytes downloaded in {fetched['seconds']} s)" if fetched.get("bytes") else ""
        print(f"{args.name}: loaded{source}{download}; serving versions {result.get('versions')}, default {result.get('default')}")
    else:
        print(f"{args.name}: unloaded (versions {result.get('unloaded')})")
    return 0
