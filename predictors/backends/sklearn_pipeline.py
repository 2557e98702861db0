"""scikit-learn text pipelines (a vectorizer, then a linear classifier) from skops files.

The backend takes texts: the pipeline's own vectorizer featurizes them after the model's text
cleaning, so no tokenizer is loaded. Files are read with skops against an explicit trusted-type
list (skops_files.py); a pickle or joblib file is never loaded, and a folder that has only one is
reported unavailable with the command that converts it.

Its output is the classification head's logits, which the head turns into probabilities with a
softmax:

- classifiers with predict_proba (LogisticRegression, naive Bayes, SGD with log or modified Huber
  loss): log(predict_proba), so the served probabilities are predict_proba's;
- classifiers with only decision_function (LinearSVC, RidgeClassifier, SGD with hinge loss): the
  decision values, [-d/2, d/2] for two classes (softmax gives sigmoid(d) for the positive class).
  These are scores, not calibrated probabilities; the label is the classifier's own prediction.

scikit-learn loads with the first pipeline, not when the registry is imported: a server serving
this model from its ONNX export never imports it.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np

from ..model import ModelConfig, ModelConfigError, read_report
from ..tasks import TaskHead
from .base import RANK_FRAMEWORK, Backend, BackendChoice, Candidates
from .skops_files import PipelineFileError, file_facts, load_pipeline

#: The `python -m predictors` sub-command that turns a trusted pickle into a skops file.
CONVERT_COMMAND = "python -m predictors convert-pickle"
#: Probabilities are floored here before the log, so a class predict_proba puts at 0 stays finite.
MIN_PROBABILITY = 1e-30


def pickle_refusal(path: Path) -> str:
    """Why a pickle is not served, and the one command that converts one the user trusts."""
    return (
        f"{path.name} is a pickle, and this server never loads pickles (loading one runs whatever code "
        f"it holds); if you trust it, convert it once: {CONVERT_COMMAND} {path} "
        "(it shows what the file references before converting it to model.skops)"
    )


def pipeline_logits(pipeline: object, texts: list[str]) -> np.ndarray:
    """The classification head's logits for `texts` from a fitted pipeline (see the module doc)."""
    if hasattr(pipeline, "predict_proba"):
        return np.log(np.clip(pipeline.predict_proba(texts), MIN_PROBABILITY, None))
    scores = np.asarray(pipeline.decision_function(texts), dtype=np.float64)
    if scores.ndim == 1:  # two classes: the positive class's score
        return np.stack([-scores / 2, scores / 2], axis=1)
    return scores


class SklearnBackend(Backend):
    name = "sklearn"
    platform = "sklearn_skops"
    files = "no .skops file"

    @classmethod
    def complete(cls, config: ModelConfig) -> ModelConfig:
        """A pipeline folder's labels (its classifier's classes_, or predictor.yaml's labels naming
        them), features and step names, read from the skops schema without loading it."""
        if not config.text_pipeline:
            return config
        path = config.pipeline_file
        if path is None:
            pickles = config.pickle_files
            if pickles:
                raise ModelConfigError(f"model '{config.name}': {pickle_refusal(pickles[0])}")
            raise ModelConfigError(
                f"model '{config.name}': {config.path} has several .skops files; name the one to serve model.skops"
            )
        facts = file_facts(path)
        if facts.summary is None:
            raise ModelConfigError(f"model '{config.name}': {facts.error}")
        summary = facts.summary
        labels = config.labels
        if labels and summary.classes and len(labels) != len(summary.classes):
            raise ModelConfigError(
                f"model '{config.name}': labels in {config.path / 'predictor.yaml'} name {len(labels)} classes, "
                f"but the pipeline in {path.name} has {len(summary.classes)} ({summary.classes})"
            )
        return replace(config, labels=labels or tuple(summary.classes), features=summary.features,
                       architecture=summary.description)

    @classmethod
    def candidates(cls, config: ModelConfig, forced: bool = False) -> Candidates:
        """A pipeline folder's skops file, ranked as framework weights (after a gated ONNX export).
        Pickles beside it are refused with the conversion command; a file naming untrusted types is
        refused. (A HuggingFace folder is not this backend's, whatever else it holds.)"""
        if not config.text_pipeline:
            return Candidates([], [])
        refused = [pickle_refusal(path) for path in config.pickle_files]
        path = config.pipeline_file
        if path is None:
            return Candidates([], refused)
        facts = file_facts(path)
        if facts.error is not None:
            return Candidates([], [*refused, facts.error])
        reason = "forced by predictor.yaml" if forced else f"{path.name}: a scikit-learn pipeline, loaded with skops"
        conversion = (read_report(config.path) or {}).get("conversion") or {}
        if conversion.get("error"):
            reason += f"; no ONNX export: {conversion['error']}"
        return Candidates([BackendChoice(cls.name, path, reason, rank=RANK_FRAMEWORK)], refused)

    def __init__(self, config: ModelConfig, head: TaskHead, weights: Path, threads: tuple[int, ...] = (1,)) -> None:
        super().__init__(config, head, weights, threads)
        if head.per_token_output:
            raise PipelineFileError(f"a scikit-learn pipeline answers per text; task {config.task} needs per-token outputs")
        self.pipeline = load_pipeline(weights)
        classes = self.pipeline.classes_
        if config.labels and len(classes) != len(config.labels):
            raise PipelineFileError(
                f"{weights.name}: the pipeline has {len(classes)} classes, the model's labels are {list(config.labels)}"
            )
        self.takes_texts = True

    def run_texts(self, texts: list[str], threads: int = 1) -> np.ndarray:
        return pipeline_logits(self.pipeline, texts).astype(np.float32)
