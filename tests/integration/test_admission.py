"""The scheduler and admission control on the real server: a one-text request is not stuck behind a
large one, a request over the queue bound is refused at once (429 + Retry-After / RESOURCE_EXHAUSTED),
work not started by its deadline is answered 504 / DEADLINE_EXCEEDED, a client that hangs up has
its queued work dropped; and the scheduled answers equal the direct (unscheduled) run."""

from __future__ import annotations

import asyncio
import json
import socket
import time
import urllib.request

import aiohttp
import grpc
import numpy as np
import pytest
from kserve import InferenceGRPCClient, InferInput, InferRequest

from predictors.serving.codec import TextRequest
from predictors.serving.predictor import TextPredictor
from predictors.tasks import load_model_config
from tests.conftest import start_server
from tests.helpers import linked_model_folder

MODEL = "sentence-embedding"  # int8 ONNX (one text per run) and torch weights: both paths
QUEUE_BOUND = 300
SETTINGS = f"max_queue_texts: {QUEUE_BOUND}\ntimeout_ms: 20000\ncache: {{enabled: false}}\n"


@pytest.fixture(scope="module")
def admission_server(demo_models, tmp_path_factory):
    models = tmp_path_factory.mktemp("admission-models")
    linked_model_folder(demo_models / MODEL, models / MODEL, SETTINGS)
    running = start_server(["--models-dir", str(models)], tmp_path_factory.mktemp("admission") / "server.log")
    try:
        running.wait_ready()
        yield running
    finally:
        running.stop()


REVIEW = ("the coffee arrived quickly and the bag was sealed, but the taste was flat and a little bitter, "
          "nothing like the rich flavour described on the label; I would not order it again. ")


def review_texts(count: int, tag: str) -> list[str]:
    """Distinct long review texts (~200 tokens), so a request of a few hundred takes seconds even on
    a quiet machine: the queue is still full when the next request arrives."""
    return [f"{tag} {i}: " + REVIEW * 4 for i in range(count)]


def v2_body(texts: list[str], **parameters) -> dict:
    body = {"inputs": [{"name": "text", "datatype": "BYTES", "shape": [len(texts)], "data": texts}]}
    if parameters:
        body["parameters"] = parameters
    return body


async def post(session, url: str, body: dict, headers: dict | None = None):
    started = time.perf_counter()
    async with session.post(url, json=body, headers=headers) as reply:
        payload = await reply.json(content_type=None)
        return reply.status, payload, reply.headers, time.perf_counter() - started, time.perf_counter()


def scheduler_state(server) -> dict:
    with urllib.request.urlopen(f"{server.url}/v2/models/{MODEL}/config", timeout=10) as reply:
        return json.loads(reply.read())["scheduler"]


async def until_queued(session, server, minimum: int = 1, timeout: float = 60.0) -> None:
    """Poll the model's /config until at least `minimum` texts are queued (a generous deadline)."""
    deadline = time.monotonic() + timeout
    while True:
        async with session.get(f"{server.url}/v2/models/{MODEL}/config") as reply:
            if (await reply.json())["scheduler"]["queued_texts"] >= minimum:
                return
        assert time.monotonic() < deadline, f"fewer than {minimum} texts queued after {timeout}s"
        await asyncio.sleep(0.02)


def wait_for_state(server, condition, timeout: float = 60.0) -> dict:
    """Poll the scheduler's state until `condition(state)` holds; returns that state."""
    deadline = time.monotonic() + timeout
    while not condition(state := scheduler_state(server)):
        assert time.monotonic() < deadline, f"scheduler state never matched: {state}"
        time.sleep(0.05)
    return state


def grpc_infer(server, texts: list[str], **parameters):
    async def run():
        client = InferenceGRPCClient(server.grpc_url, timeout=60)
        tensor = InferInput("text", [len(texts)], "BYTES")
        tensor.set_data_from_numpy(np.array([t.encode() for t in texts], dtype=object))
        try:
            return await client.infer(InferRequest(MODEL, [tensor], parameters=parameters or None))
        finally:
            await client.close()

    return run()


