"""The memory budget's rules (predictors/serving/budget.py): where the budget comes from, what a
model is counted at, and which models are evicted for a load."""

from __future__ import annotations

from predictors.serving.budget import (
    MARGIN_MIN_BYTES, MiB, ModelSize, Resident, guess_size, measured_size, plan_evictions, resolve_budget,
)

GiB = 1 << 30


def test_the_default_budget_is_the_container_limit_less_the_server_and_a_margin():
    budget = resolve_budget(None, limit=4 * GiB, overhead=300 * MiB)
    assert budget.budget == 4 * GiB - 300 * MiB - int(0.1 * 4 * GiB)
    assert "container's memory limit" in budget.source and "300 MiB" in budget.source


def test_a_small_limit_keeps_the_minimum_margin():
    budget = resolve_budget(None, limit=1 * GiB, overhead=200 * MiB)
    assert budget.margin == MARGIN_MIN_BYTES and budget.budget == GiB - 200 * MiB - MARGIN_MIN_BYTES


def test_a_setting_within_the_room_is_taken_as_is():
    budget = resolve_budget(1 * GiB, limit=4 * GiB, overhead=300 * MiB)
    assert budget.budget == GiB and budget.source == "PREDICTORS_MODEL_MEMORY=1.00 GiB"


def test_the_whole_limit_from_the_downward_api_is_lowered_so_the_server_keeps_room():
    budget = resolve_budget(2 * GiB, limit=2 * GiB, overhead=300 * MiB)
    assert budget.budget == 2 * GiB - 300 * MiB - int(0.1 * 2 * GiB)
    assert "lowered to" in budget.source


def test_no_setting_and_no_limit_is_no_budget():
    budget = resolve_budget(None, limit=None, overhead=300 * MiB)
    assert budget.budget is None and "no budget" in budget.source


def test_a_model_never_loaded_is_counted_from_its_weights_file():
    guess = guess_size(74 * MiB)
    assert not guess.measured
    assert guess.resident > 74 * MiB and guess.load_peak >= 2 * 74 * MiB and guess.needed == guess.load_peak


def test_a_measurement_is_floored_at_the_weights_and_the_peak_at_the_resident_size():
    assert measured_size(before=500 * MiB, after=490 * MiB, peak=None, weights_bytes=60 * MiB) == ModelSize(
        60 * MiB, 60 * MiB, True)
    size = measured_size(before=500 * MiB, after=613 * MiB, peak=726 * MiB, weights_bytes=74 * MiB)
    assert (size.resident, size.load_peak) == (113 * MiB, 226 * MiB)


def resident(name, size_mib, last_used, evictable=True, why=""):
    return Resident(name, size_mib * MiB, last_used, evictable, why)


def test_nothing_is_evicted_when_the_load_fits():
    assert plan_evictions(100 * MiB, 150 * MiB, [resident("a", 100, 1.0)]) == []


def test_the_least_recently_used_go_first_and_only_as_many_as_needed():
    residents = [resident("hot", 100, 50.0), resident("cold", 100, 10.0), resident("warm", 100, 30.0)]
    assert [r.name for r in plan_evictions(150 * MiB, 0, residents)] == ["cold", "warm"]
    assert [r.name for r in plan_evictions(90 * MiB, 0, residents)] == ["cold"]


def test_a_busy_or_startup_model_is_never_chosen():
    residents = [resident("busy", 200, 1.0, False, "2 request(s) in flight"), resident("pinned", 200, 2.0, False, "a startup model"),
                 resident("idle", 100, 99.0)]
    assert [r.name for r in plan_evictions(100 * MiB, 0, residents)] == ["idle"]


def test_when_even_every_idle_model_is_not_enough_nothing_is_evicted():
    residents = [resident("busy", 300, 1.0, False, "1 request(s) in flight"), resident("idle", 100, 2.0)]
    assert plan_evictions(250 * MiB, 50 * MiB, residents) is None
