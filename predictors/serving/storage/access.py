"""Who may make the server fetch what.

A load from a URI turns the repository API into a way to make the pod fetch anything it can reach
with its credentials: another tenant's bucket, an internal service, the cloud metadata address
that hands out those credentials. So:

- a URI given to the repository API is fetched only if it lies under a prefix of
  PREDICTORS_STORAGE_ALLOW (empty by default: no URI loads at all). A `storage_uri` in a model
  folder's predictor.yaml is the operator's own, like the rest of the folder, and needs no entry;
- for http(s) URIs (the pod connects to the URI's own host), link-local and cloud-metadata
  addresses are never fetched, whatever the allow-list says, and loopback only where an allow-list
  prefix names a loopback host. The check is made again on every connection the download opens
  (download.py), so neither a redirect nor a DNS answer that changes between check and fetch gets
  round it;
- object stores (s3, gs, Azure) are reached at the endpoint the operator configures, as KServe's
  storage initializer reads it (AWS_ENDPOINT_URL...): trusted, and their SDKs' own credential
  lookups (which may use the metadata address) are not touched.

Nothing here imports the server: download.py (a child process) uses `address_problem` too.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from ...model.storage_uri import StorageUri, StorageUriError, parse_storage_uri, within

#: Cloud metadata services outside the link-local range (AWS IPv6, Alibaba, Azure's wire server).
METADATA_ADDRESSES = frozenset(ipaddress.ip_address(a) for a in (
    "169.254.169.254", "169.254.170.2", "fd00:ec2::254", "100.100.100.200", "168.63.129.16",
))
#: Host names that resolve to a metadata service inside the clouds.
METADATA_HOSTS = frozenset(("metadata.google.internal", "metadata.goog", "metadata", "instance-data",
                            "instance-data.ec2.internal", "metadata.azure.internal"))
LOOPBACK_HOSTS = frozenset(("localhost", "localhost.localdomain", "ip6-localhost"))


class AccessRefused(Exception):
    """A fetch the policy does not allow; the message says why and what would allow it."""


def address_problem(address: str, loopback_allowed: bool) -> str | None:
    """Why the server must not connect to `address` (an IP), or None when it may."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if ip in METADATA_ADDRESSES:
        return f"{ip} is a cloud metadata address, which is never fetched"
    if ip.is_link_local:
        return f"{ip} is a link-local address (where cloud metadata services live), which is never fetched"
    if ip.is_multicast or (ip.is_reserved and not ip.is_loopback):
        return f"{ip} is not a unicast address"
    if (ip.is_loopback or ip.is_unspecified) and not loopback_allowed:
        return (f"{ip} is a loopback address of the pod itself; it is fetched only where a PREDICTORS_STORAGE_ALLOW "
                "prefix names a loopback host")
    return None


def is_loopback_host(host: str) -> bool:
    if host.lower() in LOOPBACK_HOSTS:
        return True
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return False
    return ip.is_loopback or ip.is_unspecified


@dataclass(frozen=True)
class HttpGuard:
    """What download.py checks on every connection of an http(s) download."""

    loopback_allowed: bool


class StorageAccess:
    """PREDICTORS_STORAGE_ALLOW and the address rules, checked before anything is fetched."""

    def __init__(self, allow: tuple[str, ...] | list[str]) -> None:
        self.prefixes: list[StorageUri] = []
        for text in allow:
            try:
                self.prefixes.append(parse_storage_uri(text, prefix=True))
            except StorageUriError as exc:  # the environment check lets through what only this parser knows
                raise ValueError(f"PREDICTORS_STORAGE_ALLOW: {exc}") from None

    def describe(self) -> list[str]:
        return [prefix.text for prefix in self.prefixes]

    def check(self, uri: StorageUri, *, from_api: bool) -> HttpGuard | None:
        """The guard the download runs under (http(s) URIs), or AccessRefused naming the rule.
        `from_api`: the URI came with a repository load, so it must be under an allowed prefix."""
        matched = next((prefix for prefix in self.prefixes if within(uri, prefix)), None)
        if from_api and matched is None:
            if not self.prefixes:
                raise AccessRefused(
                    f"loading from {uri.text} is refused: URI loads are off (PREDICTORS_STORAGE_ALLOW is empty; the "
                    "operator lists the URI prefixes the server may fetch from there)"
                )
            raise AccessRefused(
                f"loading from {uri.text} is refused: it is not under any prefix of PREDICTORS_STORAGE_ALLOW "
                f"({', '.join(self.describe())})"
            )
        if uri.scheme not in ("http", "https"):
            return None
        host = uri.hostname.lower().rstrip(".")
        if host in METADATA_HOSTS or host.endswith(".metadata.google.internal"):
            raise AccessRefused(f"loading from {uri.text} is refused: {host} is a cloud metadata service, which is never fetched")
        loopback_allowed = any(is_loopback_host(prefix.hostname) for prefix in self.prefixes if prefix.scheme == uri.scheme
                               and within(uri, prefix))
        if is_loopback_host(host) and not loopback_allowed:
            raise AccessRefused(
                f"loading from {uri.text} is refused: {host} is the pod itself; it is fetched only where a "
                "PREDICTORS_STORAGE_ALLOW prefix names a loopback host"
            )
        try:
            problem = address_problem(host, loopback_allowed)
        except ValueError:  # a name, not an address: checked on each connection (download.py)
            problem = None
        if problem:
            raise AccessRefused(f"loading from {uri.text} is refused: {problem}")
        return HttpGuard(loopback_allowed) if uri.fetched_over_http else None