def test_a_one_text_request_finishes_before_a_large_one(admission_server):
    url = f"{admission_server.url}/v2/models/{MODEL}/infer"

    async def main():
        async with aiohttp.ClientSession() as session:
            large = asyncio.create_task(post(session, url, v2_body(review_texts(QUEUE_BOUND, "large"))))
            await until_queued(session, admission_server)
            small = await post(session, url, v2_body(["Lovely tea, will buy again."]))
            return small, await large

    small, large = asyncio.run(main())
    assert small[0] == 200 and large[0] == 200
    assert small[4] < large[4], "the one-text request waited for the large one"


def test_a_request_over_the_queue_bound_is_refused_at_once(admission_server):
    base = admission_server.url
    url = f"{base}/v2/models/{MODEL}/infer"

    async def main():
        async with aiohttp.ClientSession() as session:
            large = asyncio.create_task(post(session, url, v2_body(review_texts(QUEUE_BOUND, "fill"))))
            await until_queued(session, admission_server)
            refused = await post(session, url, v2_body(review_texts(64, "extra")))
            v1 = await post(session, f"{base}/v1/models/{MODEL}:predict", {"instances": review_texts(64, "v1")})
            try:
                await grpc_infer(admission_server, review_texts(64, "grpc"))
                grpc_code = grpc.StatusCode.OK
            except grpc.aio.AioRpcError as exc:
                grpc_code = exc.code()
            async with session.get(f"{base}/v2/health/live") as live:
                live_answered = (live.status, time.perf_counter())
            return refused, v1, grpc_code, live_answered, await large

    refused, v1, grpc_code, live, large = asyncio.run(main())
    status, body, headers, _, answered = refused
    assert status == 429, body
    assert "max_queue_texts" in body["error"] and "overloaded" in body["error"]
    assert int(headers["Retry-After"]) >= 1
    assert answered < large[4], "a refusal must not wait behind the queue"
    assert v1[0] == 429 and "max_queue_texts" in v1[1]["error"]
    assert grpc_code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert live[0] == 200 and live[1] < large[4], "liveness must not wait behind the queue"
    assert large[0] == 200  # the accepted request is answered
    assert scheduler_state(admission_server)["refused"] >= 3


def test_work_not_started_by_its_deadline_is_answered_504(admission_server):
    base = admission_server.url
    url = f"{base}/v2/models/{MODEL}/infer"
    before = scheduler_state(admission_server)["deadline_exceeded"]

    async def main():
        async with aiohttp.ClientSession() as session:
            by_parameter = await post(session, url, v2_body(review_texts(QUEUE_BOUND, "late"), timeout_ms=100))
            by_header = await post(session, f"{base}/v1/models/{MODEL}:predict",
                                   {"instances": review_texts(QUEUE_BOUND, "late v1")}, headers={"timeout-ms": "100"})
            bad = await post(session, url, v2_body(["a"], timeout_ms="soon"))
            try:
                await grpc_infer(admission_server, review_texts(QUEUE_BOUND, "late grpc"), timeout_ms=100)
                grpc_code = grpc.StatusCode.OK
            except grpc.aio.AioRpcError as exc:
                grpc_code = exc.code()
            return by_parameter, by_header, bad, grpc_code

    by_parameter, by_header, bad, grpc_code = asyncio.run(main())
    for status, body, _, _, _ in (by_parameter, by_header):
        assert status == 504, body
        assert "100 ms deadline" in body["error"] and "dropped" in body["error"]
    assert bad[0] == 400 and "timeout_ms" in bad[1]["error"]
    assert grpc_code == grpc.StatusCode.DEADLINE_EXCEEDED
    state = wait_for_state(admission_server, lambda s: s["deadline_exceeded"] - before >= 3 and s["queued_texts"] == 0)
    assert state["deadline_exceeded"] - before == 3


