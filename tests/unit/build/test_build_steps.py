"""The demo-model build's pure parts: cache keys, build status, summary table, install, batching.
No downloads, no training."""

from __future__ import annotations

import dataclasses
import json

import pytest

from predictors.model.build_status import read_build_status
from tools.build import builders, cache, progress, recipes
from tools.build.progress import ModelProgress, StepTime, status_message, summary_table
from tools.build.recipes import model_specs, recipe_key
from tools.build.train import TrainSettings, batches


def spec(name: str) -> recipes.ModelSpec:
    return next(s for s in model_specs() if s.name == name)


def keys(model: recipes.ModelSpec) -> tuple[str, str]:
    train_key = recipe_key(model.train_recipe())
    return train_key, recipe_key(model.folder_recipe(train_key))


def test_export_only_change_keeps_the_training_key(monkeypatch):
    model = spec("review-sentiment")
    train_key, folder_key = keys(model)
    monkeypatch.setattr(recipes, "RECIPE_VERSION", recipes.RECIPE_VERSION + 1)
    bumped = keys(model)
    assert bumped[0] == train_key and bumped[1] != folder_key
    monkeypatch.setattr(recipes, "onnx_recipe", lambda name: {"opset": 18, "served": {"name": name}})
    reexported = keys(model)
    assert reexported[0] == train_key and reexported[1] not in (folder_key, bumped[1])


def test_training_change_changes_both_keys(monkeypatch):
    model = spec("news-topic")
    train_key, folder_key = keys(model)
    retrained = dataclasses.replace(model, train=dataclasses.replace(model.train, lr=model.train.lr * 2))
    assert keys(retrained)[0] != train_key and keys(retrained)[1] != folder_key
    monkeypatch.setattr(recipes, "TRAIN_VERSION", recipes.TRAIN_VERSION + 1)
    assert keys(model)[0] != train_key


def test_the_two_classifiers_have_their_own_training_keys():
    assert keys(spec("review-sentiment"))[0] != keys(spec("news-topic"))[0]


def test_models_that_need_no_fine_tuning_come_first():
    assert [s.fine_tuned for s in model_specs()] == [False, False, False, True, True]


def test_the_tfidf_model_alone_is_planned_without_asking_torch(monkeypatch):
    import tools.build.recipes as recipes

    monkeypatch.setattr(recipes, "training_precision", lambda: pytest.fail("torch asked for a TF-IDF build"))
    assert [s.name for s in model_specs(["review-sentiment-tfidf"])] == ["review-sentiment-tfidf"]


def test_status_is_throttled_but_a_new_step_goes_out_at_once(tmp_path, monkeypatch):
    now = [100.0]
    monkeypatch.setattr(progress.time, "monotonic", lambda: now[0])
    model = ModelProgress("m", tmp_path)
    model.status("fine-tuning", "step 1/250")
    model.status("fine-tuning", "step 2/250")  # within the interval: not written
    assert read_build_status(tmp_path).message == "building: fine-tuning step 1/250"
    now[0] += progress.STATUS_INTERVAL
    model.status("fine-tuning", "step 3/250")
    assert read_build_status(tmp_path).message == "building: fine-tuning step 3/250"
    model.status("exporting ONNX")
    assert read_build_status(tmp_path).message == "building: exporting ONNX"
    model.failed("build failed: held-out accuracy 0.7 is below the bar 0.82")
    assert read_build_status(tmp_path).state == "failed"
    model.done()
    assert read_build_status(tmp_path) is None


def test_steps_are_timed_and_status_messages_name_them(tmp_path):
    model = ModelProgress("m", tmp_path)
    with model.step("int8 gate") as record:
        assert read_build_status(tmp_path).message == status_message("int8 gate") == "building: int8 gate"
        record.note = "passed"
    assert model.times[0].step == "int8 gate" and model.times[0].note == "passed" and model.times[0].seconds >= 0


def test_a_model_without_folder_writes_no_status(tmp_path):
    ModelProgress("m").status("fine-tuning")
    assert list(tmp_path.iterdir()) == []


