from __future__ import annotations

import pytest

from predictors.backends.cpus import CpuSettingError, cpu_limit, default_workers


def test_workers_from_environment(monkeypatch):
    monkeypatch.setenv("PREDICTORS_WORKERS", "3")
    assert default_workers() == 3
    monkeypatch.setenv("PREDICTORS_WORKERS", "many")
    with pytest.raises(CpuSettingError, match="PREDICTORS_WORKERS"):
        default_workers()
    monkeypatch.delenv("PREDICTORS_WORKERS")
    assert default_workers() == cpu_limit() >= 1
