"""Who may make the server fetch what (predictors/serving/storage/access.py): the allow-list, and the
addresses never fetched whatever it says. The refusals through the repository API:
tests/unit/serving/test_repository_loading.py; through the real server: tests/integration/test_storage.py."""

from __future__ import annotations

import pytest

from predictors.model.storage_uri import parse_storage_uri
from predictors.serving.storage.access import AccessRefused, HttpGuard, StorageAccess, address_problem


@pytest.mark.parametrize("address, problem", [
    ("169.254.169.254", "cloud metadata"),
    ("::ffff:169.254.169.254", "cloud metadata"),
    ("fd00:ec2::254", "cloud metadata"),
    ("100.100.100.200", "cloud metadata"),
    ("169.254.1.1", "link-local"),
    ("fe80::1", "link-local"),
    ("127.0.0.1", "loopback"),
    ("::1", "loopback"),
    ("0.0.0.0", "loopback"),
    ("224.0.0.1", "not a unicast"),
])
def test_addresses_that_are_refused(address, problem):
    assert problem in address_problem(address, loopback_allowed=False)


def test_loopback_is_allowed_only_when_asked_and_metadata_never():
    assert address_problem("127.0.0.1", loopback_allowed=True) is None
    assert "cloud metadata" in address_problem("169.254.169.254", loopback_allowed=True)
    assert address_problem("10.0.0.5", loopback_allowed=False) is None
    assert address_problem("93.184.216.34", loopback_allowed=False) is None


def test_object_store_uris_need_only_the_allow_list():
    access = StorageAccess(("s3://models/team-a/",))
    assert access.check(parse_storage_uri("s3://models/team-a/ner"), from_api=True) is None
    with pytest.raises(AccessRefused, match="not under any prefix"):
        access.check(parse_storage_uri("s3://models/team-ab/ner"), from_api=True)
    assert access.check(parse_storage_uri("s3://other/x"), from_api=False) is None  # predictor.yaml's own


def test_a_loopback_prefix_allows_loopback_downloads_and_nothing_else_does():
    access = StorageAccess(("http://127.0.0.1:9000/models/", "https://models.example.com/"))
    assert access.check(parse_storage_uri("http://127.0.0.1:9000/models/ner.tar.gz"), from_api=True) == HttpGuard(True)
    assert access.check(parse_storage_uri("https://models.example.com/ner.tar.gz"), from_api=True) == HttpGuard(False)
    with pytest.raises(AccessRefused, match="is the pod itself"):  # a predictor.yaml URI on loopback, outside the list
        access.check(parse_storage_uri("http://localhost/ner.tar.gz"), from_api=False)


def test_azure_storage_is_reached_through_its_sdk_without_the_connection_guard():
    access = StorageAccess(("https://acct1.blob.core.windows.net/models/",))
    assert access.check(parse_storage_uri("https://acct1.blob.core.windows.net/models/ner"), from_api=True) is None


def test_an_allow_list_entry_the_parser_refuses_stops_the_server():
    with pytest.raises(ValueError, match="PREDICTORS_STORAGE_ALLOW: .*bucket name"):
        StorageAccess(("s3://b/",))
