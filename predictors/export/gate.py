"""The accuracy gate: an ONNX file is served only if it gives the answers PyTorch gives.

An exported graph is compared with the HuggingFace model it came from, on a sample of texts run
through the *serving* pipeline (the same tokenizer call, chunking, backends and task heads as
`TextPredictor`), so what is measured is what a client would get:

* max abs diff of the backend output (classification logits; token logits / hidden states at real,
  non-padding tokens),
* classification: top-1 agreement with torch, and accuracy where the sample has labels,
* embedding: cosine between the pooled, normalised vectors (the gate uses the mean; the worst
  text and nearest-neighbour agreement within the sample are reported),
* token classification: span agreement (entity spans, with offsets, found by both / by either).

Default gates (`Thresholds`): fp32 agrees 100 % with max abs diff < 1e-3; int8 top-1 (or span)
agreement >= 99 %, mean embedding cosine >= 0.99; neither may lose more than 1 point of accuracy.  The sample: the folder's held-out texts (heldout.jsonl) where recorded, plus any
`--texts` file; else built-in sentences.

`export_report.json` (written by `predictors.onnx_export`) records each file's figures; the backend
choice reads it through `gate_status`, so this module imports only the standard library and numpy
at import time (kserve/torch are loaded when a gate actually runs).
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from ..model import REPORT_FILE, file_sha256, read_report, write_report  # noqa: F401  (re-exported)
from ..serving.chunking import chunk_plan, reassemble

#: Cap on the texts taken from one source (held-out set or --texts file); an evenly spread subset.
DEFAULT_MAX_TEXTS = 1000

#: Used when the folder records no held-out texts and no --texts file is given: varied domains and
#: lengths, so padding, truncation-free long inputs and short fragments are all exercised.
BUILTIN_TEXTS: tuple[str, ...] = (
    "Great product, arrived quickly and works exactly as described.",
    "Terrible customer service. I waited two weeks and nobody answered my emails.",
    "The coffee tastes a little bitter, but the aroma is wonderful.",
    "I would not buy this again.",
    "Absolutely delicious! My kids ask for these cookies every day.",
    "The package was damaged and half of the bottles had leaked.",
    "It's okay, nothing special, a bit overpriced for what you get.",
    "Best tea I have had in years; smooth, fragrant and never bitter.",
    "The central bank raised interest rates by a quarter of a percentage point on Tuesday.",
    "Shares in the carmaker fell sharply after it cut its profit forecast for the year.",
    "The striker scored twice in the second half to secure a comfortable victory.",
    "The government announced new measures to reduce hospital waiting lists.",
    "A new smartphone with a folding screen goes on sale next month.",
    "The film festival opened with a premiere attended by hundreds of fans.",
    "Scientists have discovered a new species of frog in the rainforest.",
    "The election campaign entered its final week with both parties level in the polls.",
    "Heavy rain caused flooding in several towns across the region overnight.",
    "The company reported record quarterly revenue driven by strong demand for cloud services.",
    "A man is eating food.",
    "A man is eating a piece of bread.",
    "A woman is playing the violin.",
    "Two dogs are running through a field of tall grass.",
    "The cat sat quietly on the windowsill watching the birds.",
    "How do I reset my password?",
    "What is the capital of Australia?",
    "Where can I find the nearest pharmacy that is open late?",
    "Please send the signed contract back by Friday.",
    "The meeting has been moved to 3 pm on Thursday in room 204.",
    "Hi, I am John Smith, email john.smith@example.com, call me at (415) 555-0132.",
    "Contact Maria Garcia at maria.garcia@example.org or +1 212 555 0187 for details.",
    "Our office is located at 221B Baker Street, London.",
    "Invoice 4471 is overdue; please pay the remaining balance of $1,250.00.",
    "Yes.",
    "No way!",
    "Thanks!",
    "The quick brown fox jumps over the lazy dog.",
    "Machine learning models can be compressed with quantization to run faster on CPUs.",
    "Dynamic quantization converts weights to 8-bit integers and computes activations scales at run time.",
    "The hotel room was clean and the staff were friendly, but the breakfast was disappointing "
    "and the wifi kept dropping out every few minutes, which made working remotely very difficult.",
    "After a long and difficult negotiation, the two companies finally agreed on the terms of the "
    "merger, which will create the largest telecommunications group in the country and is expected "
    "to lead to several thousand job cuts over the next three years, according to union leaders.",
    "I ordered the large size because the reviews said it runs small, and it fits perfectly. The "
    "material is soft, the stitching looks solid, and after three washes there is no fading at all. "
    "My only complaint is that the pockets are a little shallow, so my phone tends to slip out.",
    "The museum's new exhibition brings together more than two hundred paintings, drawings and "
    "letters, many of which have never been shown in public before, tracing the artist's life from "
    "his early years in a small fishing village to his final decade in the capital.",
    "Local volunteers spent the weekend cleaning up the beach and collected over a tonne of plastic.",
    "The recipe calls for two cups of flour, a pinch of salt and three eggs.",
    "Train services between the two cities were suspended after a signal failure.",
    "The new software update fixes a bug that caused the app to crash on startup.",
    "She won the gold medal in the 400 metres with a personal best time.",
    "Parliament voted to approve the budget after a lengthy debate.",
)


# ---- sample ----------------------------------------------------------------------------------
@dataclass
class Sample:
    texts: list[str]
    labels: list[str | None]  # gold label per text, None where unknown
    source: str

    @property
    def labelled(self) -> int:
        return sum(label is not None for label in self.labels)


def _spread(items: list, limit: int) -> list:
    """An evenly spaced subset of at most `limit` items (keeps a label-ordered file balanced)."""
    if len(items) <= limit:
        return list(items)
    return [items[int(i * len(items) / limit)] for i in range(limit)]


def gate_sample(config: Any, texts_file: Path | str | None = None, max_texts: int = DEFAULT_MAX_TEXTS) -> Sample:
    """The texts the gate runs: held-out texts where the folder records them, plus a --texts file
    (one text per line); built-in sentences when there is neither."""
    texts: list[str] = []
    labels: list[str | None] = []
    sources: list[str] = []
    heldout = [row for row in config.heldout() if str(row.get("text", "")).strip()]
    if heldout:
        heldout = _spread(heldout, max_texts)
        known = set(getattr(config, "labels", ()) or ())
        texts += [str(row["text"]) for row in heldout]
        labels += [row.get("label") if row.get("label") in known else None for row in heldout]
        sources.append(f"{len(heldout)} held-out texts ({config.name}/heldout.jsonl)")
    if texts_file:
        path = Path(texts_file)
        lines = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        if not lines:
            raise ValueError(f"--texts {path}: no texts (expected one text per line)")
        lines = _spread(lines, max_texts)
        texts += lines
        labels += [None] * len(lines)
        sources.append(f"{len(lines)} texts from {path}")
    if not texts:
        texts = list(BUILTIN_TEXTS)
        labels = [None] * len(texts)
        sources.append(f"{len(texts)} built-in sentences")
    return Sample(texts, labels, " + ".join(sources))


# ---- running a backend through the serving pipeline -------------------------------------------
def _import_predictor() -> type:
    """TextPredictor, importing kserve without letting it parse this process's command line."""
    saved = sys.argv
    sys.argv = saved[:1]
    try:
        from ..serving.predictor import TextPredictor
    finally:
        sys.argv = saved
    return TextPredictor


