"""Splitting a request's texts into chunks and putting the chunks' answers back in request order."""

from __future__ import annotations

from typing import Sequence

import numpy as np


def chunk_plan(texts: Sequence[str], size: int) -> list[list[int]]:
    """Indices of each chunk of at most `size` texts. Texts are grouped by length so a chunk pads to
    similar lengths; padding, not the model, dominates the cost of a mixed-length chunk."""
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    return [order[i : i + size] for i in range(0, len(order), size)]


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
