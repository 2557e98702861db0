"""Fine-tuning all-MiniLM-L6-v2 for sentence classification, and its held-out accuracy.

Every choice that changes the weights is a field of TrainSettings, which is part of the trained
weights' cache key (recipes.py).  The numbers behind the defaults are in docs/build.md
(benchmarks/finetune_speed.py).  torch and transformers are imported lazily: a build whose trained
weights are cached never loads them here.
"""

from __future__ import annotations

import functools
import logging
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

from .data import TextData
from .progress import bar

log = logging.getLogger("build")

#: (step, steps, mean loss of the steps since the last call) after each optimizer step.
StepCallback = Callable[[int, int, float], None]


@dataclass(frozen=True)
class TrainSettings:
    """Everything about fine-tuning that changes the trained weights."""

    max_length: int = 128
    epochs: int = 1
    batch_size: int = 16
    lr: float = 1e-4
    weight_decay: float = 0.01
    warmup_ratio: float = 0.1  # linear warmup, then linear decay to 0
    seed: int = 0
    torch_threads: int = 2
    # "longest": pad each batch to its longest text; "max_length": pad every batch to max_length.
    padding: str = "longest"
    # Batches of similar length (shuffled within groups of group_batches batches), so they pad little.
    length_grouped: bool = False
    group_batches: int = 50
    freeze_layers: int = 0  # embeddings + this many bottom encoder layers kept frozen (0: train all)
    # "bf16": torch.autocast(cpu, bfloat16) for forward and backward; "fp32": no autocast.  The
    # recipes take it from the hardware (training_precision): bf16 only pays where the CPU has it.
    precision: str = "fp32"
    train_limit: int = 0  # train on the first N examples of the shuffled training set (0: all)

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision {self.precision!r} is not one of {', '.join(PRECISIONS)}")

    def describe(self) -> dict[str, Any]:
        return {**asdict(self), "optimizer": "torch.optim.AdamW", "dropout": "model default (0.1)"}

    def examples(self, available: int) -> int:
        """How many of `available` training examples an epoch uses."""
        return min(available, self.train_limit) if self.train_limit else available


PRECISIONS = ("bf16", "fp32")


@dataclass(frozen=True)
class Precision:
    """The training precision this machine should use, and why (build log, build_info.json)."""

    name: str  # one of PRECISIONS
    reason: str


def cpu_runs_bf16() -> tuple[bool, str]:
    """Whether the CPU runs bfloat16 natively, as torch reports it (AVX512-BF16 or AMX), and what it has."""
    import torch

    if torch.cpu._is_amx_tile_supported():
        return True, "the CPU has AMX"
    if torch.cpu._is_avx512_bf16_supported():
        return True, "the CPU has AVX512-BF16"
    return False, f"the CPU has neither AVX512-BF16 nor AMX (torch's CPU capability: {torch.backends.cpu.get_cpu_capability()})"


@functools.cache
def training_precision() -> Precision:
    """bf16 autocast where the CPU runs bf16 natively, fp32 elsewhere.  Measured on MiniLM at batch 16 x 96
    tokens: bf16 autocast is faster where the CPU has AVX512-BF16, and 2.8x slower than fp32 where it
    does not (emulated bf16); docs/build.md."""
    native, what = cpu_runs_bf16()
    if native:
        return Precision("bf16", f"bf16 autocast: {what}")
    return Precision("fp32", f"fp32: {what}, where bf16 autocast is emulated and slower than fp32")


@dataclass
class TrainResult:
    model: Any
    tokenizer: Any
    seconds: float
    steps: int
    tokens: int  # tokens fed to the model (padding included)
    final_loss: float


def batches(lengths: list[int], settings: TrainSettings, generator: Any) -> list[list[int]]:
    """One epoch's batches of example indices: shuffled, optionally grouped by length."""
    import torch

    order = torch.randperm(len(lengths), generator=generator).tolist()
    if settings.train_limit:
        order = order[:settings.train_limit]
    size = settings.batch_size
    if not settings.length_grouped:
        return [order[i:i + size] for i in range(0, len(order), size)]
    group = size * settings.group_batches
    grouped = []
    for start in range(0, len(order), group):
        chunk = sorted(order[start:start + group], key=lambda i: (-lengths[i], i))
        grouped += [chunk[i:i + size] for i in range(0, len(chunk), size)]
    return [grouped[i] for i in torch.randperm(len(grouped), generator=generator).tolist()]


