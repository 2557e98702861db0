"""The committed manifests against the real tools: `kubectl kustomize manifests/` builds exactly
the rendered documents, `python -m predictors manifests check` finds them current, and
`manifests validate` exits non-zero naming the field of a broken copy (and says how to provide
the CRD schemas when they are missing)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from predictors.deploy.render import render_all
from predictors.deploy.validation import kubectl_build_errors, load_yaml_documents
from predictors.deploy.validation.kustomization import build_differences, kubectl_kustomize
from predictors.deploy.validation.schemas import CrdSchemasNotFound, SchemaRegistry

ROOT = Path(__file__).resolve().parents[2]
MANIFESTS = ROOT / "manifests"
MODELS = Path(os.environ.get("PREDICTORS_MODELS_DIR", ROOT / "models"))


def _needs_kubectl() -> None:
    if shutil.which("kubectl") is None:
        pytest.skip("kubectl not installed (install kubectl 1.29+; `kubectl kustomize` renders offline)")


def _rendered() -> dict[str, str]:
    if not all((MODELS / name / "config.json").is_file() for name in ("review-sentiment", "news-topic")):
        pytest.skip(f"demo models not built in {MODELS} (run `make models`)")
    return render_all(MODELS)


def _cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "predictors", "manifests", *args], capture_output=True, text=True,
                          cwd=ROOT, env={**os.environ, **(env or {})}, timeout=300)


def test_kubectl_kustomize_builds_the_rendered_documents():
    _needs_kubectl()
    rendered = _rendered()
    listed = yaml.safe_load(rendered["kustomization.yaml"])["resources"]
    expected = [d.body for name in listed for d in load_yaml_documents(rendered[name], name)]
    built = kubectl_kustomize(MANIFESTS)
    assert len(built) == len(expected)
    assert build_differences(built, expected) == []
    assert kubectl_build_errors(MANIFESTS) == []


def test_committed_manifests_are_current():
    _rendered()
    checked = _cli("check")
    assert checked.returncode == 0, checked.stderr[-3000:]


def test_validate_names_the_field_of_a_broken_copy(tmp_path):
    try:
        SchemaRegistry.from_crd_dir()
    except CrdSchemasNotFound as exc:
        pytest.skip(str(exc))
    copy = tmp_path / "manifests"
    shutil.copytree(MANIFESTS, copy)
    victim = copy / "news-topic.yaml"
    victim.write_text(victim.read_text().replace("        limits:\n", "        limits:\n          memroy: 1Gi\n", 1))
    assert _cli("validate", str(MANIFESTS)).returncode == 0
    broken = _cli("validate", str(copy))
    assert broken.returncode == 1
    assert "spec.predictor.model.resources.limits.memroy: unknown resource" in broken.stderr
    missing = _cli("validate", str(copy), env={"PREDICTORS_CRD_DIR": str(tmp_path / "none")})
    assert missing.returncode == 2 and "PREDICTORS_CRD_DIR" in missing.stderr
