"""What an operator or a misbehaving client does to the server (issue: nothing makes it fail): a
broken model next to healthy ones, gRPC status codes, JSON errors from every layer, slow and lying
clients, clients that hang up, and SIGTERM with work queued."""

from __future__ import annotations

import json
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tests.conftest import MODELS_DIR, RunningServer, http_status, start_server
from tests.integration.test_lifecycle import TEXT, get, infer_body, post
from tests.helpers import wait_until


@pytest.fixture(scope="module")
def mixed_server(tmp_path_factory: pytest.TempPathFactory) -> RunningServer:
    """pii-ner beside a copy whose weights are truncated: the broken one must not hold the healthy one hostage."""
    if not (MODELS_DIR / "pii-ner" / "config.json").is_file():
        pytest.skip("demo model pii-ner is not built; run `make models`")
    models = tmp_path_factory.mktemp("models")
    shutil.copytree(MODELS_DIR / "pii-ner", models / "ner")
    shutil.copytree(MODELS_DIR / "pii-ner", models / "broken")
    weights = models / "broken" / "onnx" / "model_q4.onnx"
    weights.write_bytes(weights.read_bytes()[:2048])
    running = start_server(
        ["--models-dir", str(models)], tmp_path_factory.mktemp("log") / "server.log",
        env={"PREDICTORS_HEADER_TIMEOUT": "2", "PREDICTORS_BODY_TIMEOUT": "2"},
    )
    try:
        running.wait_ready()
        yield running
    finally:
        running.stop()


def test_a_broken_model_does_not_make_the_server_unready(mixed_server: RunningServer) -> None:
    assert http_status(f"{mixed_server.url}/v2/health/ready") == 200
    rows = {r["name"]: r for r in post(f"{mixed_server.url}/v2/repository/index")[1]}
    assert rows["ner"]["state"] == "READY"
    assert rows["broken"]["state"] == "UNAVAILABLE" and "model_q4.onnx" in rows["broken"]["reason"]
    status, body = post(f"{mixed_server.url}/v2/models/broken/infer", infer_body([TEXT]))
    assert status == 503 and "failed to load" in body["error"] and "model_q4.onnx" in body["error"]
    status, body = get(f"{mixed_server.url}/v2/models/broken/config")
    assert status == 200 and body["state"] == "UNAVAILABLE" and "model_q4.onnx" in body["reason"]
    assert post(f"{mixed_server.url}/v2/models/ner/infer", infer_body([TEXT]))[0] == 200


def test_container_mode_stays_strict(tmp_path: Path) -> None:
    folder = tmp_path / "broken"
    shutil.copytree(MODELS_DIR / "pii-ner", folder)
    (folder / "onnx" / "model_q4.onnx").write_bytes(b"not a model")
    server = start_server(["--model_dir", str(folder), "--model_name", "broken"], tmp_path / "server.log")
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and "failed to load" not in json.dumps(post(f"{server.url}/v2/repository/index")[1] if http_status(f"{server.url}/v2/health/live") == 200 else ""):
            time.sleep(0.5)
        status, body = get(f"{server.url}/v2/health/ready")
        assert status == 503 and "broken" in body["error"]
    finally:
        server.stop()


GRPC_SCRIPT = """
import grpc, sys
from kserve.protocol.grpc import grpc_predict_v2_pb2 as pb, grpc_predict_v2_pb2_grpc as rpc
stub = rpc.GRPCInferenceServiceStub(grpc.insecure_channel(sys.argv[1]))
text = pb.ModelInferRequest.InferInputTensor(name="text", datatype="BYTES", shape=[1],
    contents=pb.InferTensorContents(bytes_contents=[b"hello"]))
def code(call):
    try:
        call()
        return "OK"
    except grpc.RpcError as error:
        return error.code().name + ":" + error.details()
print(code(lambda: stub.ModelInfer(pb.ModelInferRequest(model_name="broken", inputs=[text]))))
print(code(lambda: stub.ModelInfer(pb.ModelInferRequest(model_name="nothing", inputs=[text]))))
print(code(lambda: stub.RepositoryModelLoad(pb.RepositoryModelLoadRequest(model_name="ner"))))
print(code(lambda: stub.RepositoryModelLoad(pb.RepositoryModelLoadRequest(model_name=".."))))
print(code(lambda: stub.ModelInfer(pb.ModelInferRequest(model_name="ner", inputs=[
    pb.ModelInferRequest.InferInputTensor(name="text", datatype="FP32", shape=[1], contents=pb.InferTensorContents(fp32_contents=[1]))]))))
"""


