"""Many models in one repository, with stand-in predictors that hold real memory
(tests/unit/serving/stand_ins.py): lazy and on-demand loads, the memory budget and its evictions,
the index states, and the repository API's refusals (read-only, URIs outside the allow-list, the
metadata address). The real server with real models: tests/integration/test_multi_model.py."""

from __future__ import annotations

import asyncio
import time

import pytest
from prometheus_client import REGISTRY

from predictors.serving.budget import MiB
from predictors.serving.errors import (
    BadRequest, DeadlineExceeded, ModelUnavailable, NameTaken, NoMemoryForModel, Refused,
)
from predictors.serving.repository import LOADING, READY, UNAVAILABLE, UNLOADED
from predictors.serving.storage.access import StorageAccess
from predictors.serving.storage.cache import StorageCache
from tests.helpers import write_folder

from .stand_ins import StandInPredictor, stand_in_repository

MODEL_BYTES = 40 * MiB


@pytest.fixture(autouse=True)
def reset_stand_in(monkeypatch):
    monkeypatch.setattr(StandInPredictor, "fail_loads", False)
    monkeypatch.setattr(StandInPredictor, "fail_warm_up", False)
    monkeypatch.setattr(StandInPredictor, "hold_loads", None)
    monkeypatch.setattr(StandInPredictor, "holds_bytes", 0)
    monkeypatch.setattr(StandInPredictor, "loads", {})


def lazy_repository(root, names, loading="lazy", extra="", **settings):
    settings.setdefault("storage_cache", StorageCache(root / ".cache"))  # never the user's own cache
    repository = stand_in_repository(root, names, predictor_yaml=f"cache: {{enabled: false}}\nloading: {loading}\n{extra}",
                                     **settings)
    repository.start_memory_accounting()
    return repository


def state(repository, name):
    return repository.state(repository.entries[name])


def evictions(name: str, reason: str) -> float:
    return REGISTRY.get_sample_value("predictors_model_evictions_total", {"model": name, "reason": reason}) or 0.0


async def answer(repository, name: str, text: str = "a text") -> dict:
    """A V1 request through the lookup the transport makes (loads a lazy model) and the model."""
    model = await repository.acquire(name, deadline_seconds=lambda: 30.0)
    response, _ = await model({"instances": [text]}, {})
    return response


def test_lazy_models_hold_no_memory_and_do_not_hold_readiness(tmp_path):
    repository = lazy_repository(tmp_path, ("a", "b"))
    asyncio.run(repository.load_all())
    assert StandInPredictor.loads == {}
    assert [(r["name"], r["state"], r["loading"]) for r in repository.index()] == [("a", UNLOADED, "lazy"), ("b", UNLOADED, "lazy")]
    assert "loads on its first request" in repository.index()[0]["reason"]
    assert repository.ready() and repository.not_ready() == {}


def test_twenty_concurrent_first_requests_share_one_load(tmp_path, monkeypatch):
    repository = lazy_repository(tmp_path, ("shared",))
    hold = __import__("threading").Event()
    monkeypatch.setattr(StandInPredictor, "hold_loads", hold)

    async def main() -> list:
        requests = [asyncio.create_task(answer(repository, "shared", f"text {i}")) for i in range(20)]
        await asyncio.sleep(0.2)
        assert state(repository, "shared") == LOADING and not any(r.done() for r in requests)
        hold.set()
        return await asyncio.gather(*requests)

    answers = asyncio.run(main())
    assert StandInPredictor.loads == {"shared": 1}
    assert [a["predictions"][0]["label"] for a in answers] == [f"text {i}" for i in range(20)]
    assert state(repository, "shared") == READY
    assert REGISTRY.get_sample_value("predictors_cold_start_wait_seconds_count", {"model": "shared"}) >= 20
    repository.unload("shared")


def test_a_first_request_waits_at_most_its_deadline_and_the_load_goes_on(tmp_path, monkeypatch):
    repository = lazy_repository(tmp_path, ("slow",))
    hold = __import__("threading").Event()
    monkeypatch.setattr(StandInPredictor, "hold_loads", hold)

    async def main() -> None:
        with pytest.raises(DeadlineExceeded, match="did not finish within this request's 200 ms deadline"):
            await repository.acquire("slow", deadline_seconds=lambda: 0.2)
        assert state(repository, "slow") == LOADING
        hold.set()
        model = await repository.acquire("slow", deadline_seconds=lambda: 30.0)
        assert model.ready

    asyncio.run(main())
    assert StandInPredictor.loads == {"slow": 1}
    repository.unload("slow")


