"""The texts an export is gated and timed on: held-out texts where the folder records them, plus a
`--texts` file, else built-in sentences."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence, TypeVar

from ..model import ModelConfig
from ..serving.scheduling.chunking import chunk_plan

T = TypeVar("T")

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


#: Added to a converted pipeline's gate sample: texts whose featurization is easy to get wrong
#: (empty, punctuation or digits only, one-letter words, accents, odd whitespace, repeated words).
EDGE_TEXTS: tuple[str, ...] = (
    "",
    "!!!",
    "12345",
    "a b c i o u",
    "Café crème, naïve façade, Straße, ÉCOLE.",
    "  spaced \t out\nover   lines  ",
    "good good good good bad",
    "Visit https://example.com/a?b=1 or mail shop@example.com, 50% off $19.99!",
)


@dataclass
class Sample:
    texts: list[str]
    labels: list[str | None]  # gold label per text, None where unknown
    source: str

    @property
    def labelled(self) -> int:
        return sum(label is not None for label in self.labels)


def spread(items: Sequence[T], limit: int) -> list[T]:
    """An evenly spaced subset of at most `limit` items (keeps a label-ordered file balanced)."""
    if len(items) <= limit:
        return list(items)
    return [items[int(i * len(items) / limit)] for i in range(limit)]


def gate_sample(config: ModelConfig, texts_file: Path | str | None = None, max_texts: int = DEFAULT_MAX_TEXTS) -> Sample:
    """The texts the gate runs: held-out texts where the folder records them, plus a --texts file
    (one text per line); built-in sentences when there is neither."""
    texts: list[str] = []
    labels: list[str | None] = []
    sources: list[str] = []
    heldout = [row for row in config.heldout() if str(row.get("text", "")).strip()]
    if heldout:
        heldout = spread(heldout, max_texts)
        known = set(config.labels)
        texts += [str(row["text"]) for row in heldout]
        labels += [row.get("label") if row.get("label") in known else None for row in heldout]
        sources.append(f"{len(heldout)} held-out texts ({config.name}/heldout.jsonl)")
    if texts_file:
        path = Path(texts_file)
        lines = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        if not lines:
            raise ValueError(f"--texts {path}: no texts (expected one text per line)")
        lines = spread(lines, max_texts)
        texts += lines
        labels += [None] * len(lines)
        sources.append(f"{len(lines)} texts from {path}")
    if not texts:
        texts = list(BUILTIN_TEXTS)
        labels = [None] * len(texts)
        sources.append(f"{len(texts)} built-in sentences")
    return Sample(texts, labels, " + ".join(sources))


def bench_texts(texts: Sequence[str], count: int = 48, batch_size: int = 8) -> list[str]:
    """A length-representative subset made of whole length-sorted chunks: the sample cut into the
    served chunks of `batch_size`, and `count // batch_size` chunks evenly spaced among them. Batch 1
    over it sees the sample's length mix; batch 8 sees chunks padded as little as a large sorted
    request's chunks are (an evenly spread subset would pad far more)."""
    chunks = spread(chunk_plan(texts, batch_size), max(1, count // batch_size))
    return [texts[i] for chunk in chunks for i in chunk]