@dataclass
class Run:
    """One pass of a backend over the sample, in sample order."""

    raw: list[np.ndarray]  # per text: logits [C], or [real_tokens, D] for sequence outputs
    outputs: dict[str, np.ndarray]  # the task head's outputs (label/probabilities, embedding, entities)
    seconds: float

    @property
    def texts_per_second(self) -> float:
        return len(self.raw) / self.seconds if self.seconds > 0 else float("inf")


class Pipeline:
    """A loaded TextPredictor for one backend/file, used to run texts in-process.

    `backend="hf"` runs the HuggingFace weights; `backend="onnx"` with `onnx_path` runs that file;
    `backend=None` keeps the folder's own choice (what the server would serve).
    """

    def __init__(self, config: Any, backend: str | None = None, onnx_path: Path | None = None) -> None:
        changes: dict[str, Any] = {"workers": 1}
        if backend is not None:
            changes["backend"] = backend
        if onnx_path is not None:
            changes["onnx_file"] = str(Path(onnx_path).resolve())
        self.config = replace(config, **changes)
        self.predictor = _import_predictor()(self.config)
        self.predictor.load()
        self.choice = self.predictor.choice

    def run(self, texts: Sequence[str], batch_size: int | None = None, workers: int = 1) -> Run:
        """Run `texts` in length-sorted chunks of `batch_size` (the served batch size by default),
        on `workers` threads (each backend run uses one intra-op thread, as served)."""
        predictor = self.predictor
        size = batch_size or self.config.batch_size
        plan = chunk_plan(texts, size)
        sequence = predictor.head.backend_output != "logits" or predictor.config.task == "token_classification"

        def one(chunk: list[int]) -> tuple[list[np.ndarray], dict[str, np.ndarray], list[bool]]:
            batch = predictor._tokenize([texts[i] for i in chunk])
            array = predictor.backend.run(batch.arrays)
            outputs = predictor.head.decode(array, batch)
            if sequence:
                mask = batch.arrays["attention_mask"].astype(bool)
                raw = [np.asarray(array[j][mask[j]], dtype=np.float32) for j in range(len(chunk))]
            else:
                raw = [np.asarray(row, dtype=np.float32) for row in array]
            return raw, outputs, batch.truncated

        started = time.perf_counter()
        if workers > 1 and len(plan) > 1:
            with ThreadPoolExecutor(workers, thread_name_prefix="gate") as pool:
                results = list(pool.map(one, plan))
        else:
            results = [one(chunk) for chunk in plan]
        seconds = time.perf_counter() - started
        raw: list[np.ndarray] = [np.empty(0)] * len(texts)
        for chunk, (chunk_raw, _, _) in zip(plan, results):
            for i, row in zip(chunk, chunk_raw):
                raw[i] = row
        outputs, _ = reassemble(len(texts), plan, [(o, t) for _, o, t in results])
        return Run(raw, outputs, seconds)

    def throughput(self, texts: Sequence[str], batch_size: int) -> float:
        """Texts per second for `texts` in length-sorted chunks of `batch_size`, one thread."""
        self.run(texts[: max(1, batch_size)], batch_size)  # warm-up: first-run allocations
        return round(self.run(texts, batch_size).texts_per_second, 1)

    def close(self) -> None:
        self.predictor.stop()
        self.predictor.backend = None


