"""Many models in one pod, against the real server and real models: lazy models hold no memory and
do not hold readiness back, twenty concurrent first requests share one load, a memory budget evicts
the least recently used idle model (never one with work, never a startup model), a load that cannot
get room is a 503 naming the budget, a first request waits at most its deadline, an on_demand model
is freed after its idle time, and a lazy model is loaded over gRPC too.

The models are copies (symlinked files) of the built review-sentiment (int8 ONNX, a one-thread and an
all-CPU session sharing the weights: about 125-160 MiB resident, 260-290 MiB while loading; a copy
never loaded is guessed at 252 MiB from its 74 MiB weights file) and pii-ner. The budget of 500 MiB
holds two review-sentiment copies, or one and the load of another, with 70-100 MiB to spare for heap
a load leaves behind (the budget counts the process's resident memory when it is more than the
models' measured sizes); never three."""

from __future__ import annotations

import re
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import MODELS_DIR, RunningServer, start_server
from tests.helpers import call_json, linked_model_folder

LAZY = ("rs-a", "rs-b", "rs-c")
TEXT = "Great coffee, rich and smooth. Will buy again."


def post(url: str, body: dict | None = None, timeout: float = 180) -> tuple[int, dict, dict]:
    return call_json(url, body or {}, timeout)


def get(url: str) -> tuple[int, dict]:
    return call_json(url)[:2]


def infer(server: RunningServer, name: str, texts: list[str] | None = None, **parameters) -> tuple[int, dict, dict]:
    body = {"inputs": [{"name": "text", "datatype": "BYTES", "shape": [len(texts or [TEXT])], "data": texts or [TEXT]}]}
    if parameters:
        body["parameters"] = parameters
    return post(f"{server.url}/v2/models/{name}/infer", body)


def states(server: RunningServer) -> dict[str, tuple[str, str]]:
    return {r["name"]: (r["state"], r["reason"]) for r in get(f"{server.url}/v2/repository/index")[1]}


def metric(server: RunningServer, name: str, **labels: str) -> float:
    text = urllib.request.urlopen(f"{server.url}/metrics", timeout=30).read().decode()
    total = 0.0
    for line in text.splitlines():
        match = re.match(rf"^{name}\{{(.*)\}} (\S+)$", line)
        if match and all(f'{k}="{v}"' in match.group(1) for k, v in labels.items()):
            total += float(match.group(2))
    return total


