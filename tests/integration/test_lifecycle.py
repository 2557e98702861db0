"""Versions, hot swap, load / unload / index, against the real server (issue: change models while
serving). The model is a copy of the built pii-ner folder (ONNX, loads in about a second), laid out
as Triton does: models/ner/<version>/."""

from __future__ import annotations

import collections
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import psutil
import pytest
import tritonclient.http as httpclient

from tests.conftest import MODELS_DIR, RunningServer, start_server
from tests.helpers import call_json, wait_until

TEXT = "Contact Maria Garcia at maria.garcia@example.org or (212) 555-0198."


def post(url: str, body: dict | None = None, timeout: float = 120) -> tuple[int, dict]:
    return call_json(url, body or {}, timeout)[:2]


def get(url: str) -> tuple[int, dict]:
    return call_json(url)[:2]


def infer_body(texts: list[str]) -> dict:
    return {"inputs": [{"name": "text", "datatype": "BYTES", "shape": [len(texts)], "data": texts}]}


def copy_version(models: Path, version: int) -> Path:
    source = MODELS_DIR / "pii-ner"
    target = models / "ner" / str(version)
    shutil.copytree(source, target, ignore=shutil.ignore_patterns("predictor.yaml", "README.md"))
    return target


@pytest.fixture(scope="module")
def ner_server(tmp_path_factory: pytest.TempPathFactory) -> RunningServer:
    if not (MODELS_DIR / "pii-ner" / "config.json").is_file():
        pytest.skip("demo model pii-ner is not built; run `make models`")
    models = tmp_path_factory.mktemp("models")
    (models / "ner").mkdir()
    shutil.copy(MODELS_DIR / "pii-ner" / "predictor.yaml", models / "ner" / "predictor.yaml")
    copy_version(models, 1)
    running = start_server(["--models-dir", str(models)], tmp_path_factory.mktemp("log") / "server.log",
                           env={"PREDICTORS_DRAIN_SECONDS": "20"})
    running.models = models
    try:
        running.wait_ready()
        yield running
    finally:
        running.stop()


def index(server: RunningServer) -> list[dict]:
    status, rows = post(f"{server.url}/v2/repository/index")
    assert status == 200
    return rows


def test_swap_under_load_fails_no_request(ner_server: RunningServer) -> None:
    """16 clients keep sending while version 2 is copied in and loaded: every answer is 200, names
    the version that answered, and each client sees the switch once (1...1 then 2...2). Each client
    stops after three answers from version 2."""
    seen: dict[int, list[str]] = collections.defaultdict(list)
    failures: list[str] = []
    switched = threading.Event()
    give_up = time.monotonic() + 300

    def client(number: int) -> None:
        while not (switched.is_set() and seen[number].count("2") >= 3) and time.monotonic() < give_up:
            status, body = post(f"{ner_server.url}/v2/models/ner/infer", infer_body([TEXT]))
            if status != 200:
                failures.append(f"{status} {body}")
                continue
            entities = json.loads(body["outputs"][0]["data"][0])
            if {e["entity"] for e in entities} < {"EMAIL", "PHONE"}:
                failures.append(f"half-loaded answer: {entities}")
            seen[number].append(body["model_version"])

    threads = [threading.Thread(target=client, args=(i,)) for i in range(16)]
    for thread in threads:
        thread.start()
    # every client is answered by version 1
    wait_until(lambda: all(len(seen[i]) >= 3 for i in range(16)), timeout=120)
    copy_version(ner_server.models, 2)
    status, body = post(f"{ner_server.url}/v2/repository/models/ner/load")
    switched.set()
    for thread in threads:
        thread.join()
    assert status == 200 and body["default"] == "2", body
    assert failures == []
    for versions in seen.values():
        switches = sum(1 for a, b in zip(versions, versions[1:]) if a != b)
        assert versions[0] == "1" and versions[-1] == "2" and switches == 1, versions[:3] + versions[-3:]
    rows = index(ner_server)
    assert [(r["version"], r["state"]) for r in rows if r["name"] == "ner"] == [("2", "READY")]


