#!/usr/bin/env python3
"""Where the demo classifiers' fine-tuning time goes: one row per variant of the training settings.

    python benchmarks/finetune_speed.py --model review-sentiment --steps 30 \\
        --variant recipe --variant threads1:torch_threads=1 --variant maxpad:padding=max_length
    python benchmarks/finetune_speed.py --model news-topic --full --variant recipe --variant ml128:max_length=128

A variant is `label` or `label:field=value,field=value` over the model's TrainSettings in
tools/build/recipes.py (`recipe` = the settings as they are).  Without --full each variant trains
--steps steps and the table shows seconds per step (the first 3 steps, warm-up, not counted) and
tokens per second, plus the CPU seconds of the run (all threads; a fairer comparison than
wall time when other work shares the machine); with --full it trains the whole recipe and adds the held-out accuracy, so the
numbers choose the recipe (docs/build.md).  Data comes from the build's download cache (run
tools/build_models.py once first).  Run it on a quiet machine, and more than once (--repeat).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import resource
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from tools.build.builders import load_data  # noqa: E402
from tools.build.cache import cache_root_dir  # noqa: E402
from tools.build.recipes import model_specs  # noqa: E402
from tools.build.sources import Sources  # noqa: E402
from tools.build.train import TrainSettings, evaluate, fine_tune  # noqa: E402

WARMUP_STEPS = 3


def cpu_seconds() -> float:
    """CPU time of this process (all threads): less sensitive than wall time to other work on the machine."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def parse_variant(text: str, base: TrainSettings) -> tuple[str, TrainSettings]:
    label, _, assignments = text.partition(":")
    fields = {f.name: f.type for f in dataclasses.fields(TrainSettings)}
    changes = {}
    for assignment in filter(None, assignments.split(",")):
        key, _, value = assignment.partition("=")
        if key not in fields:
            raise SystemExit(f"unknown TrainSettings field {key!r} (one of {', '.join(fields)})")
        kind = type(getattr(base, key))
        changes[key] = value.lower() in ("1", "true", "yes") if kind is bool else kind(value)
    return label, dataclasses.replace(base, **changes)


def main() -> int:
    specs = {s.name: s for s in model_specs() if s.fine_tuned}
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", choices=sorted(specs), required=True)
    parser.add_argument("--variant", action="append", default=[], help="label[:field=value,...] (repeatable)")
    parser.add_argument("--steps", type=int, default=30, help="steps per variant without --full")
    parser.add_argument("--full", action="store_true", help="train the whole recipe and measure held-out accuracy")
    parser.add_argument("--repeat", type=int, default=1)
    args = parser.parse_args()
    spec = specs[args.model]
    data, _ = load_data(spec, Sources(cache_root_dir()))
    base_dir = Sources(cache_root_dir()).minilm_dir()
    variants = [parse_variant(v, spec.train) for v in (args.variant or ["recipe"])]
    print(f"{args.model}: {len(data.train_texts)} train / {len(data.heldout_texts)} held out; "
          f"{os.cpu_count()} CPUs; load average {os.getloadavg()[0]:.2f} at start", flush=True)

    rows = []
    for label, settings in variants:
        for run in range(args.repeat):
            marks: list[float] = []
            load_start = os.getloadavg()[0]
            cpu_start = cpu_seconds()
            result = fine_tune(base_dir, data, settings, on_step=lambda *_: marks.append(time.monotonic()),
                               max_steps=0 if args.full else args.steps)
            timed = marks[WARMUP_STEPS:] if len(marks) > WARMUP_STEPS + 1 else marks
            per_step = (timed[-1] - timed[0]) / (len(timed) - 1) if len(timed) > 1 else result.seconds
            row = {"variant": label, "run": run + 1, "steps": result.steps, "s/step": f"{per_step:.3f}",
                   "tokens/s": f"{result.tokens / result.seconds:.0f}", "train s": f"{result.seconds:.1f}",
                   "cpu s": f"{cpu_seconds() - cpu_start:.1f}",
                   "load": f"{load_start:.1f}"}
            if args.full:
                start = time.monotonic()
                accuracy = evaluate(result.model, result.tokenizer, data, settings.max_length)
                row.update({"eval s": f"{time.monotonic() - start:.1f}", "held-out acc": f"{accuracy:.4f}"})
            rows.append(row)
            print(" ".join(f"{k}={v}" for k, v in row.items()), flush=True)
    print()
    columns = list(rows[0])
    print("| " + " | ".join(columns) + " |")
    print("|" + "---|" * len(columns))
    for row in rows:
        print("| " + " | ".join(str(row[c]) for c in columns) + " |")
    print("\nvariants: " + "; ".join(f"{label} = {settings}" for label, settings in variants))
    return 0


if __name__ == "__main__":
    sys.exit(main())
