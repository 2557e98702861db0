"""`make install` (tools/install.py): uv is handed the host pip's configuration, the venv it made
holds exactly constraints.txt's versions and the CPU torch, and the modules its bytecode warm-up
imports still exist; and the image build's input digest (tools/image/file_digests.py), which reads
the models' build records without their timings."""

from __future__ import annotations

import hashlib
import importlib
import importlib.metadata
import json
import re
import subprocess
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(ROOT / "tools"))
from install import LAZY_IMPORTS, uv_arguments  # noqa: E402

FILE_DIGESTS = ROOT / "tools" / "image" / "file_digests.py"


def normalized(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def test_pip_configuration_becomes_uv_flags_and_environment():
    flags, env = uv_arguments({
        "extra-index-url": "file:///opt/pypi/simple https://mirror.example/simple",
        "find-links": "/opt/wheels", "cert": "/etc/ssl/certs/ca.crt", "default-timeout": "180",
        "constraint": "/etc/xdg/pip/constraints.txt", "trusted-host": "mirror.example", "retries": "3",
    })
    pairs = list(zip(flags, flags[1:]))
    assert ("--extra-index-url", "file:///opt/pypi/simple") in pairs
    assert ("--extra-index-url", "https://mirror.example/simple") in pairs
    assert ("--find-links", "/opt/wheels") in pairs
    assert ("--constraint", "/etc/xdg/pip/constraints.txt") in pairs
    assert ("--allow-insecure-host", "mirror.example") in pairs
    # pip takes the best match across all indexes; uv's default would stop at the first index with the name
    assert ("--index-strategy", "unsafe-best-match") in pairs
    assert "--no-index" not in flags and "--index-url" not in flags
    assert env == {"SSL_CERT_FILE": "/etc/ssl/certs/ca.crt", "UV_HTTP_TIMEOUT": "180", "UV_HTTP_RETRIES": "3"}
    assert "--no-index" in uv_arguments({"no-index": "true"})[0]


def test_the_installed_versions_are_the_constraints_versions():
    pins = dict(re.findall(r"^([A-Za-z0-9_.-]+)==(\S+)$", (ROOT / "constraints.txt").read_text(), re.M))
    pins = {normalized(name): version for name, version in pins.items()}
    installed = {normalized(d.metadata["Name"]): d.version for d in importlib.metadata.distributions()}
    off_pin = {name: (installed[name], pin) for name, pin in pins.items()
               if name in installed and installed[name].split("+")[0] != pin}
    assert not off_pin, f"installed (version, constraints.txt pin): {off_pin}"
    for required in ("torch", "kserve", "transformers", "onnxruntime", "uv"):
        assert required in installed, f"{required} is not installed"
    assert torch.__version__.endswith("+cpu") and not torch.cuda.is_available(), torch.__version__


def test_every_module_the_install_warms_up_still_imports():
    """A renamed module would only make the warm-up print a warning: caught here instead."""
    for name in LAZY_IMPORTS:
        importlib.import_module(name)


def digests(*paths: Path) -> dict[str, str]:
    listed = subprocess.run([sys.executable, str(FILE_DIGESTS), *map(str, paths)],
                            capture_output=True, text=True, check=True).stdout
    return {line.split("  ", 1)[1]: line.split("  ", 1)[0] for line in listed.splitlines()}


def test_build_records_are_hashed_without_their_timings_and_dates(tmp_path):
    record = {"name": "news-topic", "build_seconds": 94.4, "train_seconds": 49.0,
              "training": {"date": "2026-12-07", "train_size": 1400},
              "metrics": {"heldout_accuracy": 0.9688},
              "quantization": {"tried": [{"name": "per-channel", "seconds": 1.8, "passed": True}]}}
    rerun = json.loads(json.dumps(record))
    rerun.update(build_seconds=79.2, train_seconds=51.3)
    rerun["training"]["date"] = "2026-12-08"
    rerun["quantization"]["tried"][0]["seconds"] = 3.1
    retrained = json.loads(json.dumps(record))
    retrained["metrics"]["heldout_accuracy"] = 0.9621
    for name, content in (("first", record), ("rerun", rerun), ("retrained", retrained)):
        (tmp_path / name).mkdir()
        (tmp_path / name / "build_info.json").write_text(json.dumps(content, indent=2))
    found = digests(*(tmp_path / name / "build_info.json" for name in ("first", "rerun", "retrained")))
    first, rerun_digest, retrained_digest = found.values()
    assert first == rerun_digest, "a rebuild that differs only in its timings must keep the digest"
    assert retrained_digest != first, "a changed metric must change the digest"


def test_other_files_are_hashed_as_sha256sum_does(tmp_path):
    weights = tmp_path / "model.onnx"
    weights.write_bytes(bytes(range(256)) * 5000)
    broken = tmp_path / "export_report.json"
    broken.write_bytes(b"\x00not json")
    found = digests(weights, broken)
    assert found[str(weights)] == hashlib.sha256(weights.read_bytes()).hexdigest()
    assert found[str(broken)] == hashlib.sha256(broken.read_bytes()).hexdigest()
    sha256sum = subprocess.run(["sha256sum", str(weights)], capture_output=True, text=True, check=True).stdout
    assert sha256sum.split()[0] == found[str(weights)]
