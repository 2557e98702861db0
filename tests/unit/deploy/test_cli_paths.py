"""`manifests render|check|validate` read and write relative to where they run, never beside the
installed package (where an installed predictors would have written into site-packages)."""

from __future__ import annotations

from pathlib import Path

import predictors
from predictors.cli import build_parser
from tests.helpers import write_folder


def test_render_writes_into_the_working_directory_not_beside_the_package(tmp_path, monkeypatch):
    write_folder(tmp_path / "models" / "tiny", predictor_yaml="deploy: {startup_seconds: 5, peak_rss_mib: 300}\n")
    monkeypatch.chdir(tmp_path)
    args = build_parser().parse_args(["manifests", "render"])
    assert args.func(args) == 0
    written = sorted(p.relative_to(tmp_path).as_posix() for p in (tmp_path / "manifests").rglob("*.yaml"))
    assert "manifests/kustomization.yaml" in written and any("tiny" in p for p in written)
    package_root = Path(predictors.__file__).resolve().parent
    assert not (package_root.parent / "manifests" / "models" / "tiny").exists()


def test_the_defaults_name_relative_folders():
    parser = build_parser()
    assert parser.parse_args(["manifests", "render"]).out == "manifests"
    assert parser.parse_args(["manifests", "check"]).models_dir == "models"
    assert parser.parse_args(["manifests", "validate"]).paths == ["manifests"]
