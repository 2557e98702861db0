"""Sizing: measured numbers and overrides turned into resources, probes, replicas and the drain."""

from __future__ import annotations

import pytest
from kubernetes.utils import parse_quantity

from predictors.deploy.runtime import PRESTOP_SECONDS
from predictors.deploy.sizing import (
    DEFAULTS, STARTUP_MIN_SECONDS, DeployConfigError, deploy_settings, memory_for, startup_budget_for,
)
from predictors.model import ModelConfigError
from predictors.tasks import load_model_config
from tests.helpers import write_folder


def settings_for(tmp_path, deploy: str):
    return deploy_settings(load_model_config(write_folder(tmp_path / "m", predictor_yaml=f"deploy: {deploy}\n")))


@pytest.mark.parametrize("peak", [100, 536, 1400, 3000.5])
def test_memory_has_headroom_over_the_measured_peak(peak):
    request, limit = memory_for(peak)
    mib = 2**20
    assert parse_quantity(request) >= 1.25 * peak * mib and parse_quantity(request) % (64 * mib) == 0
    assert parse_quantity(limit) >= max(1.5 * peak, peak + 256) * mib and parse_quantity(limit) % (64 * mib) == 0


def test_startup_budget_is_three_times_the_measurement_plus_margin():
    assert startup_budget_for(1) == STARTUP_MIN_SECONDS
    assert startup_budget_for(40) >= 3 * 40 + 30
    assert startup_budget_for(41) % 5 == 0


def test_defaults_then_overrides(tmp_path):
    s = settings_for(tmp_path, "{startup_seconds: 40, peak_rss_mib: 1000, cpu: 4, storage_prefix: 's3://b/models'}")
    assert s.cpu == 4 and s.startup_budget_seconds >= 150
    assert parse_quantity(s.memory_limit) >= 1500 * 2**20
    assert s.storage_uri == "s3://b/models/m"
    assert (s.min_replicas, s.max_replicas, s.scale_metric) == (DEFAULTS["min_replicas"], DEFAULTS["max_replicas"], "cpu")


def test_drain_is_the_grace_period_minus_the_pre_stop_sleep(tmp_path):
    assert settings_for(tmp_path, "{startup_seconds: 5, peak_rss_mib: 500}").drain_seconds == (
        DEFAULTS["termination_grace_seconds"] - PRESTOP_SECONDS)
    assert settings_for(tmp_path, "{startup_seconds: 5, peak_rss_mib: 500, termination_grace_seconds: 90}").drain_seconds == 85


@pytest.mark.parametrize("deploy, named", [
    ("{startup_seconds: 5}", "peak_rss_mib.*measure_deploy"),
    ("{startup_seconds: 5, peak_rss_mib: 500, min_replicas: 4, max_replicas: 2}", "min_replicas"),
    ("{startup_seconds: 5, peak_rss_mib: 500, scale_target: 150}", "scale_target"),
    ("{startup_seconds: 5, peak_rss_mib: 500, termination_grace_seconds: 5}", "termination_grace_seconds"),
])
def test_settings_that_cannot_be_rendered_are_refused_naming_the_key(tmp_path, deploy, named):
    with pytest.raises(DeployConfigError, match=named):
        settings_for(tmp_path, deploy)


def test_an_unknown_deploy_key_is_refused_when_the_folder_is_read(tmp_path):
    with pytest.raises(ModelConfigError, match="memroy"):
        settings_for(tmp_path, "{startup_seconds: 5, peak_rss_mib: 500, memroy: 1Gi}")