def test_summary_table_lists_every_step_and_the_total():
    table = summary_table([StepTime("news-topic", "fine-tune", 61.25, "125 steps"),
                           StepTime("pii-ner", "check", 2.0)], 70.0)
    lines = table.splitlines()
    assert lines[0].split() == ["model", "step", "seconds", "note"]
    assert lines[2].split() == ["news-topic", "fine-tune", "61.2", "125", "steps"]
    assert lines[3].split() == ["pii-ner", "check", "2.0"]
    assert lines[-1].split() == ["total", "70.0"]


@pytest.mark.parametrize("message, current, phase", [
    ("export news-topic: heldout.jsonl; 448 labelled", "exporting ONNX", "exporting ONNX"),
    ("fp32: exported model.onnx (87 MB, opset 17)", "exporting ONNX", "fp32 gate"),
    ("fp32 gate PASSED: agreement 100%", "fp32 gate", "int8 gate"),
    ("int8 [1/3 avx512-dynamic] (23 MB) gate PASSED", "int8 gate", "int8 gate"),
    ("a message the build does not know", "fp32 gate", "fp32 gate"),
])
def test_export_messages_move_the_status_to_the_next_phase(message, current, phase):
    assert builders.export_phase(message, current) == phase


def test_install_copies_only_changed_files_and_leaves_repo_files(tmp_path):
    built, dest = tmp_path / "cache", tmp_path / "models" / "m"
    with cache.building(built) as out:
        (out / "config.json").write_text("{}")
        (out / "onnx").mkdir()
        (out / "onnx" / "model.onnx").write_bytes(b"graph")
        (out / "README.md").write_text("the build's own readme is not installed")
    dest.mkdir(parents=True)
    (dest / "README.md").write_text("repository readme")
    assert sorted(map(str, cache.stale_files(built, dest))) == ["config.json", "onnx/model.onnx"]
    assert cache.install(built, dest) == 2
    assert cache.install(built, dest) == 0 and cache.stale_files(built, dest) == []
    assert (dest / "README.md").read_text() == "repository readme"
    assert json.loads((dest / "config.json").read_text()) == {}


def test_a_failed_build_leaves_no_cache_folder(tmp_path):
    with pytest.raises(RuntimeError), cache.building(tmp_path / "m-key") as out:
        (out / "half.bin").write_bytes(b"x")
        raise RuntimeError("step failed")
    assert list(tmp_path.iterdir()) == []


def test_length_grouped_batches_cover_every_example_once_and_pad_less():
    import random

    import torch

    lengths = [random.Random(i).randint(5, 128) for i in range(1000)]
    plain = batches(lengths, TrainSettings(batch_size=16), torch.Generator().manual_seed(0))
    grouped = batches(lengths, TrainSettings(batch_size=16, length_grouped=True), torch.Generator().manual_seed(0))
    assert sorted(i for b in grouped for i in b) == list(range(1000)) == sorted(i for b in plain for i in b)

    def padded(split):
        return sum(max(lengths[i] for i in b) * len(b) for b in split)

    assert padded(grouped) < 0.7 * padded(plain)
    again = batches(lengths, TrainSettings(batch_size=16, length_grouped=True), torch.Generator().manual_seed(0))
    assert again == grouped  # deterministic for a seed


def test_a_train_limit_takes_the_same_first_examples_of_the_shuffle_and_says_how_many():
    import torch

    from tools.build.builders import sizes, training_record
    from tools.build.data import TextData

    lengths = [5 + i % 100 for i in range(1000)]
    settings = TrainSettings(batch_size=16, length_grouped=True, train_limit=800)
    limited = batches(lengths, settings, torch.Generator().manual_seed(0))
    used = sorted(i for b in limited for i in b)
    assert len(used) == len(set(used)) == settings.examples(1000) == 800
    assert used == sorted(torch.randperm(1000, generator=torch.Generator().manual_seed(0)).tolist()[:800])
    assert limited == batches(lengths, settings, torch.Generator().manual_seed(0))
    assert TrainSettings().examples(1000) == 1000 and TrainSettings(train_limit=5000).examples(1000) == 1000

    data = TextData(labels=["a"], train_texts=["t"] * 1000, train_labels=["a"] * 1000,
                    heldout_texts=["h"] * 200, heldout_labels=["a"] * 200)
    assert sizes(data, 800) == "800 of 1000 train / 200 held out" and sizes(data) == "1000 train / 200 held out"
    assert training_record(data, "d", "2026-12-07", 800)["train_size"] == 800
    assert training_record(data, "d", "2026-12-07")["train_size"] == 1000
