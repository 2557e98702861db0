"""Models from a storage URI, against the real server and a real S3 server (moto's standalone server,
started here as a subprocess, with a bucket this module creates): loads from predictor.yaml's
`storage_uri`, the repository API and the CLI, versions in the bucket, and every refusal and
failure -- outside the allow-list, the metadata address (also behind a redirect), a malformed URI, a
missing object, an unreachable store, the write routes in read-only mode, an interrupted download --
each answered with its status and cause, and nothing half-written served or left in the cache."""

from __future__ import annotations

import http.server
import json
import os
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import MODELS_DIR, RunningServer, start_server
from tests.helpers import call_json
from tests.s3_helpers import MotoServer, ThrottlingProxy, free_port, upload_folder

BUCKET = "models"
TEXT = "Contact Maria Garcia at maria.garcia@example.org or (212) 555-0198."
SOURCE = MODELS_DIR / "pii-ner"


def post(url: str, body: dict | None = None, timeout: float = 180) -> tuple[int, dict, dict]:
    return call_json(url, body or {}, timeout)


def get(url: str) -> tuple[int, dict]:
    return call_json(url)[:2]


def infer(server: RunningServer, name: str) -> tuple[int, dict]:
    body = {"inputs": [{"name": "text", "datatype": "BYTES", "shape": [1], "data": [TEXT]}]}
    status, answer, _ = post(f"{server.url}/v2/models/{name}/infer", body)
    return status, answer


def load(server: RunningServer, name: str, uri: str) -> tuple[int, dict, dict]:
    return post(f"{server.url}/v2/repository/models/{name}/load", {"parameters": {"storage_uri": uri}})


def rows(server: RunningServer, name: str) -> list[dict]:
    return [r for r in get(f"{server.url}/v2/repository/index")[1] if r["name"] == name]


def cache_contents(cache: Path) -> tuple[list[str], list[str]]:
    """(model copies, partial downloads) in the storage cache."""
    copies = sorted(p.name for p in cache.iterdir() if not p.name.startswith(".")) if cache.is_dir() else []
    partial = sorted(p.name for p in (cache / ".partial").iterdir()) if (cache / ".partial").is_dir() else []
    return copies, partial


class Redirect(http.server.BaseHTTPRequestHandler):
    """An allowed host that redirects to the cloud metadata address."""

    def do_GET(self) -> None:  # noqa: N802 -- http.server's name
        self.send_response(302)
        self.send_header("Location", "http://169.254.169.254/latest/meta-data/iam/model.tar.gz")
        self.end_headers()

    def log_message(self, *args) -> None:
        pass


@pytest.fixture(scope="module")
def s3(tmp_path_factory: pytest.TempPathFactory) -> MotoServer:
    if not (SOURCE / "config.json").is_file():
        pytest.fail("demo model pii-ner is not built; run `make models`")
    server = MotoServer(tmp_path_factory.mktemp("moto") / "moto.log")
    client = server.client()
    client.create_bucket(Bucket=BUCKET)
    upload_folder(client, BUCKET, SOURCE, "team/ner")
    for version in (1, 2):  # Triton's layout, as in a models folder: predictor.yaml beside the versions
        upload_folder(client, BUCKET, SOURCE, f"team/versioned/{version}", skip=("predictor.yaml",))
    client.upload_file(str(SOURCE / "predictor.yaml"), BUCKET, "team/versioned/predictor.yaml")
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def redirector() -> str:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Redirect)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def storage_server(tmp: Path, s3: MotoServer, allow: str, endpoint: str | None = None, **env: str) -> RunningServer:
    """A server whose models folder holds one lazy model fetched from the bucket, and one whose
    predictor.yaml points at the pod itself (loopback, which no allow-list prefix here names)."""
    models = tmp / "models"
    (models / "remote-ner").mkdir(parents=True)
    (models / "remote-ner" / "predictor.yaml").write_text(f"storage_uri: s3://{BUCKET}/team/ner/\nloading: lazy\n")
    (models / "loopback").mkdir(parents=True)
    (models / "loopback" / "predictor.yaml").write_text(f"storage_uri: http://127.0.0.1:{free_port()}/ner.tar.gz\n"
                                                        "loading: lazy\n")
    running = start_server(["--models-dir", str(models)], tmp / "server.log", env={
        **s3.env(endpoint), "PREDICTORS_STORAGE_ALLOW": allow, "PREDICTORS_STORAGE_CACHE": str(tmp / "cache"),
        "PREDICTORS_DRAIN_SECONDS": "10", **env})
    running.cache = tmp / "cache"
    running.wait_ready(timeout=120)
    return running


