"""Errors a request can end in, and their one mapping to HTTP status and gRPC code (`classify`).

The transport turns them into answers (transport/error_handlers.py for REST, the gRPC status
interceptor), with a message about the client's mistake or the model's state, never Python internals.
"""

from __future__ import annotations

from http import HTTPStatus

import grpc
from kserve.errors import InferenceError, InvalidInput, ModelNotFound, ModelNotReady, ServerNotReady, UnsupportedProtocol


class ServingError(Exception):
    """A request that cannot be served, with its HTTP status and gRPC code."""

    http_status: HTTPStatus = HTTPStatus.INTERNAL_SERVER_ERROR
    grpc_code: grpc.StatusCode = grpc.StatusCode.INTERNAL

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def headers(self) -> dict[str, str]:
        return {}


class BadModelName(ServingError):
    """A model name that is no folder directly under the models folder."""

    http_status = HTTPStatus.BAD_REQUEST
    grpc_code = grpc.StatusCode.INVALID_ARGUMENT


class UnknownModel(ServingError):
    http_status = HTTPStatus.NOT_FOUND
    grpc_code = grpc.StatusCode.NOT_FOUND


class UnknownVersion(ServingError):
    http_status = HTTPStatus.NOT_FOUND
    grpc_code = grpc.StatusCode.NOT_FOUND


class NoExplainer(ServingError):
    """V1 `:explain` on a model that has no explainer (none of ours has one)."""

    http_status = HTTPStatus.NOT_FOUND
    grpc_code = grpc.StatusCode.UNIMPLEMENTED


class ModelUnavailable(ServingError):
    """Loading, unloaded, failed to load, or draining: retry later (503 / UNAVAILABLE)."""

    http_status = HTTPStatus.SERVICE_UNAVAILABLE
    grpc_code = grpc.StatusCode.UNAVAILABLE


class WithRetryAfter(ServingError):
    """An error that tells the client when to try again (a Retry-After header, whole seconds)."""

    def __init__(self, message: str, retry_after_seconds: float = 1.0) -> None:
        super().__init__(message)
        self.retry_after_seconds = retry_after_seconds

    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(max(1, round(self.retry_after_seconds)))}


class RetryLater(WithRetryAfter):
    """Unavailable for now: a model that does not fit the memory budget until a busy one finishes,
    an object store that cannot be reached (503 / UNAVAILABLE)."""

    http_status = HTTPStatus.SERVICE_UNAVAILABLE
    grpc_code = grpc.StatusCode.UNAVAILABLE


class NoMemoryForModel(RetryLater):
    """A load that does not fit the models' memory budget, with nothing idle left to evict."""


class StorageUnreachable(RetryLater):
    """The object store or host of a storage URI did not answer (connection, DNS, timeout)."""


class BadRequest(ServingError):
    """A request the server cannot act on as written: a malformed storage URI, a bad load body."""

    http_status = HTTPStatus.BAD_REQUEST
    grpc_code = grpc.StatusCode.INVALID_ARGUMENT


class Refused(ServingError):
    """Not allowed here: a URI outside PREDICTORS_STORAGE_ALLOW, a cloud-metadata address, the
    repository's write routes in read-only mode, a store that denies the server's credentials."""

    http_status = HTTPStatus.FORBIDDEN
    grpc_code = grpc.StatusCode.PERMISSION_DENIED


class StorageNotFound(ServingError):
    """A storage URI whose bucket, prefix or file does not exist."""

    http_status = HTTPStatus.NOT_FOUND
    grpc_code = grpc.StatusCode.NOT_FOUND


class NameTaken(ServingError):
    """A URI load under the name of a model served from its own folder."""

    http_status = HTTPStatus.CONFLICT
    grpc_code = grpc.StatusCode.ALREADY_EXISTS


class LoadFailed(ServingError):
    """A repository load whose new version did not load; the serving one is untouched."""

    http_status = HTTPStatus.BAD_REQUEST
    grpc_code = grpc.StatusCode.FAILED_PRECONDITION


class QueueFull(WithRetryAfter):
    """Admission control: the model's queue has no room for the request."""

    http_status = HTTPStatus.TOO_MANY_REQUESTS
    grpc_code = grpc.StatusCode.RESOURCE_EXHAUSTED


class DeadlineExceeded(ServingError):
    http_status = HTTPStatus.GATEWAY_TIMEOUT
    grpc_code = grpc.StatusCode.DEADLINE_EXCEEDED


def classify(exc: BaseException) -> tuple[int, grpc.StatusCode, str, dict[str, str]]:
    """(HTTP status, gRPC code, message, extra headers) for any exception a request can end in."""
    if isinstance(exc, ServingError):
        return exc.http_status, exc.grpc_code, exc.message, exc.headers()
    if isinstance(exc, (InvalidInput, UnsupportedProtocol)):
        return 400, grpc.StatusCode.INVALID_ARGUMENT, str(getattr(exc, "reason", exc)), {}
    if isinstance(exc, ModelNotFound):
        return 404, grpc.StatusCode.NOT_FOUND, str(exc), {}
    if isinstance(exc, (ModelNotReady, ServerNotReady)):
        return 503, grpc.StatusCode.UNAVAILABLE, str(exc), {}
    if isinstance(exc, InferenceError):
        return 500, grpc.StatusCode.INTERNAL, f"inference failed: {exc}", {}
    return 500, grpc.StatusCode.INTERNAL, "internal error; the server log has the details", {}