def test_an_on_demand_model_is_freed_after_its_idle_time(tmp_path):
    repository = lazy_repository(tmp_path, ("burst",), loading="on_demand", extra="idle_unload_seconds: 0.5\n")
    before = evictions("burst", "idle")

    async def main() -> None:
        stopping = asyncio.Event()
        housekeeping = asyncio.create_task(repository.housekeeping(stopping))
        await answer(repository, "burst")
        assert state(repository, "burst") == READY
        deadline = time.monotonic() + 30
        while state(repository, "burst") != UNLOADED:
            assert time.monotonic() < deadline, "the on_demand model was not freed"
            await asyncio.sleep(0.05)
        stopping.set()
        await housekeeping
        await answer(repository, "burst")  # and its next request loads it again

    asyncio.run(main())
    assert evictions("burst", "idle") == before + 1
    assert StandInPredictor.loads == {"burst": 2}
    repository.unload("burst")


def test_eviction_order_is_least_recently_used_and_never_a_model_with_work(tmp_path, monkeypatch):
    monkeypatch.setattr(StandInPredictor, "holds_bytes", MODEL_BYTES)
    repository = lazy_repository(tmp_path, ("a", "b", "c", "d"), model_memory=110 * MiB)

    async def main() -> None:
        await answer(repository, "a")
        await answer(repository, "b")
        await answer(repository, "a")  # b is now the least recently used
        await answer(repository, "c")  # two of 40 MiB fit in 110: one must go
        assert [state(repository, n) for n in "abc"] == [READY, UNLOADED, READY]
        assert "evicted to make room for model 'c'" in repository.reason(repository.entries["b"])
        busy = repository.resolve("a")
        busy.inflight += 1  # a has a request in flight, and is the least recently used now
        await answer(repository, "d")
        assert [state(repository, n) for n in "acd"] == [READY, UNLOADED, READY]
        busy.inflight -= 1

    asyncio.run(main())
    assert repository.used_bytes() <= 110 * MiB + 8 * MiB  # measured sizes, plus this process's own noise
    for name in "ad":
        repository.unload(name)


def test_a_full_budget_with_only_busy_models_is_a_503_naming_the_budget(tmp_path, monkeypatch):
    monkeypatch.setattr(StandInPredictor, "holds_bytes", MODEL_BYTES)
    repository = lazy_repository(tmp_path, ("busy", "waiting"), model_memory=70 * MiB)
    repository.room_wait_seconds = 0.3

    async def main() -> None:
        await answer(repository, "busy")
        repository.resolve("busy").inflight += 1
        with pytest.raises(NoMemoryForModel) as refused:
            await repository.acquire("waiting", deadline_seconds=lambda: 5.0)
        assert "model memory budget" in refused.value.message and "PREDICTORS_MODEL_MEMORY" in refused.value.message
        assert "'busy'" in refused.value.message and "in flight" in refused.value.message
        assert "waited 0.3 s for the busy ones" in refused.value.message
        assert refused.value.headers() == {"Retry-After": "1"} and refused.value.http_status == 503
        assert state(repository, "busy") == READY and state(repository, "waiting") == UNLOADED
        repository.resolve("busy").inflight -= 1
        await answer(repository, "waiting")  # once the busy one is idle, it makes room
        assert state(repository, "busy") == UNLOADED

    asyncio.run(main())
    repository.unload("waiting")


def test_a_load_waits_for_a_busy_model_to_finish_instead_of_failing(tmp_path, monkeypatch):
    monkeypatch.setattr(StandInPredictor, "holds_bytes", MODEL_BYTES)
    repository = lazy_repository(tmp_path, ("busy", "next"), model_memory=70 * MiB)

    async def main() -> None:
        await answer(repository, "busy")
        busy = repository.resolve("busy")
        busy.inflight += 1  # a request in flight: "next" cannot get room yet
        waiting = asyncio.create_task(answer(repository, "next"))
        await asyncio.sleep(0.3)
        assert not waiting.done() and state(repository, "busy") == READY
        busy.inflight -= 1  # the request is answered: now the busy model may go
        await asyncio.wait_for(waiting, 10)
        assert [state(repository, n) for n in ("busy", "next")] == [UNLOADED, READY]

    asyncio.run(main())
    repository.unload("next")


def test_startup_models_are_never_evicted(tmp_path, monkeypatch):
    monkeypatch.setattr(StandInPredictor, "holds_bytes", MODEL_BYTES)
    write_folder(tmp_path / "pinned", predictor_yaml="cache: {enabled: false}\nloading: startup\n")
    repository = lazy_repository(tmp_path, ("lazy-one",), model_memory=70 * MiB)
    asyncio.run(repository.load_all())
    assert state(repository, "pinned") == READY
    with pytest.raises(NoMemoryForModel, match="a startup model"):
        asyncio.run(repository.acquire("lazy-one", deadline_seconds=lambda: 5.0))
    repository.unload("pinned")