def bench_texts(texts: Sequence[str], count: int = 48, batch_size: int = 8) -> list[str]:
    """A length-representative subset made of whole length-sorted chunks: the sample sorted by
    length, cut into chunks of `batch_size`, and `count // batch_size` chunks evenly spaced among
    them. Batch 1 over it sees the sample's length mix; batch 8 sees chunks padded as little as a
    large sorted request's chunks are (an evenly spread subset would pad far more)."""
    ordered = sorted(texts, key=len)
    chunks = [ordered[i : i + batch_size] for i in range(0, len(ordered), batch_size)]
    return [text for chunk in _spread(chunks, max(1, count // batch_size)) for text in chunk]


# ---- comparing -------------------------------------------------------------------------------
def compare(
    task: str, reference: Run, candidate: Run, labels: Sequence[str | None] = (), texts: Sequence[str] = ()
) -> dict[str, Any]:
    """Figures of `candidate` against `reference` (the torch run) on the same texts."""
    n = len(reference.raw)
    figures: dict[str, Any] = {"texts": n}
    diff = 0.0
    for ref, cand in zip(reference.raw, candidate.raw):
        if ref.shape != cand.shape:
            raise ValueError(f"output shapes differ: torch {ref.shape} vs onnx {cand.shape}")
        if ref.size:
            diff = max(diff, float(np.abs(ref - cand).max()))
    figures["max_abs_diff"] = diff
    if task == "classification":
        ref_labels, cand_labels = reference.outputs["label"], candidate.outputs["label"]
        changed = int(sum(a != b for a, b in zip(ref_labels, cand_labels)))
        figures["top1_agreement"] = (n - changed) / n if n else 1.0
        figures["changed"] = changed
        figures["max_probability_diff"] = float(
            np.abs(reference.outputs["probabilities"] - candidate.outputs["probabilities"]).max()
        ) if n else 0.0
        known = [i for i, label in enumerate(labels) if label is not None]
        if known:
            ref_acc = sum(ref_labels[i] == labels[i] for i in known) / len(known)
            cand_acc = sum(cand_labels[i] == labels[i] for i in known) / len(known)
            figures.update(labelled=len(known), reference_accuracy=ref_acc, accuracy=cand_acc,
                           accuracy_drop=ref_acc - cand_acc)
    elif task == "embedding":
        a, b = reference.outputs["embedding"], candidate.outputs["embedding"]
        norms = np.clip(np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1), 1e-12, None)
        cosine = (a * b).sum(axis=1) / norms
        figures["cosine_mean"] = float(cosine.mean()) if n else 1.0
        figures["cosine_min"] = float(cosine.min()) if n else 1.0
        figures["cosine_p1"] = float(np.percentile(cosine, 1)) if n else 1.0
        if n:
            figures["worst_text"] = texts[int(cosine.argmin())][:80] if texts else None
        if n > 2:
            # Retrieval view: is each text's nearest neighbour in the sample still the same text?
            nearest = []
            for vectors in (a, b):
                unit = vectors / np.clip(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12, None)
                similarity = unit @ unit.T
                np.fill_diagonal(similarity, -np.inf)
                nearest.append(similarity.argmax(axis=1))
            figures["neighbour_agreement"] = float((nearest[0] == nearest[1]).mean())
    elif task == "token_classification":
        same_tokens = total_tokens = 0
        for ref, cand in zip(reference.raw, candidate.raw):
            same_tokens += int((ref.argmax(-1) == cand.argmax(-1)).sum())
            total_tokens += len(ref)
        both = either = same_texts = 0
        for ref, cand in zip(reference.outputs["entities"], candidate.outputs["entities"]):
            a = {(e["entity"], e["start"], e["end"]) for e in ref}
            b = {(e["entity"], e["start"], e["end"]) for e in cand}
            both += len(a & b)
            either += len(a | b)
            same_texts += a == b
        figures["token_agreement"] = same_tokens / total_tokens if total_tokens else 1.0
        figures["span_agreement"] = both / either if either else 1.0
        figures["spans"] = either
        figures["texts_with_same_spans"] = same_texts / n if n else 1.0
    return figures


# ---- the gate --------------------------------------------------------------------------------
@dataclass(frozen=True)
class Thresholds:
    fp32_max_abs_diff: float = 1e-3
    fp32_min_agreement: float = 1.0
    int8_min_agreement: float = 0.99
    int8_min_cosine: float = 0.99
    max_accuracy_drop: float = 0.01  # 1 point

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


def _pct(value: float) -> str:
    return f"{100 * value:.2f}%"


@dataclass
class GateResult:
    file: str
    precision: str  # "fp32" | "int8"
    task: str
    figures: dict[str, Any]
    checks: list[dict[str, Any]] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return all(check["passed"] for check in self.checks)

    def failures(self) -> list[str]:
        return [check["message"] for check in self.checks if not check["passed"]]

    def summary(self) -> str:
        """The figures that matter, in one line: `top-1 agreement 99.60% (4 of 1000 changed), ...`."""
        f = self.figures
        parts = []
        if "top1_agreement" in f:
            parts.append(f"top-1 agreement {_pct(f['top1_agreement'])} ({f['changed']} of {f['texts']} changed)")
        if "cosine_mean" in f:
            parts.append(f"cosine mean {f['cosine_mean']:.4f} (worst text {f['cosine_min']:.4f})")
        if "neighbour_agreement" in f:
            parts.append(f"nearest-neighbour agreement {_pct(f['neighbour_agreement'])}")
        if "span_agreement" in f:
            parts.append(f"span agreement {_pct(f['span_agreement'])} of {f['spans']} spans")
        if "accuracy" in f:
            parts.append(f"accuracy {_pct(f['accuracy'])} vs torch {_pct(f['reference_accuracy'])}")
        parts.append(f"max abs diff {f['max_abs_diff']:.2e}")
        return ", ".join(parts)

    def as_dict(self) -> dict[str, Any]:
        return {"passed": self.passed, "summary": self.summary(), "figures": self.figures,
                "checks": self.checks, "failures": self.failures()}


class GateFailed(RuntimeError):
    """An ONNX file failed its accuracy gate; the message names each failed gate and by how much."""

    def __init__(self, results: Sequence[GateResult]) -> None:
        self.results = list(results)
        lines = [f"{r.file} failed the {r.precision} accuracy gate: {'; '.join(r.failures())}" for r in self.results]
        super().__init__("\n".join(lines))


def _check(checks: list, gate: str, value: float, limit: float, op: str, show: Callable[[float], str], extra: str = "") -> None:
    passed = value >= limit if op == ">=" else value <= limit if op == "<=" else value < limit
    relation = {">=": "below", "<=": "above", "<": "not below"}[op]
    if passed:
        message = f"{gate} {show(value)} (gate {op} {show(limit)})"
    else:
        message = f"{gate} gate: {show(value)} is {relation} the limit {show(limit)} (off by {show(abs(value - limit))}){extra}"
    checks.append({"gate": gate, "value": value, "limit": limit, "op": op, "passed": passed, "message": message})


def check_gate(file: str, precision: str, task: str, figures: dict[str, Any], thresholds: Thresholds = Thresholds()) -> GateResult:
    """Apply the gates for `precision` ("fp32" or "int8") to `figures` from `compare`."""
    result = GateResult(file, precision, task, figures)
    checks = result.checks
    fp32 = precision == "fp32"
    agreement = thresholds.fp32_min_agreement if fp32 else thresholds.int8_min_agreement
    if fp32:
        _check(checks, "fp32 max abs diff", figures["max_abs_diff"], thresholds.fp32_max_abs_diff, "<", lambda v: f"{v:.2e}")
    if "top1_agreement" in figures:
        _check(checks, f"{precision} top-1 agreement", figures["top1_agreement"], agreement, ">=", _pct,
               f" ({figures['changed']} of {figures['texts']} texts changed label)")
    if "span_agreement" in figures:
        _check(checks, f"{precision} span agreement", figures["span_agreement"], agreement, ">=", _pct)
    if "cosine_mean" in figures and not fp32:
        _check(checks, "int8 embedding cosine", figures["cosine_mean"], thresholds.int8_min_cosine, ">=",
               lambda v: f"{v:.4f}", f" (worst text {figures['cosine_min']:.4f})")
    if "accuracy_drop" in figures:
        _check(checks, f"{precision} accuracy drop", figures["accuracy_drop"], thresholds.max_accuracy_drop, "<=",
               lambda v: f"{100 * v:.2f} pt",
               f" (accuracy {_pct(figures['accuracy'])} vs torch {_pct(figures['reference_accuracy'])})")
    return result