@pytest.fixture(scope="module")
def server(s3: MotoServer, redirector: str, tmp_path_factory: pytest.TempPathFactory) -> RunningServer:
    closed = free_port()  # nothing listens there: an unreachable store
    allow = f"s3://{BUCKET}/team/, {redirector}/, http://127.0.0.1:{closed}/"
    running = storage_server(tmp_path_factory.mktemp("storage"), s3, allow)
    running.closed_port = closed
    running.redirector = redirector
    try:
        yield running
    finally:
        running.stop()


def test_a_predictor_yaml_uri_model_is_fetched_on_its_first_request(server: RunningServer) -> None:
    assert [r["state"] for r in rows(server, "remote-ner")] == ["UNLOADED"]
    status, answer = infer(server, "remote-ner")
    assert status == 200, answer
    assert {e["entity"] for e in json.loads(answer["outputs"][0]["data"][0])} >= {"EMAIL", "PHONE"}
    status, config = get(f"{server.url}/v2/models/remote-ner/config")
    assert config["state"] == "READY" and config["storage_uri"] == f"s3://{BUCKET}/team/ner"
    assert config["download"]["bytes"] == sum(p.stat().st_size for p in SOURCE.rglob("*") if p.is_file())


def test_a_repository_load_fetches_the_model_and_serves_it(server: RunningServer) -> None:
    status, body, _ = load(server, "fraud-detection", f"s3://{BUCKET}/team/ner")
    assert status == 200 and body["versions"] == ["1"] and body["download"]["files"] >= 10, body
    assert infer(server, "fraud-detection")[0] == 200
    copies, partial = cache_contents(server.cache)
    assert any(c.startswith("fraud-detection-") for c in copies) and partial == []


def test_versions_in_the_bucket_are_served_as_in_a_folder(server: RunningServer) -> None:
    status, body, _ = load(server, "versioned", f"s3://{BUCKET}/team/versioned/")
    assert status == 200 and body["versions"] == ["2"] and body["default"] == "2", body
    assert infer(server, "versioned")[1]["model_version"] == "2"


