"""What a model's build is doing: named, timed steps, the folder's build status and the summary table.

Each model's build runs as a sequence of named steps ("download", "fine-tune", "export"...).  A step
is timed for the summary table printed at the end, logged, and written to models/<name>/ as its
build status (predictors.model.build_status) so a running server shows the folder as LOADING with
the build's message.  Status writes are throttled: a training loop may report every step.
"""

from __future__ import annotations

import logging
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from predictors.model.build_status import clear_build_status, write_build_status

#: At most one status write per this many seconds (a final or changed-step message always goes out).
STATUS_INTERVAL = 1.0

log = logging.getLogger("build")


class BuildError(RuntimeError):
    """A build step failed for a reason worth a one-line message (no traceback)."""


def status_message(step: str, detail: str = "") -> str:
    """The folder's build status while `step` runs: "building: fine-tuning step 120/250"."""
    return f"building: {step}{' ' + detail if detail else ''}"


@dataclass
class StepTime:
    model: str
    step: str
    seconds: float
    note: str = ""


@dataclass
class ModelProgress:
    """One model's build: its steps, their times, and the status file of its folder (if any)."""

    model: str
    folder: Path | None = None  # models/<name>/, whose build status this writes
    times: list[StepTime] = field(default_factory=list)
    _last_write: float = 0.0
    _last_step: str = ""

    def status(self, step: str, detail: str = "", *, force: bool = False) -> None:
        """Record what the build is doing now (throttled to one write per STATUS_INTERVAL)."""
        if self.folder is None:
            return
        now = time.monotonic()
        if force or step != self._last_step or now - self._last_write >= STATUS_INTERVAL:
            write_build_status(self.folder, "building", status_message(step, detail))
            self._last_write, self._last_step = now, step

    def done(self) -> None:
        """Every file of the folder is in place: the server may load it."""
        if self.folder is not None:
            clear_build_status(self.folder)

    def failed(self, reason: str) -> None:
        if self.folder is not None:
            write_build_status(self.folder, "failed", reason)

    @contextmanager
    def step(self, name: str, detail: str = "") -> Iterator[StepTime]:
        """Time a named step; its status is written on entry.  The yielded record takes a `note`."""
        self.status(name, detail, force=True)
        log.info("[%s] %s%s", self.model, name, f" ({detail})" if detail else "")
        record = StepTime(self.model, name, 0.0)
        start = time.monotonic()
        try:
            yield record
        finally:
            record.seconds = time.monotonic() - start
            self.times.append(record)

    def add(self, step: str, seconds: float, note: str = "") -> None:
        """A step timed elsewhere (e.g. fine-tuning taken from the trained-weights cache)."""
        self.times.append(StepTime(self.model, step, seconds, note))


def summary_table(times: list[StepTime], total_seconds: float) -> str:
    """A plain-text table of (model, step, seconds, note), then the total wall time."""
    rows = [("model", "step", "seconds", "note")]
    rows += [(t.model, t.step, f"{t.seconds:.1f}", t.note) for t in times]
    rows.append(("total", "", f"{total_seconds:.1f}", ""))
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    lines = []
    for index, row in enumerate(rows):
        cells = [row[0].ljust(widths[0]), row[1].ljust(widths[1]), row[2].rjust(widths[2]), row[3]]
        lines.append("  ".join(cells).rstrip())
        if index == 0 or index == len(rows) - 2:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def bar(**kwargs: Any) -> Any:
    """A tqdm bar on stderr, shown only on a terminal (a background build logs lines instead)."""
    from tqdm import tqdm

    return tqdm(file=sys.stderr, disable=None, dynamic_ncols=True, leave=False, **kwargs)
