"""Storage URIs: where a model is fetched from (predictor.yaml `storage_uri`, a repository load's
`storage_uri` parameter), parsed and checked before anything is fetched.

The schemes are those KServe's storage initializer reads (the `kserve-storage` package does the
fetching, in predictors/serving/storage/): `s3://bucket/prefix`, `gs://bucket/prefix`, Azure blob
and file shares as `https://<account>.blob.core.windows.net/<container>/<path>`, plain
`http(s)://host/path/file` (one file; a .tar.gz or .zip is unpacked), `pvc://<claim>/<path>` (a
claim mounted into the pod) and `file:///path`. A URI that is none of these, or that is malformed
(no bucket, `..` segments, credentials inside it, spaces...), is a StorageUriError whose message
says what is wrong: the repository API answers it with 400.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import urlsplit

SCHEMES = ("s3", "gs", "https", "http", "pvc", "file")
MAX_URI_CHARS = 2048
# S3 and GCS bucket names: 3-63 lower-case letters, digits, dots, dashes (GCS also allows _).
_BUCKET = re.compile(r"^[a-z0-9][a-z0-9._-]{1,61}[a-z0-9]$")
# A PersistentVolumeClaim name is a DNS-1123 subdomain.
_CLAIM = re.compile(r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$")
_AZURE_HOST = re.compile(r"^[a-z0-9]{3,24}\.(blob|file)\.(core\.windows\.net|z[0-9]{1,2}\.(blob|file)\.storage\.azure\.net)$")


class StorageUriError(ValueError):
    """A storage URI that cannot be fetched as written; the message says why and what is expected."""


@dataclass(frozen=True)
class StorageUri:
    """A parsed storage URI. `host` is the bucket (s3, gs), the claim (pvc), the host[:port]
    (http, https) or empty (file); `path` has no leading slash, except for file URIs."""

    scheme: str
    host: str
    path: str
    query: str = ""

    @property
    def text(self) -> str:
        """The URI in its normal form: scheme and host lower-case, as matched against the allow-list."""
        if self.scheme == "file":
            return f"file://{self.path}"
        query = f"?{self.query}" if self.query else ""
        return f"{self.scheme}://{self.host}/{self.path}{query}" if self.path else f"{self.scheme}://{self.host}{query}"

    @property
    def fetched_over_http(self) -> bool:
        """True for http(s) URIs other than Azure storage: the pod connects to the URI's own host."""
        return self.scheme in ("http", "https") and not self.is_azure

    @property
    def is_azure(self) -> bool:
        return self.scheme == "https" and bool(_AZURE_HOST.match(self.hostname))

    @property
    def hostname(self) -> str:
        """The host without a port (http, https)."""
        host = self.host
        if host.startswith("["):
            return host[1: host.index("]")]
        return host.rsplit(":", 1)[0] if host.count(":") == 1 else host

    def __str__(self) -> str:
        return self.text


def _check_segments(uri: str, path: str) -> None:
    segments = path.split("/")
    if any(segment in (".", "..") for segment in segments):
        raise StorageUriError(f"{uri!r}: '.' and '..' path segments are not allowed in a storage URI")


def parse_storage_uri(uri: object, *, prefix: bool = False) -> StorageUri:
    """`uri` parsed, or StorageUriError naming the problem. With `prefix`, a bare bucket, claim or
    host is accepted (an allow-list entry); a model's URI must name a path in it."""
    if not isinstance(uri, str) or not uri:
        raise StorageUriError(f"a storage URI is a non-empty string such as s3://bucket/models/name, got {uri!r}")
    if len(uri) > MAX_URI_CHARS:
        raise StorageUriError(f"a storage URI is at most {MAX_URI_CHARS} characters, got {len(uri)}")
    if any(c.isspace() or ord(c) < 32 or c == "\x7f" for c in uri) or "\\" in uri:
        raise StorageUriError(f"{uri[:80]!r}: a storage URI has no spaces, control characters or backslashes")
    scheme, separator, _ = uri.partition("://")
    scheme = scheme.lower()
    if not separator or not scheme:
        raise StorageUriError(f"{uri[:80]!r} is not a storage URI: expected <scheme>://..., one of {list(SCHEMES)}")
    if scheme not in SCHEMES:
        raise StorageUriError(f"{uri[:80]!r}: scheme {scheme!r} is not supported; use one of {list(SCHEMES)}")
    try:
        parts = urlsplit(uri)
        parts.port  # noqa: B018 -- raises ValueError for a port that is not a number
    except ValueError as exc:
        raise StorageUriError(f"{uri[:80]!r} is not a valid URI: {exc}") from None
    if parts.fragment:
        raise StorageUriError(f"{uri[:80]!r}: a storage URI has no #fragment")
    if parts.username is not None or parts.password is not None:
        raise StorageUriError(
            f"{scheme}:// URI with credentials in it: credentials come from the environment (as KServe's storage "
            "initializer reads them), never from the URI"
        )
    if scheme == "file":
        if parts.netloc or not parts.path.startswith("/"):
            raise StorageUriError(f"{uri[:80]!r}: a file URI is file:///absolute/path")
        _check_segments(uri, parts.path)
        if parts.query:
            raise StorageUriError(f"{uri[:80]!r}: a file URI has no query")
        return StorageUri("file", "", parts.path.rstrip("/") or "/")
    host = parts.netloc.lower()
    path = parts.path.lstrip("/")
    _check_segments(uri, path)
    if parts.query and scheme not in ("http", "https"):
        raise StorageUriError(f"{uri[:80]!r}: a {scheme}:// URI has no query")
    if scheme in ("s3", "gs"):
        if not _BUCKET.match(host):
            raise StorageUriError(
                f"{uri[:80]!r}: {scheme}://<bucket>/<prefix> needs a bucket name of 3-63 lower-case letters, digits, "
                f"dots and dashes, got {host!r}"
            )
    elif scheme == "pvc":
        if not _CLAIM.match(host):
            raise StorageUriError(f"{uri[:80]!r}: pvc://<claim>/<path> needs a PersistentVolumeClaim name, got {host!r}")
    else:  # http, https
        if not parts.hostname:
            raise StorageUriError(f"{uri[:80]!r}: an {scheme} URI needs a host")
    if not prefix and not path:
        where = {"s3": "bucket", "gs": "bucket", "pvc": "claim"}.get(scheme, "host")
        raise StorageUriError(f"{uri[:80]!r} names no model: add the model's path after the {where}")
    # Object stores and claims name folders ("prefix/" and "prefix" are the same); http paths are files.
    return StorageUri(scheme, host, path if scheme in ("http", "https") else path.rstrip("/"), parts.query)


def within(uri: StorageUri, prefix: StorageUri) -> bool:
    """`uri` lies under `prefix`: the same scheme and host, and a path that starts with the prefix's
    on a segment boundary (s3://b/team does not cover s3://b/team-b)."""
    if uri.scheme != prefix.scheme or uri.host != prefix.host:
        return False
    if not prefix.path or prefix.path == "/":
        return True
    base = prefix.path
    if base.endswith("/"):
        return uri.path.startswith(base)
    return uri.path == base or uri.path.startswith(base + "/")
