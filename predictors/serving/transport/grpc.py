"""gRPC: the KServe V2 / Open Inference Protocol service on a grpc.aio server of our own, with model
versions, a repository API that answers correctly, and an interceptor that maps every error to the
right status code.

kserve 0.21's own servicer and interceptors, which this replaces, answer UNKNOWN for a model that is
not ready (its ExceptionToStatusInterceptor reads a `ModelNotReady.reason` that does not exist, so
clients' retry policies do not retry), answer INTERNAL to a repository load or unload that succeeded,
and ignore `model_version`.
"""

from __future__ import annotations

import logging
import time
from concurrent import futures
from typing import Any

import grpc
from grpc import aio
from grpc_interceptor import AsyncServerInterceptor
from kserve.protocol.grpc import grpc_predict_v2_pb2 as pb
from kserve.protocol.grpc import grpc_predict_v2_pb2_grpc
from kserve.protocol.grpc.servicer import InferenceServicer
from kserve.protocol.infer_type import InferRequest, InferResponse

from .. import codec
from ..errors import classify
from ..repository import PredictorRepository, versioned_key
from ..request_context import current_request_id
from .request_ids import RequestIdInterceptor

logger = logging.getLogger("kserve.predictors")


def request_headers(context: grpc.aio.ServicerContext) -> dict[str, str]:
    """Invocation metadata as headers; entries may be (key, value) tuples or Metadatum objects."""
    headers = {}
    for item in context.invocation_metadata() or ():
        key, value = (item.key, item.value) if hasattr(item, "key") else item
        headers[key] = value if isinstance(value, str) else value.decode("latin-1")
    return headers


class StatusInterceptor(AsyncServerInterceptor):
    """Every exception a handler raises becomes a status code and a message, never UNKNOWN; and one
    access-log line per call, written once the request id is known (so it carries it)."""

    async def intercept(self, method: Any, request_or_iterator: Any, context: grpc.aio.ServicerContext, method_name: str) -> Any:
        started = time.perf_counter()
        code = grpc.StatusCode.OK
        try:
            return await method(request_or_iterator, context)
        except Exception as exc:
            if isinstance(exc, aio.AbortError):
                code = context.code() or grpc.StatusCode.UNKNOWN
                raise
            _, code, message, _ = classify(exc)
            if code == grpc.StatusCode.INTERNAL:
                logger.error("grpc %s failed", method_name, exc_info=exc)
            request_id = current_request_id()
            await context.abort(code, f"{message} (request id {request_id})" if request_id else message)
        finally:
            logger.info("grpc %s %s %.1f ms", method_name.rsplit("/", 1)[-1], getattr(code, "name", code),
                        1000 * (time.perf_counter() - started))


class PredictorServicer(grpc_predict_v2_pb2_grpc.GRPCInferenceServiceServicer):
    """GRPCInferenceService over the same dataplane and repository as the REST routes."""

    def __init__(self, dataplane: Any, repository: PredictorRepository, is_stopping: Any = lambda: False) -> None:
        self.dataplane = dataplane
        self.repository = repository
        self.is_stopping = is_stopping

    def _key(self, name: str, version: str) -> str:
        self.repository.check_servable(name, version or None)  # raises NOT_FOUND / UNAVAILABLE with the reason
        return versioned_key(name, version) if version else name

    async def ServerLive(self, request: pb.ServerLiveRequest, context: Any) -> pb.ServerLiveResponse:
        return pb.ServerLiveResponse(live=True)

    async def ServerReady(self, request: pb.ServerReadyRequest, context: Any) -> pb.ServerReadyResponse:
        return pb.ServerReadyResponse(ready=not self.is_stopping() and self.repository.ready())

    async def ServerMetadata(self, request: pb.ServerMetadataRequest, context: Any) -> pb.ServerMetadataResponse:
        info = self.dataplane.metadata()
        return pb.ServerMetadataResponse(name=info["name"], version=info["version"], extensions=info["extensions"])

    async def ModelReady(self, request: pb.ModelReadyRequest, context: Any) -> pb.ModelReadyResponse:
        try:
            self.repository.check_servable(request.name, request.version or None)  # lazy models: ready, load nothing
        except Exception as exc:
            status, _, _, _ = classify(exc)
            if status == 503:
                return pb.ModelReadyResponse(ready=False)
            raise
        return pb.ModelReadyResponse(ready=True)

    async def ModelMetadata(self, request: pb.ModelMetadataRequest, context: Any) -> pb.ModelMetadataResponse:
        info = await self.dataplane.model_metadata(model_name=self._key(request.name, request.version))
        return pb.ModelMetadataResponse(
            name=info["name"], versions=info.get("versions", []), platform=info["platform"],
            inputs=info["inputs"], outputs=info["outputs"],
        )

    async def RepositoryModelLoad(self, request: pb.RepositoryModelLoadRequest, context: Any) -> pb.RepositoryModelLoadResponse:
        # KServe's proto has no parameters: a load from a storage URI is REST's or the CLI's.
        await self.repository.request_load(request.model_name)
        return pb.RepositoryModelLoadResponse(model_name=request.model_name, isLoaded=True)

    async def RepositoryModelUnload(self, request: pb.RepositoryModelUnloadRequest, context: Any) -> pb.RepositoryModelUnloadResponse:
        await self.repository.request_unload(request.model_name)
        return pb.RepositoryModelUnloadResponse(model_name=request.model_name, isUnloaded=True)

    async def ModelInfer(self, request: pb.ModelInferRequest, context: grpc.aio.ServicerContext) -> pb.ModelInferResponse:
        key = self._key(request.model_name, request.model_version)
        InferenceServicer.validate_grpc_request(request)
        for tensor in request.inputs:
            codec.check_datatype(tensor.name, tensor.datatype)
        infer_request = InferRequest.from_grpc(request)
        response, _ = await self.dataplane.infer(request=infer_request, headers=request_headers(context), model_name=key)
        if isinstance(response, pb.ModelInferResponse):
            return response
        if isinstance(response, InferResponse):
            return response.to_grpc()
        return pb.ModelInferResponse(id=response["id"], model_name=response["model_name"], outputs=response["outputs"])


def grpc_server(servicer: PredictorServicer, port: int, max_threads: int, max_send_bytes: int, max_receive_bytes: int) -> aio.Server:
    """A grpc.aio server with the servicer bound to [::]:port (not started)."""
    server = aio.server(
        futures.ThreadPoolExecutor(max_workers=max_threads),
        interceptors=(StatusInterceptor(), RequestIdInterceptor()),
        options=[
            ("grpc.max_send_message_length", max_send_bytes),
            ("grpc.max_receive_message_length", max_receive_bytes),
        ],
    )
    grpc_predict_v2_pb2_grpc.add_GRPCInferenceServiceServicer_to_server(servicer, server)
    server.add_insecure_port(f"[::]:{port}")
    return server