def test_grpc_status_codes(mixed_server: RunningServer) -> None:
    out = subprocess.run([sys.executable, "-c", GRPC_SCRIPT, mixed_server.grpc_url], capture_output=True, text=True, timeout=120)
    lines = out.stdout.splitlines()
    assert len(lines) == 5, out.stderr[-2000:]
    assert lines[0].startswith("UNAVAILABLE:") and "failed to load" in lines[0]  # kserve 0.21: UNKNOWN
    assert lines[1].startswith("NOT_FOUND:")
    assert lines[2] == "OK"  # kserve 0.21: INTERNAL for an already loaded model
    assert lines[3].startswith("INVALID_ARGUMENT:")
    assert lines[4].startswith("INVALID_ARGUMENT:")


@pytest.mark.parametrize("method, path, status", [
    ("GET", "/v2/no/such/route", 404),
    ("DELETE", "/v2/health/ready", 405),
    ("POST", "/v2/models/ner/infer", 400),  # empty body
    ("GET", "/v2/models/nothing/ready", 404),
])
def test_every_error_is_json(mixed_server: RunningServer, method: str, path: str, status: int) -> None:
    with socket.create_connection(("127.0.0.1", mixed_server.http_port), timeout=10) as sock:
        sock.sendall(f"{method} {path} HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".encode())
        reply = b""
        while chunk := sock.recv(65536):
            reply += chunk
    head, _, body = reply.partition(b"\r\n\r\n")
    assert head.split()[1] == str(status).encode(), head
    assert b"application/json" in head.lower()
    assert isinstance(json.loads(body)["error"], str)


