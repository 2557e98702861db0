from __future__ import annotations

import json

import numpy as np

from predictors.tasks import load_model_config
from predictors.tasks import TASKS, TokenBatch
from predictors.tasks.embedding import pool
from predictors.tasks.token_classification import merge_tokens
from tests.helpers import write_folder


def batch(texts, mask=None, offsets=None, special=None):
    arrays = {"attention_mask": np.asarray(mask)} if mask is not None else {}
    return TokenBatch(texts, arrays, None if offsets is None else np.asarray(offsets),
                      None if special is None else np.asarray(special), [False] * len(texts))


def test_classification_head(tmp_path):
    head = TASKS["classification"](load_model_config(write_folder(tmp_path / "c", labels=("great", "other"))))
    out = head.decode(np.array([[2.0, 0.0], [0.0, 3.0]]), batch(["a", "b"]))
    assert list(out["label"]) == ["great", "other"]
    np.testing.assert_allclose(out["probabilities"].sum(axis=1), 1.0, rtol=1e-6)
    np.testing.assert_allclose(out["score"], [1 / (1 + np.exp(-2)), 1 / (1 + np.exp(-3))], rtol=1e-6)
    assert [s.metadata() for s in head.outputs()][2] == {"name": "probabilities", "datatype": "FP32", "shape": [-1, 2]}
    assert head.describe() == {"labels": ["great", "other"]}


def test_mean_pooling_ignores_padding():
    states = np.array([[[1.0, 1.0], [3.0, 3.0], [100.0, 100.0]]])
    np.testing.assert_allclose(pool(states, np.array([[1, 1, 0]]), "mean"), [[2.0, 2.0]])
    np.testing.assert_allclose(pool(states, np.array([[1, 1, 0]]), "max"), [[3.0, 3.0]])
    np.testing.assert_allclose(pool(states, np.array([[1, 1, 0]]), "cls"), [[1.0, 1.0]])


def test_embedding_head_normalises(tmp_path):
    head = TASKS["embedding"](load_model_config(write_folder(tmp_path / "e", architecture="BertModel", labels=())))
    out = head.decode(np.random.default_rng(0).normal(size=(2, 3, 8)), batch(["a", "b"], mask=[[1, 1, 1], [1, 0, 0]]))
    np.testing.assert_allclose(np.linalg.norm(out["embedding"], axis=1), 1.0, rtol=1e-5)
    assert out["embedding"].shape == (2, 8)


def test_merge_joins_touching_pieces_of_one_entity():
    text = "mail john.smith@example.com now"
    tokens = [("O", 0.9, 0, 4), ("B-EMAIL", 0.9, 5, 9), ("B-EMAIL", 0.8, 9, 10), ("B-EMAIL", 0.7, 10, 15),
              ("B-EMAIL", 0.9, 15, 16), ("B-EMAIL", 0.9, 16, 27), ("O", 0.9, 28, 31)]
    [span] = merge_tokens(text, tokens)
    assert (span["entity"], span["start"], span["end"], span["text"]) == ("EMAIL", 5, 27, "john.smith@example.com")
    assert abs(span["score"] - np.mean([0.9, 0.8, 0.7, 0.9, 0.9])) < 1e-6


def test_merge_continues_i_tags_across_spaces_but_b_opens_new_span():
    text = "call (415) 555-0132 or John Smith"
    tokens = [("B-PHONE", 0.9, 5, 6), ("I-PHONE", 0.9, 6, 9), ("I-PHONE", 0.9, 9, 10), ("I-PHONE", 0.9, 11, 14),
              ("I-PHONE", 0.9, 14, 15), ("I-PHONE", 0.9, 15, 19), ("B-GIVEN_NAME", 0.9, 23, 27),
              ("B-SURNAME", 0.9, 28, 33)]
    spans = merge_tokens(text, tokens)
    assert [(s["entity"], s["text"]) for s in spans] == [
        ("PHONE", "(415) 555-0132"), ("GIVEN_NAME", "John"), ("SURNAME", "Smith")]


def test_two_b_tagged_names_stay_apart():
    text = "Ann Bob"
    spans = merge_tokens(text, [("B-GIVEN_NAME", 0.9, 0, 3), ("B-GIVEN_NAME", 0.9, 4, 7)])
    assert [s["text"] for s in spans] == ["Ann", "Bob"]


def test_token_head_skips_special_tokens(tmp_path):
    labels = ("O", "B-EMAIL", "I-EMAIL")
    head = TASKS["token_classification"](load_model_config(
        write_folder(tmp_path / "t", architecture="BertForTokenClassification", labels=labels)))
    logits = np.full((1, 4, 3), -5.0)
    logits[0, :, 1] = 5.0  # every position says B-EMAIL, including [CLS]/[SEP]
    out = head.decode(logits, batch(["a@b.c"], offsets=[[[0, 0], [0, 1], [1, 5], [0, 0]]], special=[[1, 0, 0, 1]]))
    [entity] = out["entities"][0]
    assert (entity["start"], entity["end"], entity["text"]) == (0, 5, "a@b.c")
    assert json.dumps(out["entities"][0])  # JSON-serialisable as sent over the wire
    assert head.describe() == {"entities": ["EMAIL"]}
