"""gRPC: kserve's servicer with model versions and a repository API that answers correctly, and an
interceptor that maps every error to the right status code.

Bugs worked around here (seen in kserve 0.21.0):
- its ExceptionToStatusInterceptor reads `ModelNotReady.reason`, which does not exist, so every
  request to a model that is not ready answers UNKNOWN instead of UNAVAILABLE (clients' retry
  policies then do not retry);
- `RepositoryModelLoad`/`Unload` subscript the extension's `None` result and answer INTERNAL even
  when the load succeeded;
- `model_version` is ignored everywhere.
"""

from __future__ import annotations

import logging
import time
from concurrent import futures
from typing import Any

import grpc
from grpc import aio
from kserve.protocol.grpc import grpc_predict_v2_pb2 as pb
from kserve.protocol.grpc import grpc_predict_v2_pb2_grpc
from kserve.protocol.grpc.server import GRPCServer
from kserve.protocol.grpc.servicer import InferenceServicer
from kserve.protocol.infer_type import InferRequest, InferResponse
from grpc_interceptor import AsyncServerInterceptor

from .errors import classify
from .request_ids import current_request_id
from .repository import PredictorRepository, versioned_key
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


class PredictorServicer(InferenceServicer):
    def __init__(self, data_plane: Any, repository: PredictorRepository) -> None:
        super().__init__(data_plane, None)
        self.repository = repository

    def _key(self, name: str, version: str) -> str:
        self.repository.resolve(name, version or None)  # raises NOT_FOUND / UNAVAILABLE with the reason
        return versioned_key(name, version) if version else name

    async def ModelReady(self, request: pb.ModelReadyRequest, context: Any) -> pb.ModelReadyResponse:
        try:
            self.repository.resolve(request.name, request.version or None)
        except Exception as exc:
            status, _, _, _ = classify(exc)
            if status == 503:
                return pb.ModelReadyResponse(ready=False)
            raise
        return pb.ModelReadyResponse(ready=True)

    async def ModelMetadata(self, request: pb.ModelMetadataRequest, context: Any) -> pb.ModelMetadataResponse:
        metadata = await self._data_plane.model_metadata(model_name=self._key(request.name, request.version))
        return pb.ModelMetadataResponse(
            name=metadata["name"], versions=metadata.get("versions", []), platform=metadata["platform"],
            inputs=metadata["inputs"], outputs=metadata["outputs"],
        )

    async def RepositoryModelLoad(self, request: pb.RepositoryModelLoadRequest, context: Any) -> pb.RepositoryModelLoadResponse:
        await self.repository.load(request.model_name)
        return pb.RepositoryModelLoadResponse(model_name=request.model_name, isLoaded=True)

    async def RepositoryModelUnload(self, request: pb.RepositoryModelUnloadRequest, context: Any) -> pb.RepositoryModelUnloadResponse:
        await self.repository.unload_model(request.model_name)
        return pb.RepositoryModelUnloadResponse(model_name=request.model_name, isUnloaded=True)

    async def ModelInfer(self, request: pb.ModelInferRequest, context: grpc.aio.ServicerContext) -> pb.ModelInferResponse:
        key = self._key(request.model_name, request.model_version)
        self.validate_grpc_request(request)
        infer_request = InferRequest.from_grpc(request)
        response, _ = await self._data_plane.infer(request=infer_request, headers=request_headers(context), model_name=key)
        if isinstance(response, pb.ModelInferResponse):
            return response
        if isinstance(response, InferResponse):
            return response.to_grpc()
        return pb.ModelInferResponse(id=response["id"], model_name=response["model_name"], outputs=response["outputs"])


class PredictorGRPCServer(GRPCServer):
    def __init__(self, port: int, data_plane: Any, repository: PredictorRepository, kwargs: dict, grace_period: int) -> None:
        super().__init__(port, data_plane, None, kwargs=kwargs, grace_period=grace_period)
        self.repository = repository

    async def start(self, max_workers: int) -> None:
        self._server = aio.server(
            futures.ThreadPoolExecutor(max_workers=max_workers),
            interceptors=(StatusInterceptor(), RequestIdInterceptor()),
            options=[
                ("grpc.max_send_message_length", self._kwargs.get("grpc_max_send_message_length")),
                ("grpc.max_receive_message_length", self._kwargs.get("grpc_max_receive_message_length")),
            ],
        )
        grpc_predict_v2_pb2_grpc.add_GRPCInferenceServiceServicer_to_server(
            PredictorServicer(self._data_plane, self.repository), self._server
        )
        self._server.add_insecure_port(f"[::]:{self._port}")
        logger.info("Starting gRPC server on [::]:%d", self._port)
        await self._server.start()
        await self._server.wait_for_termination()