def fine_tune(base_dir: Path, data: TextData, settings: TrainSettings, on_step: StepCallback | None = None,
              max_steps: int = 0) -> TrainResult:
    """Fine-tune the HuggingFace folder `base_dir` on `data` (max_steps > 0 stops early: benchmarks)."""
    from predictors.export import prepare_transformers

    prepare_transformers()
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer, get_linear_schedule_with_warmup

    torch.set_num_threads(settings.torch_threads)
    torch.use_deterministic_algorithms(True)
    torch.manual_seed(settings.seed)
    label2id = {label: i for i, label in enumerate(data.labels)}
    tokenizer = AutoTokenizer.from_pretrained(str(base_dir))
    model = AutoModelForSequenceClassification.from_pretrained(
        str(base_dir), num_labels=len(data.labels), label2id=label2id,
        id2label={i: label for label, i in label2id.items()})
    if settings.freeze_layers:
        model.base_model.embeddings.requires_grad_(False)
        for layer in model.base_model.encoder.layer[:settings.freeze_layers]:
            layer.requires_grad_(False)
    model.train()

    encoded = tokenizer(data.train_texts, truncation=True, max_length=settings.max_length)["input_ids"]
    labels = [label2id[label] for label in data.train_labels]
    generator = torch.Generator().manual_seed(settings.seed)
    epochs = [batches([len(ids) for ids in encoded], settings, generator) for _ in range(settings.epochs)]
    steps = sum(len(epoch) for epoch in epochs)
    if max_steps:
        steps = min(steps, max_steps)
    parameters = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(parameters, lr=settings.lr, weight_decay=settings.weight_decay)
    scheduler = get_linear_schedule_with_warmup(optimizer, int(settings.warmup_ratio * steps), steps)
    pad_to = settings.max_length if settings.padding == "max_length" else None
    log.info("fine-tune: %d of %d examples, %d steps of %d, max_length %d, padding %s%s, %s",
             settings.examples(len(encoded)), len(encoded), steps, settings.batch_size, settings.max_length, settings.padding,
             ", length-grouped" if settings.length_grouped else "", settings.precision)

    start, step, tokens, recent, loss_value = time.monotonic(), 0, 0, [], 0.0
    with bar(total=steps, desc="fine-tune", unit="step") as progress:
        for batch in (b for epoch in epochs for b in epoch):
            if step == steps:
                break
            inputs = tokenizer.pad({"input_ids": [encoded[i] for i in batch]}, padding="max_length" if pad_to else True,
                                   max_length=pad_to, return_tensors="pt")
            inputs["token_type_ids"] = torch.zeros_like(inputs["input_ids"])
            tokens += inputs["input_ids"].numel()
            target = torch.tensor([labels[i] for i in batch])
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=settings.precision == "bf16"):
                loss = model(**inputs, labels=target).loss
            loss.backward()
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad()
            step += 1
            loss_value = loss.item()
            recent.append(loss_value)
            progress.update(1)
            progress.set_postfix(loss=f"{sum(recent[-20:]) / len(recent[-20:]):.3f}", refresh=False)
            if on_step is not None:
                on_step(step, steps, sum(recent) / len(recent))
            if step % 50 == 0 or step == steps:
                log.info("fine-tune: step %d/%d loss %.3f (%.0fs)", step, steps, sum(recent) / len(recent),
                         time.monotonic() - start)
                recent = []
    model.eval()
    return TrainResult(model, tokenizer, time.monotonic() - start, step, tokens, loss_value)


def evaluate(model: Any, tokenizer: Any, data: TextData, max_length: int, batch_size: int = 32) -> float:
    """Held-out accuracy of the torch model (texts sorted by length so batches pad little)."""
    import torch

    order = sorted(range(len(data.heldout_texts)), key=lambda i: len(data.heldout_texts[i]))
    id2label = model.config.id2label
    correct = 0
    with torch.inference_mode():
        for i in range(0, len(order), batch_size):
            batch = order[i:i + batch_size]
            inputs = tokenizer([data.heldout_texts[j] for j in batch], truncation=True, max_length=max_length,
                               padding=True, return_tensors="pt")
            predicted = model(**inputs).logits.argmax(-1).tolist()
            correct += sum(id2label[p] == data.heldout_labels[j] for p, j in zip(predicted, batch))
    return correct / len(order)
