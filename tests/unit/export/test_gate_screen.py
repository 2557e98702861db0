"""An int8 gate screens the texts whose labels most likely change first and stops when they already
fail it: the order, the reassembly of a screened run, and how such a verdict reads (no models)."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np

from predictors.export.gate import check_gate
from predictors.export.pipeline import merge_runs, subset_size, subset_run
from predictors.export.runner import Run
from predictors.tasks import TASKS
from tests.unit.tasks.test_gate_figures import classification_run


def test_classification_screens_the_least_certain_texts_first():
    reference = classification_run(
        ["pos", "neg", "pos", "neg"], [[0.1, 0.9], [0.52, 0.48], [0.3, 0.7], [0.6, 0.4]])
    assert TASKS["classification"].gate_screen_order(reference).tolist() == [1, 3, 2, 0]


def test_heads_without_an_order_run_every_text():
    assert TASKS["embedding"].gate_screen_order(classification_run(["a"], [[0.4, 0.6]])) is None


def test_a_screened_run_and_the_rest_reassemble_in_sample_order():
    n = 7
    full = Run([np.full(2, i, dtype=np.float32) for i in range(n)],
               {"label": np.array([f"l{i}" for i in range(n)], dtype=object),
                "probabilities": np.arange(2 * n, dtype=np.float32).reshape(n, 2),
                "spans": [[i] for i in range(n)]}, 1.0)
    order = np.array([5, 2, 6, 0, 1, 3, 4])
    first, rest = order[:3], order[3:]
    merged = merge_runs(n, [(first, subset_run(full, first)), (rest, subset_run(full, rest))])
    assert [float(r[0]) for r in merged.raw] == list(range(n))
    assert merged.outputs["label"].tolist() == full.outputs["label"].tolist()
    assert np.array_equal(merged.outputs["probabilities"], full.outputs["probabilities"])
    assert merged.outputs["spans"] == full.outputs["spans"]
    assert merged.seconds == 2.0


def test_a_screened_failure_says_what_was_run():
    figures = {"texts": 1000, "changed": 11, "top1_agreement": 0.989, "screened": 200, "max_abs_diff": 0.3,
               "max_probability_diff": 0.4, "probability_diff_p995": 0.3}
    result = check_gate("model.int8.onnx", "int8", "classification", figures)
    assert not result.passed
    assert result.failures() == [
        "int8 top-1 agreement gate: 98.90% is below the limit 99.00% (off by 0.10%) (11 of 1000 texts changed "
        "label among the 200 texts torch was least sure of; the rest were not run)"]
    assert result.summary().startswith("top-1 agreement at most 98.90% (11 of 1000 changed among the 200 least certain)")


def test_the_subset_is_a_fifth_of_the_sample_and_never_tiny():
    assert subset_size(1000) == 200
    assert subset_size(100) == 50


def test_the_fp32_gate_spreads_its_texts_over_the_whole_range_of_lengths():
    from predictors.export.pipeline import spread_by_length

    texts = ["x" * length for length in (5, 1, 9, 3, 7, 2, 8, 4, 6, 10)]
    chosen = spread_by_length(texts, 4)
    assert chosen == sorted(chosen) and len(chosen) == 4
    lengths = sorted(len(texts[i]) for i in chosen)
    assert lengths[0] == 1 and lengths[-1] == 10  # the shortest and the longest are always in
    assert spread_by_length(texts, 20) == list(range(10))


def test_a_spread_gate_says_how_many_texts_it_ran():
    figures = {"texts": 200, "sample": 1000, "changed": 0, "top1_agreement": 1.0, "max_abs_diff": 2e-6,
               "max_probability_diff": 1e-7, "probability_diff_p995": 1e-7}
    result = check_gate("model.onnx", "fp32", "classification", figures)
    assert result.passed
    assert "on 200 of the 1000 sample texts, spread by length" in result.summary()


class StandInRunner:
    """A stand-in for a loaded ONNX runner: answers each text from a table, and records what it ran."""

    def __init__(self, answers: dict[str, tuple[str, list[float]]]) -> None:
        self.answers, self.ran = answers, []

    def run(self, texts, workers=1, progress=None):
        self.ran.append(list(texts))
        return Run([np.log(np.asarray(self.answers[t][1], dtype=np.float32)) for t in texts],
                   {"label": np.array([self.answers[t][0] for t in texts], dtype=object),
                    "probabilities": np.array([self.answers[t][1] for t in texts], dtype=np.float32)}, 0.1)


def _job(tmp_path, n: int, changed: list[int]):
    """An export job on n texts whose torch reference is certain about text i in proportion to i,
    and a stand-in int8 runner that flips the labels of the texts `changed`."""
    from predictors.export.pipeline import _Export
    from predictors.export.sample import Sample
    from predictors.export.gate import Thresholds
    from predictors.tasks import load_model_config
    from tests.helpers import write_folder

    config = load_model_config(write_folder(tmp_path / "m", files=()))
    texts = [f"text {i}" for i in range(n)]
    reference_probabilities = [[0.5 - 0.4 * i / n, 0.5 + 0.4 * i / n] for i in range(n)]  # text 0 least certain
    job = _Export(config, Sample(texts, [None] * n, "test"), 1, Thresholds())
    labels = config.labels
    job.reference = Run([np.log(np.asarray(p)) for p in reference_probabilities],
                        {"label": np.array([labels[1]] * n, dtype=object),
                         "probabilities": np.asarray(reference_probabilities, dtype=np.float32)}, 1.0)
    answers = {t: ((labels[0], [0.6, 0.4]) if i in changed else (labels[1], reference_probabilities[i]))
               for i, t in enumerate(texts)}
    runner = StandInRunner(answers)
    job.runner = lambda backend, path=None: runner
    job.reference_runner = SimpleNamespace(choice=SimpleNamespace(name="hf"))  # the torch reference, already run
    return job, runner, texts


def test_an_int8_file_that_fails_among_the_least_certain_texts_is_refused_without_the_rest(tmp_path):
    job, runner, texts = _job(tmp_path, 1000, changed=list(range(11)))  # 11 > the 10 that 99 % allows
    result, _, _ = job.gate("int8", tmp_path / "model.int8.onnx", "model.int8.onnx")
    assert not result.passed
    assert len(runner.ran) == 1 and sorted(runner.ran[0]) == sorted(texts[:200])  # the screen only
    assert result.figures["screened"] == 200 and result.figures["changed"] == 11


def test_an_int8_file_that_passes_the_screen_runs_every_text_and_reports_them_in_sample_order(tmp_path):
    job, runner, texts = _job(tmp_path, 1000, changed=[3, 500, 999])
    seen = []
    job.on_gate_run = lambda name, gate_texts, outputs: seen.append((list(gate_texts), outputs))
    result, _, run = job.gate("int8", tmp_path / "model.int8.onnx", "model.int8.onnx")
    assert result.passed and result.figures["changed"] == 3 and "screened" not in result.figures
    assert len(runner.ran) == 2 and sorted(runner.ran[0] + runner.ran[1]) == sorted(texts)
    labels = job.config.labels
    assert [i for i, label in enumerate(run.outputs["label"]) if label == labels[0]] == [3, 500, 999]
    assert seen[0][0] == texts


def test_a_file_that_fails_only_beyond_the_screen_still_fails(tmp_path):
    job, runner, _ = _job(tmp_path, 1000, changed=[5, *range(900, 915)])
    result, _, _ = job.gate("int8", tmp_path / "model.int8.onnx", "model.int8.onnx")
    assert not result.passed and result.figures["changed"] == 16 and "screened" not in result.figures


def test_the_reports_reference_accuracy_covers_every_sample_text_when_the_fp32_gate_ran_a_spread(tmp_path):
    from predictors.export.pipeline import Candidate

    job, runner, texts = _job(tmp_path, 1000, changed=[])
    labels = job.config.labels
    from predictors.export.pipeline import spread_by_length

    # torch says labels[1] for every text; the gold label differs on exactly the texts the fp32 gate runs
    spread = set(spread_by_length(texts, 200))
    job.sample.labels[:] = [labels[0] if i in spread else labels[1] for i in range(1000)]
    result, _, _ = job.gate("fp32", tmp_path / "model.onnx", "model.onnx")
    assert result.figures["texts"] == 200 and result.figures["sample"] == 1000
    assert result.figures["reference_accuracy"] == 0.0  # on the spread alone
    weights = tmp_path / "model.safetensors"
    weights.write_bytes(b"w")
    job.reference_runner = SimpleNamespace(choice=SimpleNamespace(name="hf", weights=weights))
    report = job.build_report({}, Candidate("fp32", tmp_path / "model.onnx", result, {}), None, {}, 1.0)
    assert report["reference"]["accuracy"] == 0.8