def test_a_startup_model_that_does_not_fit_is_unavailable_with_the_reason_not_loading(tmp_path, monkeypatch):
    monkeypatch.setattr(StandInPredictor, "holds_bytes", MODEL_BYTES)
    for name in ("first", "second"):
        write_folder(tmp_path / name, predictor_yaml="cache: {enabled: false}\nloading: startup\n")
    repository = lazy_repository(tmp_path, (), model_memory=70 * MiB)
    asyncio.run(repository.load_all())
    assert state(repository, "first") == READY and state(repository, "second") == UNAVAILABLE
    assert "model memory budget" in repository.reason(repository.entries["second"])
    assert repository.ready() and repository.not_ready() == {}  # a model that cannot load does not hold readiness
    repository.unload("first")


def test_index_states_through_a_lazy_models_life(tmp_path, monkeypatch):
    repository = lazy_repository(tmp_path, ("life",))
    assert state(repository, "life") == UNLOADED
    asyncio.run(answer(repository, "life"))
    row = repository.index()[0]
    assert (row["state"], row["version"], row["reason"]) == (READY, "1", "default version")
    assert row["resident_bytes"] is not None
    asyncio.run(repository.unload_model("life"))  # unloaded by a call: no request brings it back
    assert state(repository, "life") == UNAVAILABLE
    with pytest.raises(ModelUnavailable, match="unloaded; load it again"):
        asyncio.run(repository.acquire("life"))
    monkeypatch.setattr(StandInPredictor, "fail_loads", True)
    with pytest.raises(Exception):
        asyncio.run(repository.load("life"))
    assert state(repository, "life") == UNAVAILABLE


def test_a_failed_lazy_load_is_not_retried_by_every_request(tmp_path, monkeypatch):
    repository = lazy_repository(tmp_path, ("broken",))
    monkeypatch.setattr(StandInPredictor, "fail_loads", True)
    with pytest.raises(ModelUnavailable, match="stand-in load failure"):
        asyncio.run(repository.acquire("broken", deadline_seconds=lambda: 5.0))
    with pytest.raises(ModelUnavailable, match="the next request tries again"):
        asyncio.run(repository.acquire("broken", deadline_seconds=lambda: 5.0))
    assert StandInPredictor.loads == {"broken": 1}
    assert state(repository, "broken") == UNAVAILABLE


def test_read_only_mode_refuses_the_write_routes_with_the_reason(tmp_path):
    repository = lazy_repository(tmp_path, ("m",), read_only=True)
    for call in (repository.request_load("m"), repository.request_unload("m")):
        with pytest.raises(Refused, match="PREDICTORS_REPOSITORY_API=read-only") as refused:
            asyncio.run(call)
        assert refused.value.http_status == 403
    assert state(repository, "m") == UNLOADED  # and the lazy model still loads on its first request


@pytest.mark.parametrize("uri, error, message", [
    ("s3://models/team-b/ner", Refused, "not under any prefix of PREDICTORS_STORAGE_ALLOW"),
    ("http://169.254.169.254/latest/meta-data/iam/model.tar.gz", Refused, "cloud metadata address"),
    ("http://[::ffff:169.254.169.254]/m.tar.gz", Refused, "cloud metadata address"),
    ("http://metadata.google.internal/computeMetadata/v1/m.tar.gz", Refused, "cloud metadata service"),
    ("http://169.254.10.1/m.tar.gz", Refused, "link-local"),
    ("http://127.0.0.1:9000/m.tar.gz", Refused, "not under any prefix"),  # loopback: only under a loopback prefix
    ("s3://models/team-a/../team-b/ner", BadRequest, "'..'"),
    ("not a uri", BadRequest, "no spaces"),
])
def test_uri_loads_outside_the_policy_are_refused_before_anything_is_fetched(tmp_path, uri, error, message):
    # Even an allow-list that names the metadata address does not make it fetchable.
    access = StorageAccess(("s3://models/team-a/", "http://169.254.169.254/", "http://[::ffff:169.254.169.254]/",
                            "http://metadata.google.internal/", "http://169.254.10.1/", "http://127.0.0.1:9000/x/"))
    repository = lazy_repository(tmp_path, (), storage_access=access)
    with pytest.raises(error, match=message.replace("(", r"\(")) as refused:
        asyncio.run(repository.request_load("fetched", uri))
    assert refused.value.http_status == (403 if error is Refused else 400)
    assert "fetched" not in repository.entries
    assert not repository.cache.root.exists() or not any(repository.cache.root.iterdir())


def test_an_empty_allow_list_turns_uri_loads_off(tmp_path):
    repository = lazy_repository(tmp_path, ())
    with pytest.raises(Refused, match="URI loads are off"):
        asyncio.run(repository.request_load("fetched", "s3://models/team-a/ner"))


def test_a_uri_load_never_takes_over_a_folder_model(tmp_path):
    repository = lazy_repository(tmp_path, ("local",), storage_access=StorageAccess(("s3://models/",)))
    with pytest.raises(NameTaken, match="served from the folder"):
        asyncio.run(repository.request_load("local", "s3://models/x"))