def test_a_client_that_hangs_up_has_its_queued_work_dropped(admission_server):
    before = scheduler_state(admission_server)
    body = json.dumps(v2_body(review_texts(QUEUE_BOUND, "gone"))).encode()
    with socket.create_connection(("127.0.0.1", admission_server.http_port)) as sock:
        sock.sendall(
            f"POST /v2/models/{MODEL}/infer HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n".encode() + body
        )
        wait_for_state(admission_server, lambda s: s["queued_texts"] > 0)  # queued and running
    state = wait_for_state(admission_server, lambda s: s["cancelled"] > before["cancelled"] and s["queued_texts"] == 0)
    assert state["cancelled"] == before["cancelled"] + 1
    assert state["texts_dropped"] - before["texts_dropped"] > QUEUE_BOUND // 2
    assert state["queued_texts"] == 0


@pytest.mark.parametrize("backend", ["onnx", "hf"])
def test_scheduled_answers_equal_the_direct_run(demo_models, tmp_path, backend):
    """The same texts answered alone and unscheduled (as the warm-up runs) and through the scheduler
    while other requests share its batches: int8 runs each text alone, so the answers are equal;
    torch batches across requests, so they agree to float rounding."""
    folder = linked_model_folder(demo_models / MODEL, tmp_path / MODEL, f"backend: {backend}\ncache: {{enabled: false}}\n")
    predictor = TextPredictor(load_model_config(folder))
    predictor.load()
    texts = [text[: 20 + 9 * i] for i, text in enumerate(review_texts(24, "mixed"))]  # lengths vary
    try:
        direct_run = predictor.run_texts(texts)
        direct, direct_truncated = direct_run.outputs, direct_run.truncated

        async def scheduled():
            others = [predictor.predict(TextRequest(texts=texts[i::5][:3], protocol="v2")) for i in range(5)]
            mine, *_ = await asyncio.gather(predictor.predict(TextRequest(texts=texts, protocol="v2")), *others)
            return mine

        result = asyncio.run(scheduled())
    finally:
        predictor.stop()
    assert result.truncated == direct_truncated
    if backend == "onnx":
        np.testing.assert_array_equal(result.outputs["embedding"], direct["embedding"])
    else:
        np.testing.assert_allclose(result.outputs["embedding"], direct["embedding"], atol=1e-5)


def test_config_reports_the_compute_slots_and_whether_they_are_pinned(admission_server):
    import os

    from predictors.backends.cpus import cpu_limit

    slots = scheduler_state(admission_server)["compute_slots"]
    assert slots["count"] == cpu_limit()
    owns_its_cpus = len(os.sched_getaffinity(0)) == cpu_limit() > 1 and "PREDICTORS_PIN_CPUS" not in os.environ
    if owns_its_cpus and os.environ.get("PREDICTORS_WORKERS", str(cpu_limit())) == str(cpu_limit()):
        assert slots["pinned_cpus"] == sorted(os.sched_getaffinity(0)), slots
    else:
        assert slots["pinned_cpus"] is None and slots["pinning"].startswith("off"), slots


def test_a_lone_request_runs_on_every_cpu_and_answers_as_under_load(admission_server):
    """Alone, the request's text runs on all CPUs (the scheduler's counters say so); sent while the
    queue is full, the same text runs on one: the answer is the same, bit for bit (int8 runs each
    text alone either way)."""
    url = f"{admission_server.url}/v2/models/{MODEL}/infer"
    text = "A lone request about green tea and biscuits."
    cpus = scheduler_state(admission_server)["compute_slots"]["count"]
    assert cpus >= 2, "this check needs at least two CPUs for the process"

    async def main():
        async with aiohttp.ClientSession() as session:
            before = scheduler_state(admission_server)
            alone = await post(session, url, v2_body([text]))
            after_alone = scheduler_state(admission_server)
            large = asyncio.create_task(post(session, url, v2_body(review_texts(120, "load"))))
            await until_queued(session, admission_server, minimum=60)
            under_load = await post(session, url, v2_body([text]))
            await large
            return before, alone, after_alone, under_load

    before, alone, after_alone, under_load = asyncio.run(main())
    assert alone[0] == 200 and under_load[0] == 200
    assert after_alone["runs_on_all_cpus"] > before["runs_on_all_cpus"]
    assert after_alone["runs_on_one_cpu"] == before["runs_on_one_cpu"]  # the lone text did not run on one
    assert alone[1]["outputs"] == under_load[1]["outputs"]
