"""scikit-learn text pipelines on the real server: the demo review-sentiment-tfidf answers exactly as
scikit-learn does over every protocol, its cleaning is the training's, its ONNX export is gated;
users' own folders serve by being dropped in, and pickles and untrusted files are refused, never
loaded, with the reason (and the conversion command) in the repository index."""

from __future__ import annotations

import asyncio
import json
import os
import pickle
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import joblib
import numpy as np
import onnx
import pytest
import tritonclient.http as triton_http

from predictors.backends import load_model_config
from predictors.backends.skops_files import load_pipeline
from predictors.export import ExportError, GateFailed, check_file, export_model
from tests.conftest import ROOT, RunningServer, start_server
from tests.helpers import PIPELINE_TEXTS, write_pipeline_folder
from tools.build.recipes import REVIEW_TRAIN

MODEL = "review-sentiment-tfidf"
JSON = {"Content-Type": "application/json"}


def post(url: str, body: dict | None = None) -> tuple[int, dict]:
    request = urllib.request.Request(url, data=json.dumps(body or {}).encode(), headers=JSON, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=120) as reply:
            return reply.status, json.loads(reply.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")


def get(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=60) as reply:
        return json.loads(reply.read())


def v2_body(texts: list[str]) -> dict:
    return {"inputs": [{"name": "text", "datatype": "BYTES", "shape": [len(texts)], "data": texts}]}


def v2_outputs(response: dict) -> dict:
    return {o["name"]: np.array(o["data"]).reshape(o["shape"]) if o["datatype"] != "BYTES" else o["data"]
            for o in response["outputs"]}


@pytest.fixture(scope="module")
def tfidf(demo_models):
    """The demo model's config and its pipeline, loaded as the server would load it."""
    config = load_model_config(demo_models / MODEL)
    return config, load_pipeline(config.pipeline_file)


# ---- the demo model -------------------------------------------------------------------------------
def test_served_answers_are_scikit_learns_predict_proba_on_every_heldout_text(server, tfidf):
    config, pipeline = tfidf
    heldout = config.heldout()
    texts = [row["text"] for row in heldout]
    probabilities, labels = [], []
    for start in range(0, len(texts), 250):
        status, response = post(f"{server.url}/v2/models/{MODEL}/infer", v2_body(texts[start:start + 250]))
        assert status == 200, response
        outputs = v2_outputs(response)
        probabilities.append(outputs["probabilities"])
        labels += outputs["label"]
    cleaned = [config.cleaner(text) for text in texts]
    np.testing.assert_allclose(np.concatenate(probabilities), pipeline.predict_proba(cleaned), atol=1e-5)
    assert labels == list(pipeline.predict(cleaned))
    accuracy = np.mean([label == row["label"] for label, row in zip(labels, heldout)])
    assert accuracy >= 0.78, accuracy  # the build's bar


def test_cleaning_is_identical_at_train_and_serve_time(tfidf):
    """Refit the pipeline on the training split cleaned by the *served* config's cleaner: the same
    vocabulary and the same coefficients as the built model.skops."""
    from tools.build.cache import cache_root_dir
    from tools.build.data import read_fine_foods
    from tools.build.recipes import REVIEW_TFIDF
    from tools.build.sources import Sources
    from tools.build.tfidf import fit_tfidf

    config, built = tfidf
    assert config.cleaner.active
    data = read_fine_foods(Sources(cache_root_dir()).modeldata()[0])
    refitted = fit_tfidf(data, REVIEW_TFIDF, config.cleaner).pipeline
    assert refitted.named_steps["tfidf"].vocabulary_ == built.named_steps["tfidf"].vocabulary_
    np.testing.assert_array_equal(refitted.named_steps["classifier"].coef_, built.named_steps["classifier"].coef_)
    # and every n-gram it learned is already clean: what serving produces, nothing it cannot
    vocabulary = built.named_steps["tfidf"].vocabulary_
    assert all(config.cleaner(term) == term for term in vocabulary)
    assert "_number_" in vocabulary and not any(c.isdigit() for term in vocabulary for c in term)


@pytest.mark.parametrize("binary", [False, True])
def test_tritonclient_rest_json_and_binary(server, binary):
    client = triton_http.InferenceServerClient(f"127.0.0.1:{server.http_port}")
    texts = ["Great coffee, rich and smooth. Will buy again!", "The bag arrived torn and the chips were stale."]
    tensor = triton_http.InferInput("text", [2], "BYTES")
    tensor.set_data_from_numpy(np.array(texts, dtype=object), binary_data=binary)
    result = client.infer(MODEL, [tensor], outputs=[triton_http.InferRequestedOutput(n, binary_data=binary)
                                                    for n in ("label", "score", "probabilities")])
    labels = [label.decode() if isinstance(label, bytes) else label for label in result.as_numpy("label")]
    assert labels == ["great", "other"]
    np.testing.assert_allclose(result.as_numpy("probabilities").sum(axis=1), 1.0, rtol=1e-5)
    assert client.get_model_metadata(MODEL)["platform"] == "onnxruntime_onnx"


@pytest.mark.parametrize("binary", [False, True])
def test_grpc(server, binary):
    from kserve import InferenceGRPCClient, InferInput, InferRequest

    async def call():
        client = InferenceGRPCClient(server.grpc_url, timeout=60)
        try:
            tensor = InferInput("text", [2], "BYTES")
            tensor.set_data_from_numpy(np.array([b"Lovely tea, fragrant and smooth.", b"Stale and tasteless."],
                                                dtype=object), binary_data=binary)
            return await client.infer(InferRequest(MODEL, [tensor], request_id="tfidf-grpc"))
        finally:
            await client.close()

    response = asyncio.run(call())
    outputs = {o.name: o.as_numpy() for o in response.outputs}
    assert [v.decode() if isinstance(v, bytes) else v for v in outputs["label"]] == ["great", "other"]
    assert outputs["probabilities"].shape == (2, 2) and response.id == "tfidf-grpc"


def test_v1(server, tfidf):
    config, pipeline = tfidf
    text = "Tasty and fresh, my kids love these."
    status, body = post(f"{server.url}/v1/models/{MODEL}:predict", {"instances": [text]})
    assert status == 200, body
    prediction = body["predictions"][0]
    assert prediction["label"] == "great"
    np.testing.assert_allclose(prediction["probabilities"], pipeline.predict_proba([config.cleaner(text)])[0], atol=1e-5)


def test_config_and_list_report_training_and_features(server, demo_models):
    config = get(f"{server.url}/v2/models/{MODEL}/config")
    assert (config["backend"], config["weights"], config["inputs_taken"]) == ("onnx", "model.onnx", "texts")
    assert "passed the converted accuracy gate" in config["backend_reason"]
    assert config["training"]["train_size"] == 4000 and config["training"]["heldout_size"] == 1000
    assert "Amazon fine-food reviews" in config["training"]["data"] and len(config["training"]["date"]) == 10
    assert config["training"]["heldout_accuracy"] >= 0.78
    assert config["features"]["vectorizer"] == "TfidfVectorizer" and config["features"]["ngram_range"] == [1, 2]
    assert config["features"]["vocabulary_size"] > 10000 and "lowercase" in config["preprocess"]
    transformer = get(f"{server.url}/v2/models/review-sentiment/config")
    assert transformer["features"] == {"tokenizer": "BertTokenizer", "subwords": "WordPiece",
                                       "vocabulary_size": 30522, "max_length": 128}
    # The fine-tune uses only part of the same 4000 texts (its train_limit), and says so.
    assert transformer["training"]["train_size"] == REVIEW_TRAIN.examples(4000) < 4000
    assert transformer["inputs_taken"] == "token ids"
    listed = subprocess.run([sys.executable, "-m", "predictors", "list", "--models-dir", str(demo_models)],
                            cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert listed.returncode == 0, listed.stderr
    block = listed.stdout.split(f"\n{MODEL}: ", 1)[1]
    assert "  features: TfidfVectorizer, vocabulary " in block and "n-grams 1-2, then LogisticRegression" in block
    assert "  training: trained 20" in block and "(4000 train / 1000 held out), held-out accuracy 0.8" in block


def test_the_converted_gate_passes_and_fails_on_an_altered_file(demo_models, tmp_path):
    folder = demo_models / MODEL
    result = check_file(folder, "model.onnx", workers=1, log=lambda _: None)
    assert result.passed and result.precision == "converted" and result.figures["top1_agreement"] == 1.0
    model = onnx.load(str(folder / "model.onnx"))
    classifier = next(node for node in model.graph.node if node.op_type == "LinearClassifier")
    intercepts = next(a for a in classifier.attribute if a.name == "intercepts")
    intercepts.floats[:] = [value + 1.0 if i == 0 else value for i, value in enumerate(intercepts.floats)]  # towards "great"
    onnx.save(model, str(tmp_path / "altered.onnx"))
    with pytest.raises(GateFailed) as failure:
        check_file(folder, tmp_path / "altered.onnx", workers=1, log=lambda _: None)
    message = str(failure.value)
    assert "altered.onnx failed the converted accuracy gate" in message
    assert "converted top-1 agreement gate:" in message and "is below the limit 99.50%" in message
    assert "converted probability difference (99.5th percentile of texts) gate:" in message


# ---- users' own folders on a server of their own ----------------------------------------------------
class Tripwire:
    def __init__(self, path: Path) -> None:
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


@pytest.fixture(scope="module")
def own_models(tmp_path_factory: pytest.TempPathFactory) -> tuple[RunningServer, Path]:
    """A models folder as users fill it: their own skops pipeline, one skl2onnx cannot convert, a
    pickle that would leave a file behind if it were ever loaded, a skops file naming os.system,
    and a trusted joblib file waiting to be converted."""
    from sklearn.feature_extraction.text import HashingVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import FunctionTransformer
    import skops.io

    root = tmp_path_factory.mktemp("own")
    models = root / "models"
    write_pipeline_folder(models / "own-pipeline")
    hashed, _ = write_pipeline_folder(models / "hashed", vectorizer=HashingVectorizer(n_features=2**12))
    with pytest.raises(ExportError):
        export_model(hashed, workers=1, benchmark=False, log=lambda _: None)
    (models / "legacy").mkdir()
    (models / "legacy" / "model.pkl").write_bytes(pickle.dumps(Tripwire(root / "tripped")))
    (models / "tampered").mkdir()
    skops.io.dump(Pipeline([("run", FunctionTransformer(os.system)), ("classifier", LogisticRegression())]),
                  models / "tampered" / "model.skops")
    _, trusted = write_pipeline_folder(root / "fitted")
    (models / "converted").mkdir()
    joblib.dump(trusted, models / "converted" / "model.joblib", compress=3)
    running = start_server(["--models-dir", str(models), "--watch", "0.5"], root / "server.log")
    try:
        running.wait_ready()
        yield running, root
    finally:
        running.stop()


def index(server: RunningServer) -> dict[str, dict]:
    return {row["name"]: row for row in post(f"{server.url}/v2/repository/index")[1]}


def wait_for(condition, timeout: float = 120.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(what)
        time.sleep(0.2)


def test_a_users_skops_pipeline_serves_by_being_dropped_in(own_models):
    server, _ = own_models
    status, response = post(f"{server.url}/v2/models/own-pipeline/infer", v2_body(["great coffee rich and smooth"]))
    assert status == 200 and v2_outputs(response)["label"] == ["great"]
    config = get(f"{server.url}/v2/models/own-pipeline/config")
    assert (config["backend"], config["platform"], config["labels"]) == ("sklearn", "sklearn_skops", ["great", "other"])


def test_a_pipeline_skl2onnx_cannot_convert_serves_from_skops_with_the_reason(own_models):
    server, _ = own_models
    config = get(f"{server.url}/v2/models/hashed/config")
    assert config["backend"] == "sklearn"
    assert "no ONNX export: skl2onnx" in config["backend_reason"] and "HashingVectorizer" in config["backend_reason"]
    assert post(f"{server.url}/v2/models/hashed/infer", v2_body(["stale chips"]))[0] == 200


def test_a_pickle_is_never_loaded_and_the_model_says_how_to_convert_it(own_models):
    server, root = own_models
    row = index(server)["legacy"]
    assert row["state"] == "UNAVAILABLE"
    assert "model.pkl is a pickle, and this server never loads pickles" in row["reason"]
    assert "python -m predictors convert-pickle " in row["reason"] and "legacy/model.pkl" in row["reason"]
    status, body = post(f"{server.url}/v2/models/legacy/infer", v2_body(["hello"]))
    assert status == 503 and "never loads pickles" in body["error"]
    assert not (root / "tripped").exists()


def test_a_skops_file_naming_an_untrusted_type_is_refused_by_name(own_models):
    server, _ = own_models
    row = index(server)["tampered"]
    assert row["state"] == "UNAVAILABLE"
    assert "names type(s) outside the trusted list, so it is not loaded: posix.system" in row["reason"]


def test_a_converted_pickle_serves_without_a_restart(own_models):
    server, root = own_models
    folder = root / "models" / "converted"
    assert index(server)["converted"]["state"] == "UNAVAILABLE"
    result = subprocess.run([sys.executable, "-m", "predictors", "convert-pickle", str(folder / "model.joblib"), "--yes"],
                            cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    wait_for(lambda: index(server)["converted"]["state"] == "READY", what=json.dumps(index(server)["converted"]))
    fitted = joblib.load(folder / "model.joblib")  # the file this test wrote: trusted
    status, response = post(f"{server.url}/v2/models/converted/infer", v2_body(list(PIPELINE_TEXTS)))
    assert status == 200
    np.testing.assert_allclose(v2_outputs(response)["probabilities"], fitted.predict_proba(list(PIPELINE_TEXTS)), atol=1e-6)


def test_serving_from_skops_does_not_import_torch(own_models):
    """skops.io lists every scikit-learn estimator when imported, and that walk would import torch
    through scikit-learn's array-API shim (skops_files.import_skops_io keeps it out)."""
    server, _ = own_models
    assert get(f"{server.url}/v2/models/own-pipeline/config")["backend"] == "sklearn"
    assert "libtorch" not in Path(f"/proc/{server.process.pid}/maps").read_text()


def test_a_transformer_cleans_its_texts_when_its_predictor_yaml_says_so(demo_models, tmp_path):
    """Off by default for transformers; set, the tokenizer sees the cleaned text (and the cache
    keys on it)."""
    from predictors.serving.predictor import TextPredictor
    from tests.helpers import linked_model_folder

    plain = TextPredictor(load_model_config(demo_models / "review-sentiment"))
    cleaning = TextPredictor(load_model_config(linked_model_folder(
        demo_models / "review-sentiment", tmp_path / "review-sentiment",
        "preprocess: {replace_urls: _url_, remove_punctuation: true, collapse_whitespace: true}\n")))
    for predictor in (plain, cleaning):
        predictor.load()
    try:
        assert plain.cleaner.steps() == [] and cleaning.describe()["preprocess"][0] == "replace_urls=_url_"
        raw = "Great coffee!!!   Rich... and smooth :) see https://shop.example/coffee?id=1"
        cleaned = "Great coffee Rich and smooth see _url_"
        np.testing.assert_allclose(cleaning.run_texts([raw]).outputs["probabilities"],
                                   plain.run_texts([cleaned]).outputs["probabilities"], atol=1e-6)
        assert cleaning._cache_key(raw) == cleaned
    finally:
        for predictor in (plain, cleaning):
            predictor.stop()
