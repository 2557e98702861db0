"""The package index this machine's pip uses, handed to an image build.

Reads the host pip's effective configuration (`pip config list`: config files and PIP_* variables)
and writes, into OUT_DIR:

- `pip.conf`: the same index-url / extra-index-url / find-links / trusted-host / timeout, with the
  certificate bundle pointing at where the build mounts the host's (`/run/host-certs/...`);
- `build-args`: one podman/docker build flag per line: a read-only `--volume` for every local
  folder those settings name (mounted at the same path, so the URLs stay valid), the pip.conf and
  the certificate bundle, and `--build-arg TORCH_INDEX_URL=...` when the host's pip finds the
  pinned CPU torch wheel in a local file (then a one-wheel PEP 503 index is mounted instead of the
  public https://download.pytorch.org/whl/cpu, which stays the Dockerfile's default).

Nothing here is baked into the image: podman mounts these only while RUN steps execute.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import urllib.parse
from pathlib import Path

#: pip options forwarded to the build, as `pip config list` names them.
FORWARDED = ("index-url", "extra-index-url", "find-links", "trusted-host", "no-index", "timeout",
             "default-timeout", "retries", "cert")
#: pip's own precedence for one option: [global] < [install] < PIP_* variables.
SECTIONS = ("global", "install", ":env:")
CERT_MOUNT = "/run/host-certs/ca-certificates.crt"
PIP_CONF_MOUNT = "/etc/pip.conf"
TORCH_INDEX_MOUNT = "/run/torch-index"


def host_pip_config(python: str, keys: tuple[str, ...] = FORWARDED) -> dict[str, str]:
    """pip's effective value of each of `keys` (the last of [global], [install], PIP_* that sets it)."""
    listed = subprocess.run([python, "-m", "pip", "config", "list"], capture_output=True, text=True, check=True).stdout
    found: dict[str, dict[str, str]] = {}
    for line in listed.splitlines():
        match = re.fullmatch(r"(.+?)\.([\w-]+)='(.*)'", line.strip())
        if match:
            section, key, value = match.groups()
            found.setdefault(key, {})[section] = value
    effective = {}
    for key in keys:
        values = [found.get(key, {}).get(section) for section in SECTIONS]
        values = [v for v in values if v is not None]
        if values:
            effective[key] = values[-1]
    return effective


def local_path(location: str) -> Path | None:
    """The local file or folder behind a pip location (file:// URL or path), or None for http(s)."""
    if location.startswith("file://"):
        return Path(urllib.parse.unquote(urllib.parse.urlparse(location).path))
    if "://" not in location and location.startswith("/"):
        return Path(location)
    return None


def torch_wheel_url(python: str, version: str) -> str:
    """The URL the host's pip would install the pinned torch from."""
    report = subprocess.run(
        [python, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--no-deps", "--quiet", "--report", "-",
         f"torch=={version}"],
        capture_output=True, text=True, timeout=600,
    )
    if report.returncode != 0:
        return ""
    installs = json.loads(report.stdout)["install"]
    return installs[0]["download_info"]["url"] if installs else ""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--python", default=sys.executable, help="the interpreter whose pip configuration is used")
    parser.add_argument("--torch-version", required=True)
    args = parser.parse_args(argv)
    out: Path = args.out_dir
    out.mkdir(parents=True, exist_ok=True)

    config = host_pip_config(args.python)
    mounts: dict[Path, str] = {}
    for key in ("index-url", "extra-index-url", "find-links"):
        for location in config.get(key, "").split():
            path = local_path(location)
            if path is None or not path.exists():
                continue
            # A local index's pages link to its files by relative URLs (../../files/x.whl in a
            # `simple/` tree): mount the folder that holds the index, not just the index.
            folder = path.parent if key != "find-links" or not path.is_dir() else path
            mounts[folder] = str(folder)
    lines = ["[global]"]
    for key, value in config.items():
        if key == "cert":
            if Path(value).is_file():
                mounts[Path(value)] = CERT_MOUNT
                lines.append(f"cert = {CERT_MOUNT}")
            continue
        lines.append(f"{key} = {value}")
    (out / "pip.conf").write_text("\n".join(lines) + "\n")

    flags = [f"--volume={out / 'pip.conf'}:{PIP_CONF_MOUNT}:ro"]
    wheel_url = torch_wheel_url(args.python, args.torch_version)
    wheel = local_path(wheel_url) if wheel_url else None
    if wheel is not None and wheel.is_file():
        index = out / "torch-index" / "torch"
        index.mkdir(parents=True, exist_ok=True)
        (index / "index.html").write_text(f'<a href="{wheel_url}">{wheel.name}</a>\n')
        mounts.setdefault(wheel.parent, str(wheel.parent))
        mounts[out / "torch-index"] = TORCH_INDEX_MOUNT
        flags.append(f"--build-arg=TORCH_INDEX_URL=file://{TORCH_INDEX_MOUNT}")
    flags += [f"--volume={source}:{target}:ro" for source, target in mounts.items()]
    (out / "build-args").write_text("\n".join(flags) + "\n")
    print(f"pip for the build: {', '.join(f'{k}={v}' for k, v in config.items()) or 'defaults (PyPI)'}; "
          f"torch from {wheel_url or 'the Dockerfile default'}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
