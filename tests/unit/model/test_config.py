from __future__ import annotations

import json

import pytest

from predictors.model import ModelConfigError, remote_models
from predictors.backends import discover_models, load_model_config
from predictors.tasks import infer_task
from tests.helpers import write_folder, write_pipeline_folder


@pytest.mark.parametrize(
    "architecture, task",
    [
        ("BertForSequenceClassification", "classification"),
        ("DistilBertForTokenClassification", "token_classification"),
        ("BertModel", "embedding"),
        ("BertForMaskedLM", None),
    ],
)
def test_task_is_inferred_from_architecture(architecture, task):
    assert infer_task(architecture) == task


def test_plain_hf_folder_gets_defaults(tmp_path):
    config = load_model_config(write_folder(tmp_path / "sentiment"))
    assert (config.name, config.task, config.backend) == ("sentiment", "classification", "auto")
    assert (config.batch_size, config.max_batch, config.max_length) == (8, 1024, 512)
    assert config.labels == ("neg", "pos")


def test_predictor_yaml_overrides(tmp_path):
    folder = write_folder(tmp_path / "m", predictor_yaml="batch_size: 4\nmax_batch: 16\nversion: 3\nbackend: hf\n")
    config = load_model_config(folder)
    assert (config.batch_size, config.max_batch, config.version, config.backend) == (4, 16, "3", "hf")


def test_embedding_reads_sentence_transformers_pooling(tmp_path):
    folder = write_folder(tmp_path / "emb", architecture="BertModel", labels=())
    (folder / "1_Pooling").mkdir()
    (folder / "1_Pooling" / "config.json").write_text('{"pooling_mode_cls_token": true}')
    (folder / "sentence_bert_config.json").write_text('{"max_seq_length": 256}')
    config = load_model_config(folder)
    assert (config.task, config.pooling, config.max_length, config.labels) == ("embedding", "cls", 256, ())


@pytest.mark.parametrize(
    "yaml_text, message",
    [
        ("batchsize: 4\n", "unknown key(s) ['batchsize']"),
        ("batch_size: 0\n", "batch_size must be a positive integer"),
        ("batch_size: '8'\n", "batch_size must be a positive integer"),
        ("task: translation\n", "unknown task 'translation'"),
        ("backend: tensorrt\n", "backend 'tensorrt' in"),
        ("- a list\n", "must be a mapping"),
        ("onnx_file: missing.onnx\n", "missing.onnx does not exist"),
    ],
)
def test_bad_predictor_yaml_names_model_and_problem(tmp_path, yaml_text, message):
    folder = write_folder(tmp_path / "broken", predictor_yaml=yaml_text)
    with pytest.raises(ModelConfigError) as error:
        load_model_config(folder)
    assert "model 'broken'" in str(error.value) and message in str(error.value)


def test_missing_config_json_is_named(tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "predictor.yaml").write_text("task: classification\n")
    with pytest.raises(ModelConfigError, match=r"config.json is missing"):
        load_model_config(tmp_path / "empty")


def test_unknown_architecture_asks_for_a_task(tmp_path):
    with pytest.raises(ModelConfigError, match="cannot infer the task"):
        load_model_config(write_folder(tmp_path / "lm", architecture="GPT2LMHeadModel", labels=()))


def test_discover_keeps_good_models_and_reports_broken_ones(tmp_path):
    write_folder(tmp_path / "good")
    write_folder(tmp_path / "bad", predictor_yaml="batch_size: -1\n")
    (tmp_path / "not-a-model").mkdir()
    configs, errors = discover_models(tmp_path)
    assert [c.name for c in configs] == ["good"]
    assert list(errors) == ["bad"] and "batch_size" in errors["bad"]


def test_discover_missing_folder(tmp_path):
    with pytest.raises(FileNotFoundError):
        discover_models(tmp_path / "nope")


@pytest.mark.parametrize("yaml_text, message", [
    ("loading: sometimes\n", "loading must be startup, lazy or on_demand"),
    ("loading: lazy\nidle_unload_seconds: 30\n", "idle_unload_seconds frees an on_demand model"),
    ("storage_uri: ftp://host/x\n", "storage_uri: 'ftp://host/x': scheme 'ftp' is not supported"),
    ("storage_uri: s3://b/x\n", "bucket name"),
])
def test_loading_and_storage_settings_are_checked(tmp_path, yaml_text, message):
    write_folder(tmp_path / "m", predictor_yaml=yaml_text)
    with pytest.raises(ModelConfigError, match=message):
        load_model_config(tmp_path / "m")


def test_a_folder_holding_only_a_storage_uri_is_listed_as_remote_not_broken(tmp_path):
    write_folder(tmp_path / "local")
    remote = tmp_path / "remote"
    remote.mkdir()
    (remote / "predictor.yaml").write_text("storage_uri: s3://models/team/ner/\nloading: lazy\n")
    configs, errors = discover_models(tmp_path)
    assert [c.name for c in configs] == ["local"] and errors == {}
    assert remote_models(tmp_path) == {"remote": "s3://models/team/ner"}