def test_version_routes_rest_and_grpc(ner_server: RunningServer) -> None:
    if not (ner_server.models / "ner" / "2").is_dir():  # when run without the swap test
        copy_version(ner_server.models, 2)
        assert post(f"{ner_server.url}/v2/repository/models/ner/load")[0] == 200
    status, body = get(f"{ner_server.url}/v2/models/ner/versions/2")
    assert status == 200 and body["name"] == "ner" and body["versions"] == ["2"]
    client = httpclient.InferenceServerClient(ner_server.url.removeprefix("http://"))
    text = httpclient.InferInput("text", [1], "BYTES")
    text.set_data_from_numpy(np.array([TEXT], dtype=object))
    assert client.infer("ner", [text], model_version="2").get_response()["model_version"] == "2"
    with pytest.raises(Exception, match="loaded versions: \\['2'\\]"):
        client.infer("ner", [text], model_version="1")
    status, body = get(f"{ner_server.url}/v2/models/ner/versions/1/ready")
    assert status == 404 and "loaded versions: ['2']" in body["error"]
    # gRPC through kserve's own proto, in a subprocess (tritonclient.grpc clashes with kserve in-process)
    script = f"""
import grpc, sys
from kserve.protocol.grpc import grpc_predict_v2_pb2 as pb, grpc_predict_v2_pb2_grpc as rpc
stub = rpc.GRPCInferenceServiceStub(grpc.insecure_channel("{ner_server.grpc_url}"))
text = pb.ModelInferRequest.InferInputTensor(name="text", datatype="BYTES", shape=[1],
    contents=pb.InferTensorContents(bytes_contents=[b"{TEXT}"]))
print(stub.ModelInfer(pb.ModelInferRequest(model_name="ner", model_version="2", inputs=[text])).model_version)
try:
    stub.ModelInfer(pb.ModelInferRequest(model_name="ner", model_version="9", inputs=[text]))
except grpc.RpcError as error:
    print(error.code().name)
print(stub.RepositoryModelLoad(pb.RepositoryModelLoadRequest(model_name="ner")).isLoaded)
try:
    stub.RepositoryModelLoad(pb.RepositoryModelLoadRequest(model_name="no-such-model"))
except grpc.RpcError as error:
    print(error.code().name)
"""
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert out.stdout.split() == ["2", "NOT_FOUND", "True", "NOT_FOUND"], out.stderr[-2000:]


def test_broken_new_version_leaves_the_old_one_serving_and_rollback(ner_server: RunningServer) -> None:
    broken = copy_version(ner_server.models, 3)
    weights = broken / "onnx" / "model_q4.onnx"
    weights.write_bytes(weights.read_bytes()[:4096])  # truncated weights
    status, body = post(f"{ner_server.url}/v2/repository/models/ner/load")
    assert status == 400 and "version 3" in body["error"] and "serving versions: ['2']" in body["error"]
    rows = {r["version"]: r for r in index(ner_server) if r["name"] == "ner"}
    assert rows["3"]["state"] == "UNAVAILABLE" and "failed to load" in rows["3"]["reason"]
    assert rows["2"]["state"] == "READY"
    assert post(f"{ner_server.url}/v2/models/ner/infer", infer_body([TEXT]))[1]["model_version"] == "2"
    # rollback: remove the new folders, load once
    shutil.rmtree(broken)
    shutil.rmtree(ner_server.models / "ner" / "2")
    status, body = post(f"{ner_server.url}/v2/repository/models/ner/load")
    assert status == 200 and body["versions"] == ["1"], body
    assert post(f"{ner_server.url}/v2/models/ner/infer", infer_body([TEXT]))[1]["model_version"] == "1"


def test_unload_refuses_with_503_drains_frees_and_load_brings_it_back(ner_server: RunningServer) -> None:
    process = psutil.Process(ner_server.process.pid)
    results: list[tuple[int, str]] = []

    def long_request() -> None:
        status, body = post(f"{ner_server.url}/v2/models/ner/infer", infer_body([TEXT * 8] * 12))
        results.append((status, body.get("error", "")))

    config = f"{ner_server.url}/v2/models/ner/config"
    accepted = get(config)[1]["scheduler"]["accepted"]
    threads = [threading.Thread(target=long_request) for _ in range(3)]
    for thread in threads:
        thread.start()
    wait_until(lambda: get(config)[1]["scheduler"]["accepted"] >= accepted + 1, timeout=120)
    rss_before = process.memory_info().rss
    status, body = post(f"{ner_server.url}/v2/repository/models/ner/unload")
    for thread in threads:
        thread.join()
    assert status == 200, body
    # accepted before the unload: answered; after: a JSON 503 naming the unload. Never a 500 or a drop.
    assert len(results) == 3 and all(code == 200 or (code == 503 and "unloaded" in error) for code, error in results), results
    assert any(code == 200 for code, _ in results), results
    status, body = post(f"{ner_server.url}/v2/models/ner/infer", infer_body([TEXT]))
    assert status == 503 and "unloaded" in body["error"]
    assert get(f"{ner_server.url}/v2/models/ner/ready")[0] == 503
    rss_after = process.memory_info().rss
    print(f"RSS before unload {rss_before / 2**20:.0f} MiB, after {rss_after / 2**20:.0f} MiB")
    assert rss_after < rss_before
    status, body = post(f"{ner_server.url}/v2/repository/models/ner/load")
    assert status == 200
    assert post(f"{ner_server.url}/v2/models/ner/infer", infer_body([TEXT]))[0] == 200


@pytest.mark.parametrize("name", ["..", ".", "..%2F..%2Fetc", "%2Fetc", "a%2Fb", "outside"])
def test_names_that_leave_the_models_folder_are_refused(ner_server: RunningServer, name: str) -> None:
    link = ner_server.models / "outside"
    if not link.exists():
        os.symlink(MODELS_DIR / "pii-ner", link)  # a symlink that leaves the models folder
    for action in ("load", "unload"):
        status, body = post(f"{ner_server.url}/v2/repository/models/{name}/{action}")
        assert status == 400 and "error" in body, (name, action, status, body)


def test_unknown_model_is_404(ner_server: RunningServer) -> None:
    status, body = post(f"{ner_server.url}/v2/repository/models/no-such-model/load")
    assert status == 404 and "no model folder 'no-such-model'" in body["error"]
