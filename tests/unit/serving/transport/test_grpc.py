"""The gRPC service (transport/grpc.py) on a real grpc.aio server in this process, called through
kserve's generated stub, over a repository of stand-in predictors (tests/unit/serving/stand_ins.py).
tritonclient.grpc against the real server is tests/integration/test_server_grpc.py."""

from __future__ import annotations

import asyncio

import grpc
import pytest
from kserve.protocol.grpc import grpc_predict_v2_pb2 as pb
from kserve.protocol.grpc import grpc_predict_v2_pb2_grpc

from predictors.serving import codec
from predictors.serving.transport.dataplane import HonestDataPlane
from predictors.serving.transport.grpc import PredictorServicer, grpc_server

from tests.helpers import free_port

from ..stand_ins import stand_in_repository


def infer_request(texts: list[str], model: str = "m", version: str = "", datatype: str = "BYTES") -> pb.ModelInferRequest:
    tensor = pb.ModelInferRequest.InferInputTensor(
        name="text", datatype=datatype, shape=[len(texts)], contents=pb.InferTensorContents(bytes_contents=[t.encode() for t in texts]),
    )
    return pb.ModelInferRequest(model_name=model, model_version=version, id="g1", inputs=[tensor])


def run_against_server(tmp_path, calls, stopping=lambda: False):
    """Start the server over model `m` (loaded) and `broken` (failed), run `calls(stub)`, stop."""
    repository = stand_in_repository(tmp_path, ("m",))
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "config.json").write_text("{not json")
    repository.scan()

    async def main():
        await repository.load_all()
        port = free_port()
        server = grpc_server(PredictorServicer(HonestDataPlane(repository), repository, stopping), port, 2,
                             8 * 1024 * 1024, 8 * 1024 * 1024)
        await server.start()
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
                return await calls(grpc_predict_v2_pb2_grpc.GRPCInferenceServiceStub(channel))
        finally:
            await server.stop(grace=1)
            for name in list(repository.entries):
                repository.unload(name)

    return asyncio.run(main())


async def status_of(call) -> grpc.StatusCode:
    try:
        await call
    except grpc.aio.AioRpcError as error:
        return error.code()
    return grpc.StatusCode.OK


def test_health_readiness_and_metadata(tmp_path):
    async def calls(stub):
        live = await stub.ServerLive(pb.ServerLiveRequest())
        ready = await stub.ServerReady(pb.ServerReadyRequest())
        model_ready = await stub.ModelReady(pb.ModelReadyRequest(name="m"))
        broken_ready = await stub.ModelReady(pb.ModelReadyRequest(name="broken"))
        metadata = await stub.ModelMetadata(pb.ModelMetadataRequest(name="m", version="1"))
        unknown = await status_of(stub.ModelReady(pb.ModelReadyRequest(name="nope")))
        return live.live, ready.ready, model_ready.ready, broken_ready.ready, metadata, unknown

    live, ready, model_ready, broken_ready, metadata, unknown = run_against_server(tmp_path, calls)
    assert (live, ready, model_ready, broken_ready) == (True, True, True, False)
    assert metadata.name == "m" and list(metadata.versions) == ["1"] and metadata.inputs[0].datatype == "BYTES"
    assert unknown == grpc.StatusCode.NOT_FOUND


def test_infer_and_its_errors_have_the_right_codes(tmp_path):
    async def calls(stub):
        answer = await stub.ModelInfer(infer_request(["hello", "hi"]))
        return answer, {
            "unknown model": await status_of(stub.ModelInfer(infer_request(["a"], model="nope"))),
            "unknown version": await status_of(stub.ModelInfer(infer_request(["a"], version="9"))),
            "not ready": await status_of(stub.ModelInfer(infer_request(["a"], model="broken"))),
            "lower-case datatype": await status_of(stub.ModelInfer(infer_request(["a"], datatype="bytes"))),
            "empty": await status_of(stub.ModelInfer(infer_request([]))),
        }

    answer, codes = run_against_server(tmp_path, calls)
    assert answer.id == "g1" and answer.model_name == "m"
    index = next(i for i, o in enumerate(answer.outputs) if o.name == "label")
    assert codec.split_bytes_tensor(answer.raw_output_contents[index], "label", 8) == [b"hello", b"hi"]
    assert codes == {
        "unknown model": grpc.StatusCode.NOT_FOUND, "unknown version": grpc.StatusCode.NOT_FOUND,
        "not ready": grpc.StatusCode.UNAVAILABLE, "lower-case datatype": grpc.StatusCode.INVALID_ARGUMENT,
        "empty": grpc.StatusCode.INVALID_ARGUMENT,
    }


def test_repository_load_and_unload_answer_what_happened(tmp_path):
    async def calls(stub):
        unloaded = await stub.RepositoryModelUnload(pb.RepositoryModelUnloadRequest(model_name="m"))
        after_unload = await stub.ModelReady(pb.ModelReadyRequest(name="m"))
        loaded = await stub.RepositoryModelLoad(pb.RepositoryModelLoadRequest(model_name="m"))
        after_load = await stub.ModelReady(pb.ModelReadyRequest(name="m"))
        bad_name = await status_of(stub.RepositoryModelLoad(pb.RepositoryModelLoadRequest(model_name="x" * 300)))
        return unloaded.isUnloaded, after_unload.ready, loaded.isLoaded, after_load.ready, bad_name

    assert run_against_server(tmp_path, calls) == (True, False, True, True, grpc.StatusCode.INVALID_ARGUMENT)


def test_readiness_fails_once_the_server_is_stopping(tmp_path):
    async def calls(stub):
        return (await stub.ServerReady(pb.ServerReadyRequest())).ready

    assert run_against_server(tmp_path, calls, stopping=lambda: True) is False