def test_slow_headers_and_short_bodies_are_cut_off(mixed_server: RunningServer) -> None:
    """With 2 s limits (the fixture's environment) the server closes both connections itself; the
    socket's generous timeout only bounds a server that never would (recv would raise)."""
    with socket.create_connection(("127.0.0.1", mixed_server.http_port), timeout=60) as sock:
        sock.sendall(b"POST /v2/models/ner/infer HTTP/1.1\r\nHost: x\r\n")  # headers never finished
        reply = sock.recv(65536)  # the server closes the connection (with a 408 once a request has begun)
        assert reply == b"" or b" 408 " in reply.split(b"\r\n")[0]
    with socket.create_connection(("127.0.0.1", mixed_server.http_port), timeout=60) as sock:
        sock.sendall(b"POST /v2/models/ner/infer HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     b"Content-Length: 1000\r\n\r\n{\"inputs\": [")  # shorter than its Content-Length
        reply = b""
        while chunk := sock.recv(65536):  # the server answers, then closes
            reply += chunk
    assert b" 408 " in reply.split(b"\r\n")[0] and b'"error"' in reply
    assert post(f"{mixed_server.url}/v2/models/ner/infer", infer_body([TEXT]))[0] == 200


def test_a_client_that_hangs_up_has_its_work_cancelled(mixed_server: RunningServer) -> None:
    body = json.dumps(infer_body([TEXT * 10] * 64)).encode()

    def scheduler() -> dict:
        return get(f"{mixed_server.url}/v2/models/ner/config")[1]["scheduler"]

    cancelled = scheduler()["cancelled"]
    with socket.create_connection(("127.0.0.1", mixed_server.http_port), timeout=10) as sock:
        sock.sendall(b"POST /v2/models/ner/infer HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     + f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
        wait_until(lambda: scheduler()["queued_texts"] > 0)
    wait_until(lambda: (state := scheduler())["cancelled"] > cancelled and state["queued_texts"] == 0)
    assert post(f"{mixed_server.url}/v2/models/ner/infer", infer_body([TEXT]))[0] == 200  # nothing left to wait for
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and "hung up" not in mixed_server.log.read_text():
        time.sleep(0.2)
    assert "hung up" in mixed_server.log.read_text()


def test_sigterm_answers_the_accepted_requests(tmp_path: Path) -> None:
    models = tmp_path / "models"
    shutil.copytree(MODELS_DIR / "pii-ner", models / "ner")
    server = start_server(["--models-dir", str(models)], tmp_path / "server.log", env={"PREDICTORS_DRAIN_SECONDS": "40"})
    server.wait_ready()
    results: list[int] = []

    def request() -> None:
        results.append(post(f"{server.url}/v2/models/ner/infer", infer_body([TEXT * 6] * 8), timeout=60)[0])

    threads = [threading.Thread(target=request) for _ in range(4)]
    before = get(f"{server.url}/v2/models/ner/config")[1]["scheduler"]["accepted"]
    for thread in threads:
        thread.start()
    wait_until(lambda: get(f"{server.url}/v2/models/ner/config")[1]["scheduler"]["accepted"] >= before + 4)
    server.process.send_signal(signal.SIGTERM)
    for thread in threads:
        thread.join()
    server.process.wait(timeout=60)  # the drain (40 s at most) ends with the accepted requests
    assert results == [200] * 4, results


def _keep_alive_exchange(server: RunningServer, requests: list[tuple[str, str, bytes, dict[str, str]]]) -> list[tuple[int, bytes]]:
    """Several requests on one kept-alive connection, as a client's connection pool sends them."""
    import http.client

    connection = http.client.HTTPConnection("127.0.0.1", server.http_port, timeout=60)
    answers = []
    try:
        for method, path, body, headers in requests:
            connection.request(method, path, body=body or None, headers=headers)
            reply = connection.getresponse()
            answers.append((reply.status, reply.read()))
    finally:
        connection.close()
    return answers


def test_hostile_requests_get_a_4xx_and_keep_the_connection(mixed_server: RunningServer) -> None:
    """Each refusal is a JSON 4xx naming the mistake, and the client's kept-alive connection serves
    its next request (a 5xx followed by a reset would cost it two requests)."""
    json_headers = {"Content-Type": "application/json"}
    infer = json.dumps(infer_body([TEXT])).encode()
    duplicate = json.dumps({**infer_body([TEXT]), "outputs": [{"name": "entities"}, {"name": "entities"}]}).encode()
    lower_case = json.dumps({"inputs": [{"name": "text", "datatype": "bytes", "shape": [1], "data": [TEXT]}]}).encode()
    answers = _keep_alive_exchange(mixed_server, [
        ("POST", f"/v2/repository/models/{'n' * 300}/load", b"", {}),
        ("GET", "/v2/health/live", b"", {}),
        ("POST", "/v1/models/ner:explain", b'{"instances": ["a"]}', json_headers),
        ("POST", "/v2/models/ner/infer", duplicate, json_headers),
        ("POST", "/v2/models/ner/infer", lower_case, json_headers),
        ("POST", "/v2/models/ner/infer", infer, json_headers),
    ])
    statuses = [status for status, _ in answers]
    assert statuses == [400, 200, 404, 400, 400, 200], answers
    assert b"at most 255 bytes" in answers[0][1] and b"no explainer" in answers[2][1]
    assert b"requested twice" in answers[3][1] and b"upper case" in answers[4][1]
    assert "Traceback" not in mixed_server.log.read_text()


def test_request_headers_over_16_kib_get_a_431(mixed_server: RunningServer) -> None:
    with socket.create_connection(("127.0.0.1", mixed_server.http_port), timeout=30) as sock:
        sock.sendall(b"GET /v2/health/ready HTTP/1.1\r\nHost: x\r\nX-Padding: " + b"p" * 100_000 + b"\r\n\r\n")
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 431 ") and json.loads(body)["error"].startswith("request headers are over the limit")
    assert http_status(f"{mixed_server.url}/v2/health/live") == 200
