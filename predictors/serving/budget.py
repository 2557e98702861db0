"""The models' memory budget and the choice of what to evict: pure rules, no I/O (the repository
measures and acts; tests/unit/serving/test_budget.py checks the rules).

A budget is bytes the loaded models may take together. It is PREDICTORS_MODEL_MEMORY, or by default
the container's memory limit less the server's own measured resident memory and a margin for
requests and transient allocations; a PREDICTORS_MODEL_MEMORY larger than that room (the Downward
API's `limits.memory` is the whole limit) is lowered to it, since a budget that leaves the server
no room ends in an out-of-memory kill.

Each model is counted at its *measured* size: the resident memory it added when it last loaded, and
the peak above that during the load (reading the weights and building the runtime session takes
about twice the steady size). A model never loaded is counted from its files (see `guess_size`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

MiB = 1 << 20
#: Kept free below the container limit besides the server's measured share: request bodies and
#: their parsed copies, tokenizer buffers, a load's transient copies. The larger of the two.
MARGIN_MIN_BYTES = 128 * MiB
MARGIN_SHARE = 0.10
#: A model never loaded yet is counted from its weights file: measured on the demo models (int8 and
#: 4-bit ONNX, 14-74 MiB files, 2-core machine), the steady RSS added was 1.0-3.2x the file (3.2x for
#: the smallest, whose tokenizer outweighs it) and the load's peak 2.9-3.2x; a fixed 30 MiB covers
#: the tokenizer, the session's arenas and the worker threads of any model.
GUESS_RESIDENT_FACTOR = 1.5
GUESS_PEAK_FACTOR = 3.0
GUESS_FIXED_BYTES = 30 * MiB


def format_bytes(count: int | float | None) -> str:
    if count is None:
        return "unknown"
    if abs(count) >= 1 << 30:
        return f"{count / (1 << 30):.2f} GiB"
    return f"{math.ceil(count / MiB)} MiB"


@dataclass(frozen=True)
class MemoryBudget:
    """What the models may use together, and how that number was decided."""

    budget: int | None  # bytes for all loaded models; None: no budget (no limit is known)
    limit: int | None  # the container's memory limit, when known
    overhead: int | None  # the server's own resident memory, measured before any model loaded
    margin: int  # kept free besides the overhead
    source: str  # the rule in words, for the index, /config, logs and errors

    def describe(self) -> dict[str, object]:
        return {"budget_bytes": self.budget, "container_limit_bytes": self.limit, "server_overhead_bytes": self.overhead,
                "margin_bytes": self.margin, "source": self.source}


def resolve_budget(setting: int | None, limit: int | None, overhead: int | None) -> MemoryBudget:
    """The budget from PREDICTORS_MODEL_MEMORY (`setting`), the container limit and the server's
    measured overhead (see the module's doc)."""
    margin = max(MARGIN_MIN_BYTES, int(limit * MARGIN_SHARE)) if limit else 0
    room = limit - (overhead or 0) - margin if limit else None
    share = (f"the container's memory limit {format_bytes(limit)} less the server's own {format_bytes(overhead)} "
             f"and a margin of {format_bytes(margin)}")
    if setting is not None:
        if room is not None and setting > room:
            return MemoryBudget(max(0, room), limit, overhead, margin,
                                f"PREDICTORS_MODEL_MEMORY={format_bytes(setting)} lowered to {share}")
        return MemoryBudget(setting, limit, overhead, margin, f"PREDICTORS_MODEL_MEMORY={format_bytes(setting)}")
    if room is not None:
        return MemoryBudget(max(0, room), limit, overhead, margin, share)
    return MemoryBudget(None, None, overhead, 0, "no budget: PREDICTORS_MODEL_MEMORY is unset and the container has no memory limit")


@dataclass(frozen=True)
class ModelSize:
    """A model's memory: what it keeps once loaded, and the peak above the pre-load level while loading."""

    resident: int
    load_peak: int
    measured: bool  # False: a guess from the files

    @property
    def needed(self) -> int:
        """Free budget a load of this model needs."""
        return max(self.resident, self.load_peak)

    def describe(self) -> str:
        how = "measured at its last load" if self.measured else "guessed from its weights file, not loaded yet"
        return f"{format_bytes(self.resident)} resident, {format_bytes(self.load_peak)} while loading ({how})"


def guess_size(weights_bytes: int) -> ModelSize:
    """The first guess for a model never loaded, from its weights file (see GUESS_* above)."""
    return ModelSize(
        resident=int(GUESS_RESIDENT_FACTOR * weights_bytes) + GUESS_FIXED_BYTES,
        load_peak=int(GUESS_PEAK_FACTOR * weights_bytes) + GUESS_FIXED_BYTES,
        measured=False,
    )


def measured_size(before: int, after: int, peak: int | None, weights_bytes: int) -> ModelSize:
    """A load's measurement: resident before, after, and the peak during it. Other requests run
    meanwhile, so the difference is floored at the weights file (they are in memory once loaded)."""
    resident = max(after - before, weights_bytes)
    load_peak = max((peak - before) if peak is not None else 0, resident)
    return ModelSize(resident, load_peak, measured=True)


@dataclass(frozen=True)
class Resident:
    """A loaded model, as eviction sees it."""

    name: str
    bytes: int
    last_used: float  # monotonic seconds of its last request (or its load)
    evictable: bool
    why_kept: str = ""  # when not evictable: "2 requests in flight", "a startup model", "being loaded"
    busy: bool = False  # kept only for now (requests, a load): it may be evictable in a moment


def plan_evictions(needed: int, free: int, residents: list[Resident], once_idle: bool = False) -> list[Resident] | None:
    """The least recently used evictable models whose memory makes `needed` bytes fit in `free`
    (none when it fits already), or None when even all of them would not be enough: then nothing
    is evicted for a load that cannot happen. With `once_idle`, busy models count as evictable
    (would the load fit once they are idle?)."""
    if needed <= free:
        return []
    victims: list[Resident] = []
    gained = 0
    candidates = (r for r in residents if r.evictable or (once_idle and r.busy))
    for resident in sorted(candidates, key=lambda r: r.last_used):
        victims.append(resident)
        gained += resident.bytes
        if free + gained >= needed:
            return victims
    return None