def wait_for(condition, what: str, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def in_flight(server: RunningServer, name: str) -> bool:
    return metric(server, "predictors_requests_in_flight", model=name) > 0


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> RunningServer:
    for source in ("review-sentiment", "pii-ner"):
        if not (MODELS_DIR / source / "config.json").is_file():
            pytest.fail(f"demo model {source} is not built; run `make models`")
    models = tmp_path_factory.mktemp("models")
    for name in LAZY:
        linked_model_folder(MODELS_DIR / "review-sentiment", models / name, "cache: {enabled: false}\n")
    linked_model_folder(MODELS_DIR / "pii-ner", models / "ner-lazy", "cache: {enabled: false}\n")
    linked_model_folder(MODELS_DIR / "pii-ner", models / "ner-burst", "loading: on_demand\nidle_unload_seconds: 2\n")
    running = start_server(["--models-dir", str(models)], tmp_path_factory.mktemp("log") / "server.log", env={
        "PREDICTORS_LOADING": "lazy", "PREDICTORS_MODEL_MEMORY": "500Mi", "PREDICTORS_DRAIN_SECONDS": "20"})
    try:
        started = time.monotonic()
        running.wait_ready(timeout=120)
        running.ready_seconds = time.monotonic() - started
        yield running
    finally:
        running.stop()


def test_lazy_models_are_ready_without_loading_anything(server: RunningServer) -> None:
    assert {name: state for name, (state, _) in states(server).items()} == {
        "ner-burst": "UNLOADED", "ner-lazy": "UNLOADED", "rs-a": "UNLOADED", "rs-b": "UNLOADED", "rs-c": "UNLOADED"}
    status, ready = get(f"{server.url}/v2/models/rs-a/ready")
    assert status == 200 and ready["ready"] and ready["state"] == "UNLOADED"  # a probe loads nothing
    assert metric(server, "predictors_model_loads_total") == 0
    status, memory = get(f"{server.url}/v2/repository/memory")
    assert memory["budget_bytes"] == 500 * 2**20 and memory["models"] == []


def test_twenty_concurrent_first_requests_share_one_load(server: RunningServer) -> None:
    barrier = threading.Barrier(20)
    answers: list[int] = []
    waits: list[int] = []

    def first_request() -> None:
        barrier.wait()
        status, _, headers = infer(server, "ner-lazy", ["Call Maria at 555-0198"])
        answers.append(status)
        if "x-model-load-wait-ms" in headers:  # this request waited for the load (a cold start)
            waits.append(int(headers["x-model-load-wait-ms"]))

    threads = [threading.Thread(target=first_request) for _ in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert answers == [200] * 20
    assert waits and all(wait > 0 for wait in waits)
    assert metric(server, "predictors_model_loads_total", model="ner-lazy", reason="first_request", outcome="loaded") == 1
    assert metric(server, "predictors_cold_start_wait_seconds_count", model="ner-lazy") >= 1
    post(f"{server.url}/v2/repository/models/ner-lazy/unload")  # out of the way of the budget tests


def test_the_least_recently_used_idle_model_is_evicted(server: RunningServer) -> None:
    """a and b load; a is used again; c cannot load beside both (its first guess alone is 252 MiB):
    b, the least recently used, goes first (and a too only if b's room was not enough)."""
    for name in ("rs-a", "rs-b", "rs-a", "rs-c"):
        assert infer(server, name)[0] == 200, name
    now = states(server)
    assert now["rs-c"][0] == "READY"
    assert now["rs-b"][0] == "UNLOADED" and "evicted to make room for model 'rs-c'" in now["rs-b"][1], now
    assert now["rs-a"][0] == "READY" or "evicted to make room for model 'rs-c'" in now["rs-a"][1], now
    assert metric(server, "predictors_model_evictions_total", model="rs-b", reason="budget") == 1
    assert infer(server, "rs-b")[0] == 200  # an evicted model's next request loads it again


def test_a_model_with_work_is_never_evicted(server: RunningServer) -> None:
    """rs-c needs room while rs-a serves a long request: the idle rs-b goes, rs-a stays. The budget
    counts the process's resident memory, which holds rs-a's working memory too; on a loaded machine
    rs-b's room alone may then fall short, and the honest answer is a 503 naming busy rs-a after
    waiting for it, never evicting it."""
    for name in ("rs-a", "rs-b"):  # loaded (one of them the least recently used), rs-c not
        assert infer(server, name)[0] == 200
    before = states(server)
    assert before["rs-a"][0] == before["rs-b"][0] == "READY" and before["rs-c"][0] == "UNLOADED", before
    long: list[int] = []
    timings: list[str] = []

    def long_request() -> None:
        status, _, headers = infer(server, "rs-a", [TEXT * 4] * 800)
        long.append(status)
        timings.append(headers.get("server-timing", ""))

    worker = threading.Thread(target=long_request)
    worker.start()
    wait_for(lambda: in_flight(server, "rs-a") or not worker.is_alive(), "the long request on rs-a")
    assert worker.is_alive(), f"the long request on rs-a was answered {long} ({timings}) before it was seen in flight"
    status, body, _ = infer(server, "rs-c")  # needs room: rs-b goes; rs-a has work
    busy_throughout = in_flight(server, "rs-a")
    now = states(server)
    worker.join()
    assert long == [200]  # the accepted request was answered
    assert now["rs-b"][0] == "UNLOADED", now
    if status == 503:  # rs-a stayed busy through the whole wait for room
        error = body["error"]
        assert "no loaded model could be evicted (waited" in error and "'rs-a'" in error and "in flight" in error, body
        assert now["rs-a"][0] == "READY", now
    else:
        assert status == 200, body
        if busy_throughout:  # the load waited for no one: rs-a, busy all along, stayed
            assert now["rs-a"][0] == "READY", now


def test_a_load_that_cannot_get_room_is_a_503_naming_the_budget(server: RunningServer, tmp_path: Path) -> None:
    """A startup model fills the budget: nothing can be evicted, ever."""
    models = tmp_path / "models"
    linked_model_folder(MODELS_DIR / "review-sentiment", models / "pinned", "loading: startup\n")
    linked_model_folder(MODELS_DIR / "review-sentiment", models / "lazy-one", "loading: lazy\n")
    running = start_server(["--models-dir", str(models)], tmp_path / "server.log", env={"PREDICTORS_MODEL_MEMORY": "300Mi"})
    try:
        running.wait_ready(timeout=120)
        status, body, headers = infer(running, "lazy-one")
        assert status == 503 and headers.get("retry-after"), body
        assert "model memory budget" in body["error"] and "PREDICTORS_MODEL_MEMORY" in body["error"], body
        assert "'pinned'" in body["error"] and "a startup model" in body["error"]
        assert infer(running, "pinned")[0] == 200
        assert metric(running, "predictors_model_loads_total", model="lazy-one", outcome="no_room") == 1
    finally:
        running.stop()


def unloaded_burst_model(server: RunningServer) -> str:
    """The on_demand model, once it is freed again (two seconds after its last request)."""
    wait_for(lambda: states(server)["ner-burst"][0] == "UNLOADED", "the on_demand model to be freed", timeout=60)
    return "ner-burst"


def test_a_first_request_waits_at_most_its_deadline(server: RunningServer) -> None:
    name = unloaded_burst_model(server)
    loads = metric(server, "predictors_model_loads_total", model=name, outcome="loaded")
    status, body, _ = infer(server, name, ["Call Maria at 555-0198"], timeout_ms=20)
    assert status == 504 and "deadline" in body["error"] and "the load goes on" in body["error"], body
    assert infer(server, name, ["Call Maria at 555-0198"])[0] == 200  # joins that load, or finds it done
    assert metric(server, "predictors_model_loads_total", model=name, outcome="loaded") == loads + 1


def test_an_on_demand_model_is_freed_after_its_idle_time(server: RunningServer) -> None:
    assert infer(server, "ner-burst", ["Call Maria at 555-0198"])[0] == 200
    assert states(server)["ner-burst"][0] == "READY"
    wait_for(lambda: states(server)["ner-burst"][0] == "UNLOADED", "the on_demand model to be freed", timeout=60)
    assert "freed after 2 s without requests" in states(server)["ner-burst"][1]
    assert metric(server, "predictors_model_evictions_total", model="ner-burst", reason="idle") >= 1


def test_a_lazy_model_loads_on_its_first_grpc_request(server: RunningServer) -> None:
    name = unloaded_burst_model(server)
    script = f"""
import grpc
from kserve.protocol.grpc import grpc_predict_v2_pb2 as pb, grpc_predict_v2_pb2_grpc as rpc
stub = rpc.GRPCInferenceServiceStub(grpc.insecure_channel("{server.grpc_url}"))
text = pb.ModelInferRequest.InferInputTensor(name="text", datatype="BYTES", shape=[1],
    contents=pb.InferTensorContents(bytes_contents=[b"Tasty and fresh."]))
print(stub.ModelReady(pb.ModelReadyRequest(name="{name}")).ready)
print(stub.ModelInfer(pb.ModelInferRequest(model_name="{name}", inputs=[text])).model_name)
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=180)
    assert done.stdout.split() == ["True", name], done.stderr[-2000:]
    assert states(server)[name][0] == "READY"
