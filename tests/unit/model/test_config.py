from __future__ import annotations

import pytest

from predictors.model import ModelConfigError, remote_models
from predictors.backends import discover_models, load_model_config
from predictors.tasks import infer_task
from tests.helpers import write_folder


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
