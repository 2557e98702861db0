"""Drift reference, window and PSI on synthetic prediction outputs (no model needed)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from predictors.model import ModelConfig
from predictors.serving.observability import drift
from predictors.tasks import head_for
from predictors.serving.observability.drift_texts import builtin_texts


def classification_outputs(labels: list[str], scores: list[float]) -> dict:
    return {"label": np.array(labels, dtype=object), "score": np.array(scores, dtype=np.float32)}


def mixed_stream(rng: np.random.Generator, n: int, share_great: float = 0.5) -> dict:
    great = rng.random(n) < share_great
    labels = ["great" if g else "other" for g in great]
    scores = np.where(great, rng.beta(8, 2, n), rng.beta(5, 3, n)) * 0.5 + 0.5
    return classification_outputs(labels, list(scores))


def classifier_config() -> ModelConfig:
    return ModelConfig(name="m", path=Path("/nowhere"), task="classification", labels=("great", "other"))


def reference_of(config: ModelConfig, outputs: dict, texts: int) -> drift.Reference:
    return drift.build_reference(config, head_for(config), outputs, "synthetic", texts)


def test_reference_proportions_and_round_trip():
    rng = np.random.default_rng(0)
    reference = reference_of(classifier_config(), mixed_stream(rng, 2000), 2000)
    label = reference.signals["label"]
    assert label.categories == ["great", "other"] and len(label.proportions) == 3  # + unseen bin
    assert abs(label.proportions[0] - 0.5) < 0.05 and label.proportions[2] == 0
    score = reference.signals["score"]
    assert len(score.edges) == drift.DECILES - 1
    assert all(abs(p - 0.1) < 0.02 for p in score.proportions)  # deciles: ~10 % per bin
    again = drift.Reference.from_json(json.loads(json.dumps(reference.to_json())))
    assert again.signals["score"].edges == score.edges and again.signals["label"].proportions == label.proportions


def test_window_psi_stays_low_for_the_same_mix_and_rises_for_one_class():
    rng = np.random.default_rng(1)
    reference = reference_of(classifier_config(), mixed_stream(rng, 2000), 2000)
    window = drift.DriftWindow(reference, head_for(classifier_config()), size=1000)
    assert np.isnan(window.psi("label"))
    for _ in range(10):
        window.observe(mixed_stream(rng, 100))
    assert len(window) == 1000
    assert window.psi("label") < 0.1 and window.psi("score") < 0.1
    for _ in range(10):  # the window slides: after 1000 one-class texts nothing of the mix is left
        window.observe(mixed_stream(rng, 100, share_great=1.0))
    assert len(window) == 1000
    assert window.psi("label") > 0.25


def test_unseen_category_lands_in_the_other_bin():
    signal = drift.categorical_signal("label", ["a", "b"], ["a", "b"])
    assert signal.bin("c") == 2 and signal.proportions == [0.5, 0.5, 0.0]


def test_embedding_cosine_signal_and_token_classification_signals(tmp_path):
    rng = np.random.default_rng(2)
    vectors = rng.normal(size=(500, 16)) + 3.0  # a common direction, so cosine to the centroid varies
    (tmp_path / "config.json").write_text(json.dumps({"hidden_size": 16}))
    config = ModelConfig(name="e", path=tmp_path, task="embedding")
    reference = reference_of(config, {"embedding": vectors}, 500)
    assert list(reference.signals) == ["cosine"] and len(reference.centroid) == 16
    window = drift.DriftWindow(reference, head_for(config), size=200)
    window.observe({"embedding": rng.normal(size=(200, 16)) + 3.0})
    same = window.psi("cosine")
    window.observe({"embedding": rng.normal(size=(200, 16))})  # no common direction: far from the centroid
    assert same < 0.1 < 0.25 < window.psi("cosine")

    ner = ModelConfig(name="n", path=Path("/nowhere"), task="token_classification", labels=("O", "B-EMAIL"))
    entities = [[], [{"entity": "EMAIL"}], json.dumps([{"entity": "EMAIL"}, {"entity": "PHONE"}])]
    reference = reference_of(ner, {"entities": entities}, 3)
    assert reference.signals["entity_type"].categories == ["none", "EMAIL"]
    assert reference.signals["entity_count"].proportions[:3] == [round(1 / 3, 6)] * 3


def test_builtin_texts_are_deterministic_and_varied():
    texts = builtin_texts()
    assert texts == builtin_texts() and len(texts) == len(set(texts)) == 144
    assert sum("@" in t for t in texts) >= 10
