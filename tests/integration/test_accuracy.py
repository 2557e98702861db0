"""What the served models get right: held-out accuracy, paraphrase ranking, NER offsets, chunking
invariance, and HuggingFace/ONNX agreement."""

from __future__ import annotations

import dataclasses
import json
import urllib.request

import numpy as np
import pytest

from predictors.backends import load_model_config
from predictors.serving.predictor import TextPredictor


def infer(server, model, texts, outputs=None):
    body = {"inputs": [{"name": "text", "datatype": "BYTES", "shape": [len(texts)], "data": texts}]}
    if outputs:
        body["outputs"] = [{"name": n} for n in outputs]
    # A bulk evaluation states its own deadline, as a batch client would: 250 texts can outlast the
    # model's default 30 s on 2 loaded cores (a 504 in a cold make test, beside an image build).
    request = urllib.request.Request(f"{server.url}/v2/models/{model}/infer", data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json", "timeout-ms": "600000"})
    with urllib.request.urlopen(request, timeout=600) as reply:
        response = json.loads(reply.read())
    return {o["name"]: np.array(o["data"]).reshape(o["shape"]) if o["datatype"] != "BYTES" else o["data"]
            for o in response["outputs"]}


@pytest.mark.parametrize("model, bar", [("review-sentiment", 0.82), ("news-topic", 0.95), ("review-sentiment-tfidf", 0.78)])
def test_heldout_accuracy_through_the_server(server, demo_models, model, bar):
    heldout = load_model_config(demo_models / model).heldout()
    assert len(heldout) >= 400
    labels = []
    for start in range(0, len(heldout), 250):
        labels += infer(server, model, [e["text"] for e in heldout[start:start + 250]], ["label"])["label"]
    accuracy = np.mean([p == e["label"] for p, e in zip(labels, heldout)])
    print(f"{model}: served held-out accuracy {accuracy:.4f} on {len(heldout)}")
    assert accuracy >= bar


def test_paraphrases_score_higher_than_unrelated(server):
    pairs = [
        ("A man is playing a guitar.", "Someone is strumming a guitar.", "The stock market fell sharply today."),
        ("How do I reset my password?", "I forgot my password, how can I change it?", "What is the capital of France?"),
        ("The cat sleeps on the sofa.", "A kitten is napping on the couch.", "Interest rates were raised by the bank."),
        ("Heavy rain is expected tomorrow.", "It will rain a lot tomorrow.", "She bought a new pair of shoes."),
    ]
    vectors = infer(server, "sentence-embedding", [t for triple in pairs for t in triple])["embedding"].reshape(len(pairs), 3, -1)
    for (anchor, paraphrase, unrelated), text in zip(vectors, pairs):
        assert anchor @ paraphrase > anchor @ unrelated + 0.2, text


def test_ner_finds_name_email_phone_with_offsets(server):
    text = "Hi, I am John Smith, email john.smith@example.com, call me at (415) 555-0132."
    entities = json.loads(infer(server, "pii-ner", [text])["entities"][0])
    found = {e["entity"]: e for e in entities}
    for kind, value in [("GIVEN_NAME", "John"), ("SURNAME", "Smith"), ("EMAIL", "john.smith@example.com"),
                        ("PHONE", "(415) 555-0132")]:
        assert found[kind]["text"] == value
        assert text[found[kind]["start"]:found[kind]["end"]] == value


def test_chunking_invariance(server, demo_models):
    """50 texts in one request (batch_size 8, so 7 mixed-length chunks) equal 50 single requests."""
    texts = [e["text"] for e in load_model_config(demo_models / "review-sentiment").heldout()[:50]]
    together = infer(server, "review-sentiment", texts)["probabilities"]
    alone = np.concatenate([infer(server, "review-sentiment", [t])["probabilities"] for t in texts])
    np.testing.assert_allclose(together, alone, atol=1e-4)
    vectors = infer(server, "sentence-embedding", texts)["embedding"]
    single = np.concatenate([infer(server, "sentence-embedding", [t])["embedding"] for t in texts[:10]])
    np.testing.assert_allclose(vectors[:10], single, atol=1e-4)


@pytest.mark.parametrize("model", ["review-sentiment", "news-topic"])
def test_hf_and_onnx_agree_on_heldout_labels(demo_models, model):
    config = load_model_config(demo_models / model)
    texts = [e["text"] for e in config.heldout()[:120]]
    labels = {}
    for backend, onnx_file in (("hf", None), ("onnx", "model.onnx")):  # fp32 ONNX: the plain export
        predictor = TextPredictor(dataclasses.replace(config, backend=backend, onnx_file=onnx_file))
        predictor.load()
        assert predictor.choice.name == backend
        outputs = predictor.run_texts(texts).outputs
        labels[backend] = list(outputs["label"])
        predictor.stop()
    agreement = np.mean([a == b for a, b in zip(labels["hf"], labels["onnx"])])
    assert agreement >= 0.99, agreement
