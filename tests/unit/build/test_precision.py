"""The training precision comes from the hardware: bf16 autocast only where the CPU runs bf16
natively. The capability is faked here (a stand-in for torch's CPU report), named as such."""

from __future__ import annotations

import pytest

from tools.build import recipes, train
from tools.build.recipes import model_specs, recipe_key


@pytest.fixture
def fake_cpu(monkeypatch):
    """A stand-in for torch's CPU capability report; the cached choice is cleared around each use."""

    def install(native: bool, what: str) -> None:
        monkeypatch.setattr(train, "cpu_runs_bf16", lambda: (native, what))
        train.training_precision.cache_clear()

    yield install
    train.training_precision.cache_clear()


def classifiers() -> dict[str, recipes.ModelSpec]:
    return {s.name: s for s in model_specs() if s.fine_tuned}


def test_bf16_only_where_the_cpu_runs_it_natively(fake_cpu):
    fake_cpu(True, "the CPU has AVX512-BF16 (stand-in)")
    assert train.training_precision().name == "bf16"
    assert {s.train.precision for s in classifiers().values()} == {"bf16"}

    fake_cpu(False, "the CPU has neither AVX512-BF16 nor AMX (stand-in)")
    choice = train.training_precision()
    assert choice.name == "fp32" and "neither AVX512-BF16 nor AMX" in choice.reason
    assert {s.train.precision for s in classifiers().values()} == {"fp32"}


def test_the_precision_is_part_of_the_training_key(fake_cpu):
    fake_cpu(True, "stand-in with bf16")
    bf16_keys = {name: recipe_key(s.train_recipe()) for name, s in classifiers().items()}
    fake_cpu(False, "stand-in without bf16")
    fp32_keys = {name: recipe_key(s.train_recipe()) for name, s in classifiers().items()}
    assert all(bf16_keys[name] != fp32_keys[name] for name in bf16_keys)


def test_an_unknown_precision_is_refused():
    with pytest.raises(ValueError, match="precision 'fp16' is not one of bf16, fp32"):
        train.TrainSettings(precision="fp16")


def test_this_machine_reports_its_capability():
    """The real torch report (no stand-in): a bool and a sentence naming what the CPU has."""
    native, what = train.cpu_runs_bf16()
    assert isinstance(native, bool) and what.startswith("the CPU has")
