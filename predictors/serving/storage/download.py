"""One model download with KServe's storage library, as a process of its own:

    python -m predictors.serving.storage.download REQUEST_JSON

REQUEST_JSON holds `uri`, `out` (a folder that must not exist yet), `parent_pid`, and `guard` (for
http(s) URIs: `{"loopback_allowed": bool}`). The last line on stdout is one JSON object: `{"files":
n, "bytes": n, "seconds": s}` after a complete download, or `{"error": {"kind": ..., "message":
...}}` with kind one of not_found, denied, refused, unreachable, invalid, no_space, failed.

Why a process: `kserve_storage.Storage.download` is the code behind KServe's storage initializer
(so s3, gs, Azure, http(s) and pvc URIs, their credentials from the environment and their endpoint
settings behave as in a cluster), and it is written for a process of its own: it sets environment
variables, forks a pool of downloaders for S3, and blocks. Here the server can stop it at once
(a timeout, shutdown) by killing the process group, the downloaded bytes never count against the
server's memory, and the process dies with the server (PR_SET_PDEATHSIG). The server renames `out`
into its cache only after this exits with a complete download (cache.py).
"""

from __future__ import annotations

import ctypes
import errno
import json
import os
import re
import signal
import socket
import sys
import time
from pathlib import Path
from typing import Any

from .access import address_problem

#: Keys that would leave the download folder (kserve_storage joins object keys to it as they are):
#: such objects are skipped, never written.
UNSAFE_KEY_PATTERNS = ["..", "../*", "*/..", "*/../*"]
_PR_SET_PDEATHSIG = 1


class GuardRefused(Exception):
    """A connection the access policy does not allow (not an OSError, so no HTTP client retries it)."""


def die_with_parent(parent_pid: int) -> None:
    """Linux: SIGKILL this process when the server dies; if it already died, exit now."""
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):
        return
    if os.getppid() != parent_pid:
        sys.exit(1)


def guard_connections(loopback_allowed: bool) -> None:
    """Check every address an HTTP connection of this process goes to, and connect to the address
    checked (not to a second DNS answer): a redirect or a changing DNS answer cannot reach the
    metadata service or, unless allowed, the pod itself."""
    import urllib3.util.connection as connection

    original = connection.create_connection

    def create_connection(address: tuple[str, int], *args: Any, **kwargs: Any) -> socket.socket:
        host, port = address
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        for info in infos:
            problem = address_problem(str(info[4][0]), loopback_allowed)
            if problem:
                raise GuardRefused(f"{host} resolves to {info[4][0]}: {problem}")
        return original((str(infos[0][4][0]), port), *args, **kwargs)

    connection.create_connection = create_connection


def _chain(exc: BaseException) -> list[BaseException]:
    seen: list[BaseException] = []
    while exc is not None and exc not in seen:
        seen.append(exc)
        exc = exc.__cause__ or exc.__context__
    return seen


URL = re.compile(r"[a-z][a-z0-9+.-]*://\S+", re.IGNORECASE)


def classify(exc: BaseException) -> tuple[str, str]:
    """(kind, message) for a failed download, from the exception and what caused it."""
    chain = _chain(exc)
    names = {type(e).__name__ for e in chain}
    text = " | ".join(str(e) for e in chain)
    # Words are looked for outside URLs: an endpoint such as http://127.0.0.1:40409/ holds "404".
    lowered = URL.sub("<url>", text).lower()
    codes = set()
    for e in chain:
        response = getattr(e, "response", None)
        if isinstance(response, dict):
            codes.add(str(response.get("Error", {}).get("Code", "")))
    message = str(chain[0]) if str(chain[0]) else type(chain[0]).__name__
    if len(chain) > 1 and str(chain[-1]) and str(chain[-1]) not in message:
        message = f"{message} ({str(chain[-1])[:300]})"
    if "GuardRefused" in names:
        refusal = next(e for e in chain if type(e).__name__ == "GuardRefused")
        return "refused", str(refusal)
    if any(isinstance(e, OSError) and e.errno == errno.ENOSPC for e in chain):
        return "no_space", message
    if codes & {"NoSuchBucket", "NoSuchKey", "404", "NotFound"} or names & {"NotFound", "ResourceNotFoundError"} \
            or any(words in lowered for words in ("not found", "no model found", "does not exist", "cannot locate")) \
            or re.search(r"\b404\b", lowered):
        return "not_found", message
    if codes & {"AccessDenied", "403", "InvalidAccessKeyId", "SignatureDoesNotMatch", "AllAccessDisabled"} \
            or names & {"NoCredentialsError", "Forbidden", "ClientAuthenticationError", "DefaultCredentialsError"} \
            or "access denied" in lowered or "authentication failed" in lowered or "forbidden" in lowered:
        return "denied", message
    if names & {"EndpointConnectionError", "ConnectTimeoutError", "ReadTimeoutError", "ConnectionClosedError",
                "ConnectionError", "Timeout", "ConnectTimeout", "ReadTimeout", "ResponseStreamingError",
                "IncompleteReadError", "ProtocolError", "gaierror"} \
            or any(word in lowered for word in ("could not connect", "failed to connect", "connection", "timed out",
                                                "name or service not known", "incomplete")):
        return "unreachable", message
    if "cannot recognize storage type" in lowered or "no filename" in lowered:
        return "invalid", message
    return "failed", message


def ignore_patterns() -> list[str]:
    """The unsafe keys, plus STORAGE_IGNORE_PATTERNS as KServe's storage initializer reads it (a JSON
    list or comma-separated), which an explicit list would otherwise replace."""
    value = os.environ.get("STORAGE_IGNORE_PATTERNS", "").strip()
    try:
        configured = json.loads(value) if value else []
    except json.JSONDecodeError:
        configured = value.split(",")
    if not isinstance(configured, list):
        configured = [configured]
    return UNSAFE_KEY_PATTERNS + [str(p).strip() for p in configured if str(p).strip()]


def download(uri: str, out: Path) -> dict[str, Any]:
    from kserve_storage import Storage  # imported here: it pulls in requests (and boto3 when asked)

    started = time.monotonic()
    Storage.download(uri, str(out), ignore_patterns=ignore_patterns())
    files = 0
    size = 0
    for root, _, names in os.walk(out):
        for name in names:
            stat = os.lstat(os.path.join(root, name))
            files += 1
            size += stat.st_size
    if files == 0:
        raise FileNotFoundError(f"no model found at {uri}: nothing was downloaded")
    return {"files": files, "bytes": size, "seconds": round(time.monotonic() - started, 3)}


def main(argv: list[str]) -> int:
    request = json.loads(argv[0])
    if request.get("parent_pid") is not None:
        die_with_parent(int(request["parent_pid"]))
    if request.get("guard") is not None:
        guard_connections(bool(request["guard"]["loopback_allowed"]))
    out = Path(request["out"])
    try:
        result: dict[str, Any] = download(request["uri"], out)
        code = 0
    except BaseException as exc:  # noqa: BLE001 -- every failure is reported to the server, classified
        kind, message = classify(exc)
        result = {"error": {"kind": kind, "message": message[:2000]}}
        code = 1
    sys.stdout.write(json.dumps(result) + "\n")
    sys.stdout.flush()
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
