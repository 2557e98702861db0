"""tools/measure_deploy.py --write rewrites only the `deploy:` block of a predictor.yaml."""

from __future__ import annotations

import yaml

from predictors.deploy.settings_file import update_deploy_section

BEFORE = "# a model\ntask: classification\ndeploy:\n  cpu: 4\n  startup_seconds: 1.0\n\n# trailing comment\nbatch_size: 8\n"


def test_only_the_deploy_block_changes(tmp_path):
    path = tmp_path / "predictor.yaml"
    path.write_text(BEFORE)
    text = update_deploy_section(path, {"startup_seconds": 3.5, "peak_rss_mib": 536}, comment="measured")
    assert text.startswith("# a model\ntask: classification\ndeploy:\n  # measured\n")
    assert text.endswith("\n# trailing comment\nbatch_size: 8\n")
    assert yaml.safe_load(text)["deploy"] == {"cpu": 4, "startup_seconds": 3.5, "peak_rss_mib": 536}
    assert path.read_text() == text


def test_a_file_without_deploy_gets_one_appended(tmp_path):
    path = tmp_path / "predictor.yaml"
    path.write_text("task: embedding")
    text = update_deploy_section(path, {"peak_rss_mib": 900})
    assert text == "task: embedding\ndeploy:\n  peak_rss_mib: 900\n"
