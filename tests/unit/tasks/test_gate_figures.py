"""Each task head's part of the ONNX export gate, on synthetic runs (no models): the figures it
computes from a torch run and a candidate run, the checks that apply per precision, the summary."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest

from predictors.export.gate import Thresholds
from predictors.tasks import TASKS


@dataclass
class SyntheticRun:
    """A GateRun made of hand-written arrays."""

    raw: list[np.ndarray]
    outputs: dict[str, np.ndarray]


def classification_run(labels: list[str], probabilities: list[list[float]]) -> SyntheticRun:
    probs = np.asarray(probabilities, dtype=np.float32)
    return SyntheticRun(list(np.log(probs)), {"label": np.array(labels, dtype=object), "probabilities": probs})


def test_per_token_output_is_declared_by_each_head():
    assert {name: head.per_token_output for name, head in TASKS.items()} == {
        "classification": False, "token_classification": True, "embedding": True}


# ---- classification -----------------------------------------------------------------------------
def test_classification_agreement_and_accuracy_on_labelled_texts_only():
    head = TASKS["classification"]
    torch_run = classification_run(["pos", "neg", "pos", "neg"], [[0.2, 0.8], [0.9, 0.1], [0.4, 0.6], [0.7, 0.3]])
    onnx_run = classification_run(["pos", "neg", "neg", "neg"], [[0.2, 0.8], [0.9, 0.1], [0.55, 0.45], [0.7, 0.3]])
    gold = ["pos", "neg", None, "pos"]  # text 2 (the one that changed) has no gold label
    figures = head.gate_figures(torch_run, onnx_run, gold, ["a", "b", "c", "d"])
    assert figures["top1_agreement"] == 0.75 and figures["changed"] == 1
    assert figures["max_probability_diff"] == pytest.approx(0.15, abs=1e-6)
    assert figures["labelled"] == 3
    assert figures["reference_accuracy"] == pytest.approx(2 / 3) and figures["accuracy"] == pytest.approx(2 / 3)
    assert figures["accuracy_drop"] == pytest.approx(0.0)
    assert "accuracy" not in head.gate_figures(torch_run, onnx_run, [None] * 4, [])


def test_classification_checks_use_the_precisions_agreement_and_the_accuracy_drop_when_labelled():
    head = TASKS["classification"]
    figures = {"texts": 200, "top1_agreement": 0.995, "changed": 1}
    [fp32] = head.gate_checks("fp32", figures, Thresholds())
    assert (fp32.gate, fp32.limit, fp32.op) == ("fp32 top-1 agreement", 1.0, ">=")
    [int8] = head.gate_checks("int8", figures, Thresholds(int8_min_agreement=0.98))
    assert (int8.gate, int8.value, int8.limit) == ("int8 top-1 agreement", 0.995, 0.98)
    assert "1 of 200 texts changed label" in int8.detail
    labelled = {**figures, "accuracy": 0.80, "reference_accuracy": 0.82, "accuracy_drop": 0.02}
    drop = head.gate_checks("int8", labelled, Thresholds())[1]
    assert (drop.gate, drop.limit, drop.op, drop.show(drop.value)) == ("int8 accuracy drop", 0.01, "<=", "2.00 pt")
    assert head.gate_summary(labelled) == ["top-1 agreement 99.50% (1 of 200 changed)", "accuracy 80.00% vs torch 82.00%"]


# ---- embedding ----------------------------------------------------------------------------------
def embedding_run(vectors: np.ndarray) -> SyntheticRun:
    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    return SyntheticRun([row[None, :] for row in unit], {"embedding": unit.astype(np.float32)})


def test_embedding_cosine_names_the_worst_text_and_neighbour_agreement_sees_a_flip():
    head = TASKS["embedding"]
    torch_vectors = np.array([[1.0, 0.0, 0.0], [0.9, 0.1, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    texts = ["cats", "kittens", "stocks", "rain"]
    same = head.gate_figures(embedding_run(torch_vectors), embedding_run(torch_vectors.copy()), [None] * 4, texts)
    assert same["cosine_mean"] == pytest.approx(1.0) and same["neighbour_agreement"] == 1.0
    moved = torch_vectors.copy()
    moved[1] = [0.1, 0.9, 0.0]  # "kittens" now sits next to "stocks": its nearest neighbour changes
    figures = head.gate_figures(embedding_run(torch_vectors), embedding_run(moved), [None] * 4, texts)
    assert figures["worst_text"] == "kittens"
    assert figures["cosine_min"] < 0.3 < figures["cosine_mean"] < 1.0
    assert figures["neighbour_agreement"] == 0.75  # only "kittens" changed its nearest neighbour (to "stocks")
    two = head.gate_figures(embedding_run(torch_vectors[:2]), embedding_run(moved[:2]), [None] * 2, texts[:2])
    assert "neighbour_agreement" not in two  # needs a third text to mean anything


def test_embedding_is_held_to_cosine_only_at_int8():
    head = TASKS["embedding"]
    figures = {"cosine_mean": 0.985, "cosine_min": 0.95}
    assert head.gate_checks("fp32", figures, Thresholds()) == []
    [cosine] = head.gate_checks("int8", figures, Thresholds())
    assert (cosine.gate, cosine.limit, cosine.show(cosine.value)) == ("int8 embedding cosine", 0.99, "0.9850")
    assert head.gate_summary(figures) == ["cosine mean 0.9850 (worst text 0.9500)"]


# ---- token classification -----------------------------------------------------------------------
def token_run(token_logits: list[list[list[float]]], entities: list[list[tuple[str, int, int]]]) -> SyntheticRun:
    spans = np.empty(len(entities), dtype=object)
    for i, row in enumerate(entities):
        spans[i] = [{"entity": e, "start": s, "end": t, "text": "", "score": 0.9} for e, s, t in row]
    return SyntheticRun([np.asarray(t, dtype=np.float32) for t in token_logits], {"entities": spans})


def test_token_classification_span_and_token_agreement():
    head = TASKS["token_classification"]
    torch_run = token_run([[[0, 1], [0, 1], [1, 0]], [[1, 0]]], [[("NAME", 0, 4), ("EMAIL", 10, 20)], []])
    onnx_run = token_run([[[0, 1], [1, 0], [1, 0]], [[1, 0]]], [[("NAME", 0, 4), ("EMAIL", 10, 19)], []])
    figures = head.gate_figures(torch_run, onnx_run, [None, None], ["x", "y"])
    assert figures["token_agreement"] == 0.75  # 3 of 4 real tokens keep their top label
    assert figures["spans"] == 3 and figures["span_agreement"] == pytest.approx(1 / 3)  # EMAIL's end moved
    assert figures["texts_with_same_spans"] == 0.5
    [check] = head.gate_checks("int8", figures, Thresholds())
    assert (check.gate, check.limit) == ("int8 span agreement", 0.99)
    assert head.gate_summary(figures) == ["span agreement 33.33% of 3 spans"]


def test_token_classification_without_entities_agrees_fully():
    head = TASKS["token_classification"]
    run = token_run([[[1, 0]]], [[]])
    assert head.gate_figures(run, run, [None], ["x"])["span_agreement"] == 1.0
