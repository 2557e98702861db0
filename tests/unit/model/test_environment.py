"""PREDICTORS_* settings of many models in one pod: each read from the environment, a bad value one
error naming the variable."""

from __future__ import annotations

import pytest

from predictors.model.environment import EnvironmentSettingError, server_environment


@pytest.mark.parametrize("value, expected", [("2147483648", 2 << 30), ("2Gi", 2 << 30), ("1500M", 1_500_000_000), ("512Mi", 512 << 20)])
def test_model_memory_is_bytes_or_a_kubernetes_quantity(monkeypatch, value, expected):
    monkeypatch.setenv("PREDICTORS_MODEL_MEMORY", value)
    assert server_environment().model_memory == expected


@pytest.mark.parametrize("variable, value, message", [
    ("PREDICTORS_MODEL_MEMORY", "lots", "not a byte count or a Kubernetes quantity"),
    ("PREDICTORS_MODEL_MEMORY", "0.5", "whole number of bytes"),
    ("PREDICTORS_LOADING", "sometimes", "startup, lazy or on_demand"),
    ("PREDICTORS_STORAGE_ALLOW", "my-bucket", "not a URI prefix"),
    ("PREDICTORS_REPOSITORY_API", "ro", "read-write"),
    ("PREDICTORS_IDLE_UNLOAD_SECONDS", "0", "greater than 0"),
])
def test_a_bad_value_names_the_variable(monkeypatch, variable, value, message):
    monkeypatch.setenv(variable, value)
    with pytest.raises(EnvironmentSettingError, match=f"{variable}=.*{message}"):
        server_environment()


def test_defaults_keep_todays_behaviour(monkeypatch):
    for variable in ("PREDICTORS_MODEL_MEMORY", "PREDICTORS_LOADING", "PREDICTORS_STORAGE_ALLOW", "PREDICTORS_REPOSITORY_API"):
        monkeypatch.delenv(variable, raising=False)
    environment = server_environment()
    assert (environment.model_memory, environment.loading, environment.storage_allow, environment.repository_api) == (
        None, "startup", (), "read-write")


def test_the_allow_list_is_comma_or_space_separated_and_loading_takes_either_spelling(monkeypatch):
    monkeypatch.setenv("PREDICTORS_STORAGE_ALLOW", "s3://models/team-a/, https://models.example.com/ner/")
    monkeypatch.setenv("PREDICTORS_LOADING", "On-Demand")
    environment = server_environment()
    assert environment.storage_allow == ("s3://models/team-a/", "https://models.example.com/ner/")
    assert environment.loading == "on_demand"