def test_the_cli_loads_a_model_from_a_uri(server: RunningServer) -> None:
    done = subprocess.run([sys.executable, "-m", "predictors", "load", "cli-ner", "--uri", f"s3://{BUCKET}/team/ner",
                           "--url", server.url], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert f"cli-ner: loaded from s3://{BUCKET}/team/ner" in done.stdout and "bytes downloaded" in done.stdout
    assert infer(server, "cli-ner")[0] == 200
    refused = subprocess.run([sys.executable, "-m", "predictors", "load", "cli-x", "--uri", "s3://elsewhere/x",
                              "--url", server.url], capture_output=True, text=True, timeout=120)
    assert refused.returncode == 1 and "HTTP 403" in refused.stderr and "PREDICTORS_STORAGE_ALLOW" in refused.stderr


@pytest.mark.parametrize("uri, status, cause", [
    ("s3://other-bucket/team/ner", 403, "not under any prefix of PREDICTORS_STORAGE_ALLOW"),
    ("http://169.254.169.254/latest/meta-data/model.tar.gz", 403, "not under any prefix"),
    ("s3://models/team/../secret", 400, "'..' path segments"),
    ("models/team/ner", 400, "expected <scheme>://"),
    ("s3://models/team/no-such-model", 404, "No model found"),
])
def test_each_refusal_and_failure_has_its_status_and_cause(server: RunningServer, uri: str, status: int, cause: str) -> None:
    got, body, _ = load(server, "refused-model", uri)
    assert got == status and cause in body["error"], body
    assert infer(server, "refused-model")[0] in (404, 503)  # never served
    copies, partial = cache_contents(server.cache)
    assert not any(c.startswith("refused-model-") for c in copies) and partial == []


def test_an_unreachable_store_is_a_503_with_the_cause(server: RunningServer) -> None:
    status, body, headers = load(server, "unreachable", f"http://127.0.0.1:{server.closed_port}/model.tar.gz")
    assert status == 503 and "cannot reach" in body["error"] and "retry-after" in {k.lower() for k in headers}, body
    assert cache_contents(server.cache)[1] == []


def test_loopback_is_fetched_only_where_the_allow_list_names_it(server: RunningServer) -> None:
    """Even a predictor.yaml URI (which needs no allow-list entry) does not reach the pod itself."""
    status, body = infer(server, "loopback")
    assert status == 403 and "is the pod itself" in body["error"], body
    assert [r["state"] for r in rows(server, "loopback")] == ["UNAVAILABLE"]


def test_a_redirect_to_the_metadata_address_is_refused(server: RunningServer) -> None:
    status, body, _ = load(server, "redirected", f"{server.redirector}/model.tar.gz")
    assert status == 403 and "169.254.169.254 is a cloud metadata address" in body["error"], body


def test_a_malformed_load_body_is_a_400_naming_it(server: RunningServer) -> None:
    status, body, _ = post(f"{server.url}/v2/repository/models/x/load", {"parameters": {"storage_url": "s3://models/x"}})
    assert status == 400 and "unknown parameter(s) ['storage_url']" in body["error"]
    request = urllib.request.Request(f"{server.url}/v2/repository/models/x/load", data=b"{not json", method="POST")
    try:
        urllib.request.urlopen(request, timeout=30)
        raise AssertionError("a body that is not JSON was accepted")
    except urllib.error.HTTPError as exc:
        assert exc.code == 400 and "not valid JSON" in json.loads(exc.read())["error"]


def test_read_only_mode_refuses_the_write_routes(s3: MotoServer, tmp_path: Path) -> None:
    running = storage_server(tmp_path, s3, f"s3://{BUCKET}/team/", PREDICTORS_REPOSITORY_API="read-only")
    try:
        for action in ("load", "unload"):
            status, body, _ = post(f"{running.url}/v2/repository/models/remote-ner/{action}")
            assert status == 403 and "PREDICTORS_REPOSITORY_API=read-only" in body["error"], body
        status, body, _ = load(running, "new", f"s3://{BUCKET}/team/ner")
        assert status == 403 and "read-only" in body["error"]
        script = f"""
import grpc
from kserve.protocol.grpc import grpc_predict_v2_pb2 as pb, grpc_predict_v2_pb2_grpc as rpc
stub = rpc.GRPCInferenceServiceStub(grpc.insecure_channel("{running.grpc_url}"))
try:
    stub.RepositoryModelLoad(pb.RepositoryModelLoadRequest(model_name="remote-ner"))
except grpc.RpcError as error:
    print(error.code().name)
"""
        done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
        assert done.stdout.split() == ["PERMISSION_DENIED"], done.stderr[-2000:]
        assert infer(running, "remote-ner")[0] == 200  # reading still works: the lazy model loads
    finally:
        running.stop()


def test_an_interrupted_download_leaves_nothing_served_or_half_written(s3: MotoServer, tmp_path: Path) -> None:
    """The network between the server and the store goes away in the middle of a download."""
    client = s3.client()
    upload_folder(client, BUCKET, SOURCE, "team/big")
    client.put_object(Bucket=BUCKET, Key="team/big/extra/weights.bin", Body=os.urandom(24 * 1024 * 1024))
    proxy = ThrottlingProxy(s3.port, bytes_per_second=2 * 1024 * 1024)
    running = storage_server(tmp_path, s3, f"s3://{BUCKET}/team/", endpoint=proxy.endpoint,
                             S3_MAX_ATTEMPTS="1", S3_READ_TIMEOUT="5", S3_CONNECT_TIMEOUT="5")
    try:
        outcome: list = []
        loading = threading.Thread(target=lambda: outcome.append(load(running, "big", f"s3://{BUCKET}/team/big")))
        loading.start()
        deadline = time.monotonic() + 120
        while proxy.passed < 4 * 1024 * 1024:  # a few MiB of the 24 MiB file are through
            assert time.monotonic() < deadline and loading.is_alive(), (proxy.passed, outcome)
            time.sleep(0.05)
        partial_files = [p for p in (running.cache / ".partial").rglob("*") if p.is_file()]
        assert partial_files, "the download should be under way in a partial folder"
        proxy.cut()
        loading.join(timeout=180)
        status, body, _ = outcome[0]
        assert status == 503 and "cannot reach" in body["error"], body
        assert [r["state"] for r in rows(running, "big")] == ["UNAVAILABLE"]
        assert infer(running, "big")[0] == 503
        assert cache_contents(running.cache) == ([], []), "a half-written download was left behind"
    finally:
        running.stop()
        proxy.cut()
