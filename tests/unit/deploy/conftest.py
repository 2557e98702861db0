"""Fixtures for the manifest tests: config-only model folders (no weights) with measured `deploy:`
sections, their rendering, and the CRD schema registry (skipped with the remedy when absent)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml

from predictors.deploy.render import render_all
from predictors.deploy.validation import CrdSchemasNotFound, SchemaRegistry, load_yaml_documents
from tests.helpers import write_folder

ROOT = Path(__file__).resolve().parents[3]
MANIFESTS = Path(os.environ.get("PREDICTORS_MANIFESTS_DIR", ROOT / "manifests"))
DEPLOY = "deploy:\n  startup_seconds: {startup}\n  peak_rss_mib: {peak}\n"
# name -> (architecture, predictor.yaml): one model per task, as the demo models are
FOLDERS = {
    "review-sentiment": ("BertForSequenceClassification", "task: classification\nbatch_size: 8\nmax_batch: 1024\n"
                         + DEPLOY.format(startup=3.5, peak=536)),
    "sentence-embedding": ("BertModel", "task: embedding\n" + DEPLOY.format(startup=4, peak=900)),
    "pii-ner": ("BertForTokenClassification", "task: token_classification\nmax_batch: 128\n"
                + DEPLOY.format(startup=12.5, peak=1400) + "  cpu: 4\n  termination_grace_seconds: 90\n"),
}


@pytest.fixture(scope="session")
def registry() -> SchemaRegistry:
    try:
        return SchemaRegistry.from_crd_dir()
    except CrdSchemasNotFound as exc:
        pytest.skip(str(exc))


@pytest.fixture(scope="session")
def models_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("models")
    for name, (architecture, settings) in FOLDERS.items():
        write_folder(root / name, architecture=architecture, predictor_yaml=settings)
    return root


@pytest.fixture(scope="session")
def rendered(models_dir) -> dict[str, str]:
    return render_all(models_dir)


@pytest.fixture(scope="session")
def rendered_docs(rendered) -> dict[str, list[dict]]:
    """File name -> the documents in it."""
    return {name: [d.body for d in load_yaml_documents(text, name)] for name, text in rendered.items()}


@pytest.fixture()
def isvc(rendered_docs) -> dict:
    """A fresh copy of one rendered InferenceService (tests may break it)."""
    return yaml.safe_load(yaml.safe_dump(rendered_docs["review-sentiment.yaml"][0]))


@pytest.fixture()
def runtime(rendered_docs) -> dict:
    return yaml.safe_load(yaml.safe_dump(rendered_docs["servingruntime.yaml"][0]))


def model_of(isvc: dict) -> dict:
    return isvc["spec"]["predictor"]["model"]


def set_field(path: str, value):
    """A mutation of an (InferenceService, ServingRuntime) pair: set a dotted path of the InferenceService."""
    def mutate(isvc, runtime):
        target = isvc
        keys = path.split(".")
        for key in keys[:-1]:
            target = target[key]
        target[keys[-1]] = value
    return mutate