def test_overrides_win_over_the_fetched_folders_settings(tmp_path):
    write_folder(tmp_path / "copy", predictor_yaml="batch_size: 4\ndescription: from the bucket\n")
    (tmp_path / "local.yaml").write_text("storage_uri: s3://models/m\nbatch_size: 16\n")
    config = load_model_config(tmp_path / "copy", "m", overrides=tmp_path / "local.yaml")
    assert (config.batch_size, config.description) == (16, "from the bucket")
# ---- scikit-learn pipeline folders (a .skops file, no config.json) --------------------------------
def test_a_skops_folder_is_a_classification_model_with_the_pipelines_classes(tmp_path):
    folder, pipeline = write_pipeline_folder(tmp_path / "reviews")
    config = load_model_config(folder)
    assert (config.task, config.text_pipeline, config.labels) == ("classification", True, ("great", "other"))
    assert config.architecture == "Pipeline(tfidf=TfidfVectorizer, classifier=LogisticRegression)"
    assert config.features["vocabulary_size"] == len(pipeline.named_steps["tfidf"].vocabulary_)
    assert config.features["ngram_range"] == [1, 2] and config.features["classifier"] == "LogisticRegression"
    configs, errors = discover_models(tmp_path)
    assert [c.name for c in configs] == ["reviews"] and not errors


def test_predictor_yaml_labels_rename_the_classes_in_their_order(tmp_path):
    folder, _ = write_pipeline_folder(tmp_path / "m", labels=(0, 1), predictor_yaml="labels: [negative, positive]\n")
    assert load_model_config(folder).labels == ("negative", "positive")


def test_labels_that_do_not_match_the_classes_are_refused(tmp_path):
    folder, _ = write_pipeline_folder(tmp_path / "m", predictor_yaml="labels: [a, b, c]\n")
    with pytest.raises(ModelConfigError, match=r"labels in .*predictor.yaml name 3 classes, but the pipeline in "
                                               r"model.skops has 2 \(\['great', 'other'\]\)"):
        load_model_config(folder)


def test_a_pipeline_cannot_be_served_as_another_task(tmp_path):
    folder, _ = write_pipeline_folder(tmp_path / "m", predictor_yaml="task: embedding\n")
    with pytest.raises(ModelConfigError, match=r"scikit-learn pipeline .* one of \['classification'\]; "
                                               r"task 'embedding' in .*predictor.yaml is not one of them"):
        load_model_config(folder)


def test_a_folder_with_only_a_pickle_is_refused_with_the_conversion_command(tmp_path):
    folder = tmp_path / "legacy"
    folder.mkdir()
    (folder / "model.joblib").write_bytes(b"never read")
    configs, errors = discover_models(tmp_path)
    assert not configs
    assert "model.joblib is a pickle, and this server never loads pickles" in errors["legacy"]
    assert f"python -m predictors convert-pickle {folder.resolve() / 'model.joblib'}" in errors["legacy"]


def test_hf_labels_can_be_renamed_but_not_recounted(tmp_path):
    folder = write_folder(tmp_path / "m", predictor_yaml="labels: [negative, positive]\n")
    assert load_model_config(folder).labels == ("negative", "positive")
    (folder / "predictor.yaml").write_text("labels: [a, b, c]\n")
    with pytest.raises(ModelConfigError, match="name 3 classes, but .*config.json has 2"):
        load_model_config(folder)


def test_training_metadata_from_predictor_yaml_then_the_build_record(tmp_path):
    folder = write_folder(tmp_path / "m", predictor_yaml=(
        "training: {date: 2026-01-02, data: support tickets, train_size: 900}\nmetrics: {heldout_accuracy: 0.9}\n"))
    assert load_model_config(folder).training_metadata() == {
        "date": "2026-01-02", "data": "support tickets", "train_size": 900, "heldout_accuracy": 0.9}
    (folder / "build_info.json").write_text(json.dumps({
        "training": {"date": "2026-03-04", "heldout_size": 100}, "metrics": {"heldout_accuracy": 0.95}}))
    assert load_model_config(folder).training_metadata() == {
        "date": "2026-03-04", "data": "support tickets", "train_size": 900, "heldout_size": 100, "heldout_accuracy": 0.95}


def test_a_transformer_folder_reports_its_tokenizer_as_features(tmp_path):
    folder = write_folder(tmp_path / "m", predictor_yaml="max_length: 128\n")
    (folder / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "BertTokenizer"}))
    (folder / "tokenizer.json").write_text(json.dumps({"model": {"type": "WordPiece", "vocab": {"a": 0, "b": 1}}}))
    assert load_model_config(folder).features == {
        "tokenizer": "BertTokenizer", "subwords": "WordPiece", "vocabulary_size": 2, "max_length": 128}
