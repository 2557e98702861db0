"""Splitting a request's texts into chunks and putting the chunks' answers back in request order."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Sequence, TypeVar

import numpy as np

Result = TypeVar("Result")


def chunk_plan(texts: Sequence[str], size: int) -> list[list[int]]:
    """Indices of each chunk of at most `size` texts. Texts are grouped by length so a chunk pads to
    similar lengths; padding, not the model, dominates the cost of a mixed-length chunk."""
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    return [order[i : i + size] for i in range(0, len(order), size)]


def run_chunks(run: Callable[[list[int]], Result], plan: list[list[int]], workers: int = 1,
               on_chunk: Callable[[], None] | None = None) -> list[Result]:
    """`run(chunk)` for every chunk of the plan, in plan order, on the calling thread or on `workers`
    threads; `on_chunk` is called as each finishes (a progress bar)."""

    def one(chunk: list[int]) -> Result:
        result = run(chunk)
        if on_chunk is not None:
            on_chunk()
        return result

    if workers > 1 and len(plan) > 1:
        with ThreadPoolExecutor(workers, thread_name_prefix="chunks") as pool:
            return list(pool.map(one, plan))
    return [one(chunk) for chunk in plan]


def reassemble(
    count: int, plan: list[list[int]], results: Sequence[tuple[dict[str, np.ndarray], list[bool]]]
) -> tuple[dict[str, np.ndarray], list[int]]:
    """Per-text outputs in request order from per-chunk (outputs, truncated flags), and the sorted
    indices of the texts that were truncated."""
    outputs: dict[str, np.ndarray] = {}
    truncated: list[int] = []
    for chunk, (chunk_outputs, chunk_truncated) in zip(plan, results):
        index = np.asarray(chunk)
        for name, values in chunk_outputs.items():
            if name not in outputs:
                outputs[name] = np.empty((count, *values.shape[1:]), dtype=values.dtype)
            outputs[name][index] = values
        truncated.extend(i for i, cut in zip(chunk, chunk_truncated) if cut)
    return outputs, sorted(truncated)
