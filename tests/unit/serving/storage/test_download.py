"""The download process's report (predictors/serving/storage/download.py): each way a download fails
is told apart, as the server answers it (404, 403, 503...). Real downloads from a real S3 server:
tests/integration/test_storage.py."""

from __future__ import annotations

import errno

import pytest
from botocore.exceptions import ClientError, EndpointConnectionError, NoCredentialsError

from predictors.serving.storage.download import UNSAFE_KEY_PATTERNS, GuardRefused, classify, ignore_patterns


def client_error(code: str) -> ClientError:
    return ClientError({"Error": {"Code": code, "Message": code}}, "HeadBucket")


def wrapped(cause: BaseException, message: str = "S3 error") -> RuntimeError:
    """As kserve_storage raises them: a RuntimeError with a friendly message, from the SDK's error."""
    try:
        raise RuntimeError(message) from cause
    except RuntimeError as exc:
        return exc


@pytest.mark.parametrize("exc, kind", [
    (wrapped(client_error("NoSuchBucket")), "not_found"),
    (wrapped(client_error("404")), "not_found"),
    (RuntimeError("Failed to fetch model. No model found in models/x."), "not_found"),
    (wrapped(client_error("AccessDenied")), "denied"),
    (wrapped(client_error("InvalidAccessKeyId")), "denied"),
    (wrapped(NoCredentialsError()), "denied"),
    (wrapped(EndpointConnectionError(endpoint_url="http://127.0.0.1:1/x")), "unreachable"),
    # kserve_storage's report of files that failed in its worker pool: text only, the endpoint's port holds "404"
    (RuntimeError('Failed to download 2 files: team/big/model.onnx: Could not connect to the endpoint URL: '
                  '"http://127.0.0.1:40409/models/team/big/model.onnx"'), "unreachable"),
    (RuntimeError("Failed to download 1 files: a.bin: An error occurred (404) when calling the HeadObject operation"),
     "not_found"),
    (wrapped(GuardRefused("host resolves to 169.254.169.254: a cloud metadata address")), "refused"),
    (OSError(errno.ENOSPC, "No space left on device"), "no_space"),
    (ValueError("something else"), "failed"),
])
def test_each_failure_is_told_apart(exc, kind):
    assert classify(exc)[0] == kind


def test_the_message_keeps_the_cause():
    kind, message = classify(wrapped(client_error("NoSuchBucket"), "S3 bucket 'x' does not exist."))
    assert kind == "not_found" and "S3 bucket 'x' does not exist." in message and "NoSuchBucket" in message


def test_keys_that_would_leave_the_folder_are_always_skipped(monkeypatch):
    monkeypatch.setenv("STORAGE_IGNORE_PATTERNS", '["*.bin"]')
    assert ignore_patterns() == [*UNSAFE_KEY_PATTERNS, "*.bin"]
    monkeypatch.setenv("STORAGE_IGNORE_PATTERNS", "*.bin, *.pt")
    assert ignore_patterns() == [*UNSAFE_KEY_PATTERNS, "*.bin", "*.pt"]
