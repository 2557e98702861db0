from __future__ import annotations

import pytest

from predictors.backends.cpus import cpu_limit, default_workers
from predictors.model.environment import EnvironmentSettingError


def test_workers_from_environment(monkeypatch):
    monkeypatch.setenv("PREDICTORS_WORKERS", "3")
    assert default_workers() == 3
    monkeypatch.setenv("PREDICTORS_WORKERS", "many")
    with pytest.raises(EnvironmentSettingError, match="PREDICTORS_WORKERS='many' is not valid"):
        default_workers()
    monkeypatch.delenv("PREDICTORS_WORKERS")
    assert default_workers() == cpu_limit() >= 1


def _fake_affinity(monkeypatch, cpus):
    monkeypatch.setattr("predictors.backends.cpus.allowed_cpus", lambda: list(cpus))


def test_compute_slots_are_pinned_only_where_the_process_owns_its_cpus(monkeypatch):
    from predictors.backends.cpus import cpus_to_pin

    monkeypatch.delenv("PREDICTORS_WORKERS", raising=False)
    monkeypatch.delenv("PREDICTORS_PIN_CPUS", raising=False)
    _fake_affinity(monkeypatch, [4, 5])  # exclusive cores (static CPU manager) or a 2-CPU machine
    assert cpus_to_pin(2) == ([4, 5], "each compute slot pinned to one of the process's own 2 CPUs")

    _fake_affinity(monkeypatch, range(16))  # a shared node: 16 CPUs, a quota of 2
    cpus, why = cpus_to_pin(2)
    assert cpus is None and "may run on 16 CPUs and is limited to 2" in why

    _fake_affinity(monkeypatch, range(16))  # cgroup v1 quota unread, the manifests' worker count says 2
    monkeypatch.setenv("PREDICTORS_WORKERS", "2")
    cpus, why = cpus_to_pin(16)
    assert cpus is None and "PREDICTORS_WORKERS=2" in why
    monkeypatch.delenv("PREDICTORS_WORKERS")

    _fake_affinity(monkeypatch, [0])
    assert cpus_to_pin(1)[0] is None

    _fake_affinity(monkeypatch, [0, 1])
    monkeypatch.setenv("PREDICTORS_PIN_CPUS", "off")
    assert cpus_to_pin(2) == (None, "off (PREDICTORS_PIN_CPUS=off)")
    monkeypatch.setenv("PREDICTORS_PIN_CPUS", "always")
    with pytest.raises(EnvironmentSettingError, match="PREDICTORS_PIN_CPUS='always' is not valid"):
        cpus_to_pin(2)


def test_cgroup_quota_v2_and_v1(tmp_path):
    from predictors.backends.cpus import cgroup_cpu_quota

    (tmp_path / "cpu.max").write_text("150000 100000\n")
    assert cgroup_cpu_quota(tmp_path) == 1.5
    (tmp_path / "cpu.max").write_text("max 100000\n")
    assert cgroup_cpu_quota(tmp_path) is None
    (tmp_path / "cpu.max").unlink()
    (tmp_path / "cpu").mkdir()
    (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text("200000\n")
    (tmp_path / "cpu" / "cpu.cfs_period_us").write_text("100000\n")
    assert cgroup_cpu_quota(tmp_path) == 2.0
    (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text("-1\n")
    assert cgroup_cpu_quota(tmp_path) is None
    assert cgroup_cpu_quota(tmp_path / "missing") is None


def test_a_wide_runs_helpers_go_on_every_pinned_cpu_but_the_first(monkeypatch):
    from predictors.backends.cpus import wide_run_helper_cpus

    monkeypatch.delenv("PREDICTORS_WORKERS", raising=False)
    monkeypatch.delenv("PREDICTORS_PIN_CPUS", raising=False)
    monkeypatch.setattr("predictors.backends.cpus.cpu_limit", lambda: 4)
    _fake_affinity(monkeypatch, [4, 5, 6, 7])
    assert wide_run_helper_cpus(4) == [5, 6, 7]
    assert wide_run_helper_cpus(2) is None  # a run on some CPUs only: which ones is not fixed
    monkeypatch.setenv("PREDICTORS_PIN_CPUS", "off")
    assert wide_run_helper_cpus(4) is None  # unpinned slots: helpers unpinned too
