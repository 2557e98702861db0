"""The texts the export gate runs and the throughput subset (config-only folders, no models)."""

from __future__ import annotations

import json

from predictors.export.sample import BUILTIN_TEXTS, bench_texts, gate_sample, spread
from predictors.serving.scheduling.chunking import chunk_plan
from predictors.tasks import load_model_config
from tests.helpers import write_folder


def test_gate_sample_sources(tmp_path):
    folder = write_folder(tmp_path / "m", labels=("neg", "pos"))
    builtin = gate_sample(load_model_config(folder))
    assert builtin.source.endswith("built-in sentences") and builtin.labelled == 0
    assert builtin.texts == list(BUILTIN_TEXTS)
    (folder / "heldout.jsonl").write_text("".join(
        json.dumps({"text": f"text {i}", "label": ("neg", "pos", "???")[i % 3]}) + "\n" for i in range(30)))
    extra = tmp_path / "extra.txt"
    extra.write_text("one\n\ntwo\nthree\n")
    sample = gate_sample(load_model_config(folder), extra, max_texts=10)
    assert len(sample.texts) == 13 and sample.texts[-3:] == ["one", "two", "three"]
    assert sample.texts[:3] == ["text 0", "text 3", "text 6"]  # evenly spread subset
    assert sample.labels[:2] == ["neg", "neg"] and sample.labels[-1] is None
    assert sample.labelled == 10
    everything = gate_sample(load_model_config(folder), max_texts=30)
    assert everything.labelled == 20 and everything.labels[2] is None  # "???" is not one of the model's labels
    assert "held-out" in sample.source and "extra.txt" in sample.source


def test_an_empty_texts_file_is_an_error_naming_it(tmp_path):
    folder = write_folder(tmp_path / "m")
    empty = tmp_path / "empty.txt"
    empty.write_text("\n  \n")
    try:
        gate_sample(load_model_config(folder), empty)
    except ValueError as exc:
        assert "empty.txt: no texts" in str(exc)
    else:
        raise AssertionError("an empty --texts file was accepted")


def test_spread_keeps_the_ends_of_a_sorted_list_in_proportion():
    assert spread(list(range(10)), 20) == list(range(10))
    assert spread(list(range(100)), 4) == [0, 25, 50, 75]


def test_bench_texts_are_whole_served_chunks_spread_over_the_lengths():
    texts = ["x" * n for n in range(1, 81)]  # 80 texts of distinct lengths -> 10 chunks of 8
    subset = bench_texts(texts, count=24, batch_size=8)
    assert len(subset) == 24
    chunks = [[texts[i] for i in chunk] for chunk in chunk_plan(texts, 8)]
    picked = [subset[i : i + 8] for i in range(0, 24, 8)]
    assert all(chunk in chunks for chunk in picked)  # whole chunks, as a sorted request pads them
    assert picked[0] == chunks[0] and picked[-1] != chunks[-1]  # spread from the shortest on
