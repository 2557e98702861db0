"""TextPredictor with a backend that takes texts (a real tiny scikit-learn pipeline): the texts are
cut and cleaned, no tokenizer is loaded, the scheduler, cache and head work as for token ids, and
the cache keys on the cleaned text only where no cut is involved."""

from __future__ import annotations

import asyncio
import dataclasses

import numpy as np
import pytest
from kserve.protocol.infer_type import InferInput, InferRequest

from predictors.backends import load_model_config
from predictors.model import PreprocessSection
from predictors.serving.predictor import ModelLoadError, TextPredictor
from predictors.serving.scheduling.cache import answer_digest
from tests.helpers import write_folder, write_pipeline_folder

PREPROCESS = "preprocess: {lowercase: true, remove_punctuation: true, collapse_whitespace: true}\n"


@pytest.fixture
def pipeline_model(tmp_path):
    folder, pipeline = write_pipeline_folder(tmp_path / "m", predictor_yaml=PREPROCESS + "max_text_chars: 40\n")
    predictor = TextPredictor(load_model_config(folder))
    predictor.load()
    yield predictor, pipeline
    predictor.stop()


def request(texts):
    return InferRequest(model_name="m", infer_inputs=[InferInput("text", [len(texts)], "BYTES", texts)], request_id="t")


def infer(predictor, texts):
    async def call():
        return await predictor.predict(await predictor.preprocess(request(texts)))
    return asyncio.run(call())


def test_texts_are_cleaned_then_run_by_the_pipeline_without_a_tokenizer(pipeline_model):
    predictor, pipeline = pipeline_model
    assert predictor.backend.takes_texts and predictor.tokenizer is None
    texts = ["GREAT coffee!!  Rich, and smooth.", "Stale chips; a torn bag..."]
    run = predictor.run_texts(texts)
    expected = pipeline.predict_proba(["great coffee rich and smooth", "stale chips a torn bag"])
    np.testing.assert_allclose(run.outputs["probabilities"], expected, atol=1e-6)
    assert list(run.outputs["label"]) == ["great", "other"]


def test_a_text_backends_tokens_are_the_cleaned_texts_words_and_nothing_is_padding(pipeline_model):
    predictor, _ = pipeline_model
    stages = []
    run = predictor.run_batch(["One, two; THREE!", "four"], lambda stage, f, *a: (stages.append(stage), f(*a))[1])
    assert stages == ["tokenize", "backend", "postprocess"]
    assert list(run.tokens) == [3, 1] and run.padded_tokens == 4


def test_cut_texts_are_reported_truncated(pipeline_model):
    predictor, _ = pipeline_model
    run = predictor.run_texts(["great " * 20, "stale"])
    assert run.truncated == [0]


def test_texts_that_clean_alike_share_one_cache_entry_and_one_run(pipeline_model):
    predictor, _ = pipeline_model
    first = infer(predictor, ["Great coffee!", "great   COFFEE"])
    assert predictor.cache.stats()["entries"] == 1
    second = infer(predictor, ["GREAT coffee."])
    assert predictor.cache.stats()["hits"] == 1
    np.testing.assert_array_equal(second.outputs["probabilities"][0], first.outputs["probabilities"][0])


def test_a_text_cut_to_the_limit_is_keyed_as_sent(pipeline_model):
    predictor, _ = pipeline_model
    long_text = "Great coffee " * 10  # 130 characters, the limit is 40
    assert predictor._cache_key(long_text) == long_text
    assert predictor._cache_key("Great, coffee") == "great coffee"
    infer(predictor, [long_text, long_text[:40]])
    assert predictor.cache.stats()["entries"] == 2  # the cut text and the 40-character one stay apart


def test_the_cache_identity_includes_the_cleaning(tmp_path):
    folder, _ = write_pipeline_folder(tmp_path / "m")
    config = load_model_config(folder)
    plain = answer_digest(config, folder / "model.skops")
    lowered = answer_digest(dataclasses.replace(config, preprocess=PreprocessSection(lowercase=True)), folder / "model.skops")
    assert plain != lowered and len(lowered) == 64


def test_cleaning_is_refused_for_a_task_whose_outputs_point_into_the_text(tmp_path):
    folder = write_folder(tmp_path / "ner", architecture="BertForTokenClassification", labels=("O", "B-X"),
                          predictor_yaml=PREPROCESS)
    with pytest.raises(ModelLoadError, match="character offsets would not point into the texts clients sent"):
        TextPredictor(load_model_config(folder)).load()


def test_config_reports_what_the_model_takes_and_its_features(pipeline_model):
    predictor, pipeline = pipeline_model
    described = predictor.describe()
    assert (described["inputs_taken"], described["max_length"], described["max_text_chars"]) == ("texts", None, 40)
    assert described["preprocess"] == ["lowercase", "remove_punctuation", "collapse_whitespace"]
    assert described["features"]["vocabulary_size"] == len(pipeline.named_steps["tfidf"].vocabulary_)
    assert described["labels"] == ["great", "other"] and described["platform"] == "sklearn_skops"
