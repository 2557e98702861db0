#!/usr/bin/env python3
"""`make install`: the project's dependencies into a virtualenv with uv, as this machine's pip would.

    python tools/install.py --python .venv/bin/python -- -c constraints.txt -e '.[build,test]'

uv (pinned in constraints.txt, installed into the venv with pip first) resolves and installs the
same pinned versions as `pip install` does, in a fraction of the time: into a fresh venv from empty
caches on 2 cores, 28 s against pip's 120 s (docs/build.md). uv reads no pip configuration, so this
hands it the host pip's own (`pip config list`: config files and PIP_* variables): its indexes,
find-links (where the CPU torch wheel lies), trusted hosts, certificate bundle, timeout and
configured constraint files. Indexes are searched as pip does, for the best match across all of
them (uv's default takes each package from the first index that has it).

Bytecode: not all 26,000 files of the venv (`compileall` took 53 s on 2 cores), only what the
server and the model build import: one process imports the package's modules and the libraries
they import lazily, and Python caches their bytecode as it goes (the Makefile lets it write the
cache). Without this, `make serve`'s build and server processes compiled the same modules side by
side on their first imports.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent / "image"))
from pip_build_config import host_pip_config  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
#: Libraries the package imports inside functions (a backend, the export, the build) and the BERT
#: modules transformers loads lazily for the demo models: imported once after the install.
LAZY_IMPORTS = ("torch", "transformers", "transformers.models.bert.modeling_bert", "safetensors.torch", "onnx",
                "onnxruntime", "onnxruntime.transformers.optimizer", "onnxruntime.quantization", "sklearn.pipeline",
                "sklearn.linear_model", "sklearn.feature_extraction.text", "skl2onnx", "skops.io", "kserve")
WARM_UP = """
import importlib, pkgutil, sys
import predictors
names = [*sys.argv[1:], *(m.name for m in pkgutil.walk_packages(predictors.__path__, "predictors.")
                           if not m.name.endswith("__main__"))]
for name in names:
    try:
        importlib.import_module(name)
    except Exception as exc:  # a cache warm-up: a module that fails to import fails where it is used
        print(f"warm-up: import {name}: {type(exc).__name__}: {exc}", file=sys.stderr)
"""
#: pip options with a uv equivalent; `constraint` is pip's config-file constraint list.
PIP_OPTIONS = ("index-url", "extra-index-url", "find-links", "trusted-host", "no-index", "timeout",
               "default-timeout", "retries", "cert", "constraint")


def uv_arguments(pip_config: dict[str, str]) -> tuple[list[str], dict[str, str]]:
    """uv pip install flags and environment variables equivalent to pip's effective configuration."""
    flags = ["--index-strategy", "unsafe-best-match"]
    env: dict[str, str] = {}
    for key, flag in (("index-url", "--index-url"), ("extra-index-url", "--extra-index-url"),
                      ("find-links", "--find-links"), ("trusted-host", "--allow-insecure-host"),
                      ("constraint", "--constraint")):
        for value in pip_config.get(key, "").split():
            flags += [flag, value]
    if pip_config.get("no-index", "").lower() in ("1", "true", "yes", "on"):
        flags.append("--no-index")
    timeout = pip_config.get("timeout") or pip_config.get("default-timeout")
    if timeout:
        env["UV_HTTP_TIMEOUT"] = str(int(float(timeout)))
    if pip_config.get("retries"):
        env["UV_HTTP_RETRIES"] = pip_config["retries"]
    if pip_config.get("cert"):
        env["SSL_CERT_FILE"] = pip_config["cert"]
    return flags, env


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--python", required=True, help="the virtualenv's interpreter")
    parser.add_argument("uv_args", nargs=argparse.REMAINDER, help="after --: arguments for `uv pip install`")
    args = parser.parse_args(argv)
    uv_args = args.uv_args[1:] if args.uv_args[:1] == ["--"] else args.uv_args
    pip_install = [args.python, "-m", "pip", "install", "--quiet"]
    subprocess.run([*pip_install, "--constraint", str(ROOT / "constraints.txt"), "uv"], check=True)
    flags, env = uv_arguments(host_pip_config(args.python, PIP_OPTIONS))
    command = [args.python, "-m", "uv", "pip", "install", "--python", args.python, *flags, *uv_args]
    installed = subprocess.run(command, env={**os.environ, **env}).returncode
    if installed == 0:
        warm_env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
        subprocess.run([args.python, "-c", WARM_UP, *LAZY_IMPORTS], cwd=ROOT, env=warm_env)
    return installed


if __name__ == "__main__":
    sys.exit(main())
