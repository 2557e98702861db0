"""The storage cache's bookkeeping (predictors/serving/storage/cache.py): where a model's copy lives,
and what a server starting after a killed one removes. Downloads themselves, complete and
interrupted, against a real S3 server: tests/integration/test_storage.py."""

from __future__ import annotations

from predictors.model.storage_uri import parse_storage_uri
from predictors.serving.errors import BadRequest, Refused, RetryLater, StorageNotFound, StorageUnreachable
from predictors.serving.storage.cache import StorageCache, download_source, storage_error


def test_each_model_and_uri_has_its_own_copy(tmp_path):
    cache = StorageCache(tmp_path)
    ner, other = parse_storage_uri("s3://models/team/ner"), parse_storage_uri("s3://models/team/other")
    assert cache.folder_for("a", ner) != cache.folder_for("a", other) != cache.folder_for("b", ner)
    assert cache.folder_for("a", ner).name.startswith("a-") and cache.cached("a", ner) is None
    cache.folder_for("a", ner).mkdir()
    assert cache.cached("a", ner) == cache.folder_for("a", ner)


def test_a_start_removes_partial_downloads_retired_copies_and_orphans(tmp_path):
    cache = StorageCache(tmp_path)
    kept = cache.folder_for("a", parse_storage_uri("s3://models/a"))
    for folder in (tmp_path / ".partial" / "a-x1" / "files", tmp_path / ".retired" / "b-y2" / "old", kept,
                   tmp_path / "gone-0123456789ab"):
        folder.mkdir(parents=True)
        (folder / "model.onnx").write_bytes(b"half")
    cache.clean(keep={kept})
    assert sorted(p.name for p in tmp_path.iterdir()) == [kept.name]


def test_discarding_a_copy_leaves_no_trace(tmp_path):
    cache = StorageCache(tmp_path)
    uri = parse_storage_uri("s3://models/a")
    cache.folder_for("a", uri).mkdir()
    cache.discard("a", uri)
    assert cache.cached("a", uri) is None and not any((tmp_path / ".retired").iterdir())


def test_each_failure_kind_is_its_own_answer():
    uri = parse_storage_uri("s3://models/a")
    expected = {"not_found": (StorageNotFound, 404), "denied": (Refused, 403), "refused": (Refused, 403),
                "unreachable": (StorageUnreachable, 503), "invalid": (BadRequest, 400), "no_space": (RetryLater, 503),
                "failed": (RetryLater, 503)}
    for kind, (error, status) in expected.items():
        answer = storage_error(uri, kind, "why")
        assert isinstance(answer, error) and answer.http_status == status and "s3://models/a" in answer.message


def test_a_pvc_uri_is_read_from_its_mounted_claim_and_other_uris_are_given_as_they_are():
    assert download_source(parse_storage_uri("pvc://text-models/team/ner")) == "/mnt/pvc/text-models/team/ner"
    assert download_source(parse_storage_uri("S3://Models/team/ner")) == "s3://models/team/ner"
