"""The real server over gRPC: kserve's InferenceGRPCClient in process, and tritonclient.grpc in a
subprocess (its protobuf registrations clash with kserve's when both are imported in one process)."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import textwrap

import grpc
import numpy as np
import pytest
from kserve import InferenceGRPCClient, InferInput, InferRequest
from kserve.protocol.grpc import grpc_predict_v2_pb2 as pb


def grpc_call(server, coroutine_factory):
    async def run():
        client = InferenceGRPCClient(server.grpc_url, timeout=60)
        try:
            return await coroutine_factory(client)
        finally:
            await client.close()

    return asyncio.run(run())


def texts_input(texts, binary):
    tensor = InferInput("text", [len(texts)], "BYTES")
    tensor.set_data_from_numpy(np.array([t.encode() for t in texts], dtype=object), binary_data=binary)
    return tensor


@pytest.mark.parametrize("binary", [False, True])
def test_kserve_grpc_client_classification(server, binary):
    texts = ["Delicious, my kids love these snacks.", "Arrived broken and tasted awful."]
    response = grpc_call(server, lambda c: c.infer(
        InferRequest("review-sentiment", [texts_input(texts, binary)], request_id="grpc-1")))
    assert response.id == "grpc-1"
    outputs = {o.name: o.as_numpy() for o in response.outputs}
    assert [v.decode() if isinstance(v, bytes) else v for v in outputs["label"]] == ["great", "other"]
    assert outputs["probabilities"].shape == (2, 2)


def test_kserve_grpc_client_health_and_metadata(server):
    assert grpc_call(server, lambda c: c.is_server_ready())
    assert grpc_call(server, lambda c: c.is_model_ready("pii-ner"))
    # kserve's client has no metadata call; its generated stub does
    metadata = grpc_call(server, lambda c: c._client_stub.ModelMetadata(pb.ModelMetadataRequest(name="sentence-embedding")))
    assert metadata.platform in ("onnxruntime_onnx", "pytorch_transformers")
    assert metadata.outputs[0].name == "embedding" and list(metadata.outputs[0].shape) == [-1, 384]


def test_kserve_grpc_bad_input_and_unknown_model(server):
    bad = InferInput("text", [1], "BYTES")
    bad.set_data_from_numpy(np.array([b"\xff\xfe"], dtype=object), binary_data=True)
    with pytest.raises(grpc.aio.AioRpcError) as error:
        grpc_call(server, lambda c: c.infer(InferRequest("review-sentiment", [bad])))
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "UTF-8" in error.value.details()
    with pytest.raises(grpc.aio.AioRpcError) as error:
        grpc_call(server, lambda c: c.infer(InferRequest("nope", [texts_input(["a"], False)])))
    assert error.value.code() == grpc.StatusCode.NOT_FOUND
    # and it still serves
    response = grpc_call(server, lambda c: c.infer(InferRequest("pii-ner", [texts_input(["mail ann@example.com"], False)])))
    assert json.loads(response.outputs[0].as_numpy()[0])[0]["text"] == "ann@example.com"


TRITON_GRPC_SCRIPT = textwrap.dedent("""
    import json, sys
    import numpy as np
    import tritonclient.grpc as g
    from tritonclient.utils import InferenceServerException
    client = g.InferenceServerClient(sys.argv[1])
    result = {"live": client.is_server_live(), "ready": client.is_server_ready(),
              "metadata": client.get_model_metadata("news-topic", as_json=True)}
    tensor = g.InferInput("text", [2], "BYTES")
    tensor.set_data_from_numpy(np.array([b"Shares fell as the company reported weaker profits.",
                                         b"The new smartphone chip doubles battery life."], dtype=object))
    answer = client.infer("news-topic", [tensor], outputs=[g.InferRequestedOutput("label")], request_id="t1")
    result["id"] = answer.get_response().id
    result["labels"] = [v.decode() for v in answer.as_numpy("label")]
    result["outputs"] = [o.name for o in answer.get_response().outputs]
    tensor = g.InferInput("text", [1], "BYTES")
    tensor.set_data_from_numpy(np.array([b"a"], dtype=object))
    try:
        client.infer("news-topic", [tensor], outputs=[g.InferRequestedOutput("nope")])
    except InferenceServerException as exc:
        result["bad_output"] = exc.status()
    print(json.dumps(result))
""")


def test_tritonclient_grpc_in_subprocess(server):
    run = subprocess.run([sys.executable, "-c", TRITON_GRPC_SCRIPT, server.grpc_url],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    result = json.loads(run.stdout.strip().splitlines()[-1])
    assert result["live"] and result["ready"]
    assert result["metadata"]["inputs"][0] == {"name": "text", "datatype": "BYTES", "shape": ["-1"]}
    assert result["id"] == "t1" and result["labels"] == ["business", "tech"] and result["outputs"] == ["label"]
    assert result["bad_output"] == "StatusCode.INVALID_ARGUMENT"


def test_an_answer_carries_its_request_id_and_timings_in_trailers(server):
    from kserve.protocol.grpc import grpc_predict_v2_pb2_grpc as pb_grpc

    request = pb.ModelInferRequest(model_name="news-topic", id="timed")
    request.inputs.add(name="text", datatype="BYTES", shape=[1]).contents.bytes_contents.append(
        f"Shares rose after the results {id(server)}".encode())
    with grpc.insecure_channel(server.grpc_url) as channel:
        answer, call = pb_grpc.GRPCInferenceServiceStub(channel).ModelInfer.with_call(request, timeout=60)
    trailers = dict(call.trailing_metadata())
    assert answer.id == "timed" and trailers["x-request-id"] == "timed"
    stages = [entry.split(";")[0].strip() for entry in trailers["server-timing"].split(",")]
    assert stages == ["queue", "tokenize", "backend", "postprocess", "total"]
    assert "latency_ms" not in answer.parameters  # the protocol's parameters hold no floats: the trailer has it
