"""Storage URIs as predictor.yaml and the repository API give them: parsed into their normal form,
or refused with a message that says what is wrong (the API's 400)."""

from __future__ import annotations

import pytest

from predictors.model.storage_uri import StorageUriError, parse_storage_uri, within


@pytest.mark.parametrize("uri, normal", [
    ("s3://models/fraud_detection/2.0.0", "s3://models/fraud_detection/2.0.0"),
    ("S3://Models/team/ner/", "s3://models/team/ner"),
    ("gs://my-bucket/m", "gs://my-bucket/m"),
    ("https://acct1.blob.core.windows.net/container/m", "https://acct1.blob.core.windows.net/container/m"),
    ("https://models.example.com/ner.tar.gz?token=1", "https://models.example.com/ner.tar.gz?token=1"),
    ("pvc://text-models/news-topic", "pvc://text-models/news-topic"),
    ("file:///srv/models/ner/", "file:///srv/models/ner"),
])
def test_a_valid_uri_is_kept_in_its_normal_form(uri, normal):
    assert parse_storage_uri(uri).text == normal


@pytest.mark.parametrize("uri, problem", [
    ("", "non-empty string"),
    ("bucket/models/x", "expected <scheme>://"),
    ("ftp://host/x", "scheme 'ftp' is not supported"),
    ("s3://b/x", "bucket name"),
    ("s3://models", "names no model"),
    ("s3://models/a/../other-team/x", "'..'"),
    ("s3://models/x?versionId=3", "has no query"),
    ("https://user:secret@host/x.tar.gz", "credentials"),
    ("http://host:99999/x", "not a valid URI"),
    ("s3://models/with space", "no spaces"),
    ("pvc://Not_A_Claim/x", "PersistentVolumeClaim name"),
    ("file://relative/path", "file:///absolute/path"),
    ("s3://models/x#frag", "fragment"),
])
def test_a_malformed_uri_names_the_problem(uri, problem):
    with pytest.raises(StorageUriError, match=problem.replace("?", r"\?").replace("(", r"\(")):
        parse_storage_uri(uri)


def test_a_prefix_covers_paths_below_it_on_segment_boundaries_only():
    team = parse_storage_uri("s3://models/team", prefix=True)
    assert within(parse_storage_uri("s3://models/team/ner"), team)
    assert within(parse_storage_uri("s3://models/team"), team)
    assert not within(parse_storage_uri("s3://models/team-b/ner"), team)
    assert not within(parse_storage_uri("gs://models/team/ner"), team)
    assert within(parse_storage_uri("s3://models/anything"), parse_storage_uri("s3://models", prefix=True))
    assert not within(parse_storage_uri("http://host/a/x.tgz"), parse_storage_uri("http://host:8080/a/", prefix=True))
