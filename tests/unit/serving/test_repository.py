"""The model repository's lifecycle with stand-in predictors (tests/unit/serving/stand_ins.py): loads,
failed reloads, versions, unloads and shutdown, and what metrics and readiness say meanwhile. The
same lifecycle against the real server and weights is tests/integration/test_lifecycle.py."""

from __future__ import annotations

import asyncio
import json
import threading

import pytest
from prometheus_client import REGISTRY

from predictors.serving.errors import BadModelName, LoadFailed, ModelUnavailable
from predictors.serving.observability import metrics
from predictors.serving.repository import READY, UNAVAILABLE
from tests.helpers import wait_until, write_folder

from .stand_ins import StandInPredictor, stand_in_repository


@pytest.fixture(autouse=True)
def reset_stand_in(monkeypatch):
    monkeypatch.setattr(StandInPredictor, "fail_loads", False)
    monkeypatch.setattr(StandInPredictor, "fail_warm_up", False)
    monkeypatch.setattr(StandInPredictor, "hold_loads", None)


def ready_value(name: str, version: str) -> float | None:
    return REGISTRY.get_sample_value("predictors_model_ready", {"model": name, "version": version})


def infer_threads(name: str) -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith(f"infer-{name}-")]


def test_a_load_serves_the_model_and_reports_it(tmp_path):
    repository = stand_in_repository(tmp_path, ("loads-ok",))
    asyncio.run(repository.load("loads-ok"))
    assert repository.ready() and repository.resolve("loads-ok").ready
    assert [(row["name"], row["version"], row["state"]) for row in repository.index()] == [("loads-ok", "1", READY)]
    assert ready_value("loads-ok", "1") == 1.0
    repository.unload("loads-ok")


def test_a_failed_load_keeps_no_worker_threads_or_runtime(tmp_path, monkeypatch):
    repository = stand_in_repository(tmp_path, ("warm-up-fails",))
    monkeypatch.setattr(StandInPredictor, "fail_warm_up", True)
    with pytest.raises(LoadFailed, match="stand-in warm-up failure"):
        asyncio.run(repository.load("warm-up-fails"))
    assert infer_threads("warm-up-fails") == []
    assert repository.state(repository.entries["warm-up-fails"]) == UNAVAILABLE


def test_a_failed_reload_of_the_serving_version_keeps_its_metrics(tmp_path, monkeypatch):
    repository = stand_in_repository(tmp_path, ("reload-fails",))
    asyncio.run(repository.load("reload-fails"))
    serving = repository.resolve("reload-fails")
    config = tmp_path / "reload-fails" / "config.json"
    config.write_text(json.dumps({**json.loads(config.read_text()), "changed": True}))  # same version, new files
    monkeypatch.setattr(StandInPredictor, "fail_loads", True)
    with pytest.raises(LoadFailed, match="stand-in load failure"):
        asyncio.run(repository.load("reload-fails"))
    assert repository.resolve("reload-fails") is serving  # still serving the previous files
    assert ready_value("reload-fails", "1") == 1.0  # and its series are still its own
    assert metrics.tracked("reload-fails") == ("reload-fails", "1")
    repository.unload("reload-fails")


def test_unversioned_requests_are_labelled_with_the_version_that_serves_them(tmp_path, monkeypatch):
    write_folder(tmp_path / "versioned" / "1", predictor_yaml="cache: {enabled: false}\n")
    repository = stand_in_repository(tmp_path, ())
    asyncio.run(repository.load("versioned"))
    write_folder(tmp_path / "versioned" / "2", predictor_yaml="cache: {enabled: false}\n")
    hold = threading.Event()
    monkeypatch.setattr(StandInPredictor, "hold_loads", hold)
    seen: list = []

    async def main() -> None:
        loading = asyncio.create_task(repository.load("versioned"))
        await asyncio.sleep(0.2)  # version 2 is loading (held), version 1 serves
        seen.append(metrics.tracked("versioned"))
        hold.set()
        await loading
        seen.append(metrics.tracked("versioned"))

    asyncio.run(main())
    assert seen == [("versioned", "1"), ("versioned", "2")]
    repository.unload("versioned")


def test_shutdown_refuses_new_requests_while_the_accepted_finish(tmp_path):
    repository = stand_in_repository(tmp_path, ("draining",))
    asyncio.run(repository.load("draining"))
    model = repository.resolve("draining")

    async def main() -> None:
        model.inflight += 1  # one request accepted and still running
        draining = asyncio.create_task(repository.drain_all(5.0))
        await asyncio.sleep(0.05)
        with pytest.raises(ModelUnavailable, match="shutting down"):
            await model({"instances": ["a new request"]}, {})
        assert not draining.done()  # it waits for the accepted one
        model.inflight -= 1
        await asyncio.wait_for(draining, 5.0)

    asyncio.run(main())
    repository.unload("draining")


@pytest.mark.parametrize("name", ["x" * 256, "é" * 200])
def test_a_name_longer_than_a_folder_name_can_be_is_a_bad_name(tmp_path, name):
    repository = stand_in_repository(tmp_path, ())
    with pytest.raises(BadModelName, match="at most 255 bytes"):
        asyncio.run(repository.load(name))


def test_unload_frees_the_model_and_says_how_to_load_it_again(tmp_path):
    repository = stand_in_repository(tmp_path, ("unloads",))
    asyncio.run(repository.load("unloads"))
    asyncio.run(repository.unload_model("unloads"))
    wait_until(timeout=30, condition=lambda: infer_threads("unloads") == [])
    with pytest.raises(ModelUnavailable, match="unloaded; load it again"):
        repository.resolve("unloads")
    assert metrics.tracked("unloads") is None
