"""Strict offline validation of Kubernetes manifests, as the API server, the KServe webhook and
kubelet would judge them, without a cluster:

- schemas.py: every CRD under a folder (KServe, prometheus-operator...) as a strict JSON Schema,
  validated with jsonschema; errors name the field path;
- listmaps.py: `x-kubernetes-list-type` map keys and set items unique;
- objectmeta.py: `metadata` as the API server checks it;
- kserve_rules.py: what the KServe webhook, Knative and pod validation add;
- kustomization.py: the kustomization, and the real `kubectl kustomize` build compared with the files.

This package checks the renderer's output and so never imports it (render, sizing, merge).

Public API (used by `python -m predictors manifests validate` and by other renderers):

    registry = SchemaRegistry.from_crd_dir()          # or from_crd_dir(path); CrdSchemasNotFound says how to fix
    errors = validate_documents(docs, registry)       # docs: dicts or Documents -> list of messages
    docs, errors = validate_folder(Path("manifests"), registry)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable

from .documents import Document, ManifestError, as_document, load_file, load_yaml_documents
from .kserve_rules import RUNTIME_KINDS, rule_errors
from .kustomization import KUSTOMIZATION_FILES, kubectl_build_errors, kustomization_errors
from .listmaps import list_map_errors
from .schemas import CrdSchemasNotFound, SchemaRegistry, default_crd_dir, missing_crds_reason, schema_errors

__all__ = [
    "CrdSchemasNotFound", "Document", "ManifestError", "SchemaRegistry", "default_crd_dir", "kubectl_build_errors",
    "load_file", "load_yaml_documents", "missing_crds_reason", "validate_documents", "validate_folder",
]


def validate_documents(docs: Iterable[Document | dict[str, Any]], registry: SchemaRegistry,
                       context: Iterable[Document | dict[str, Any]] = ()) -> list[str]:
    """Every error in `docs`, each naming the document and the field. `context` documents (such
    as the ServingRuntimes an example refers to) are looked up by the rules but not validated."""
    docs = [as_document(d, i) for i, d in enumerate(docs)]
    errors: list[str] = []
    for doc in docs:
        found = schema_errors(doc, registry)
        schema = registry.get(doc.body.get("apiVersion"), doc.body.get("kind")) if isinstance(doc.body, dict) else None
        if schema is not None:
            found += list_map_errors(doc.body, schema.openapi)
        errors += [f"{doc.label}: {e}" for e in found]
    return errors + rule_errors(docs, [as_document(d, i) for i, d in enumerate(context)])


def validate_folder(folder: Path | str, registry: SchemaRegistry | None = None) -> tuple[list[Document], list[str]]:
    """Every manifest under `folder` (sub-folders too): (the documents read, every error found).

    Each directory is validated on its own (an example may reuse a name of the folder above),
    with the ServingRuntimes of the whole tree as context; a directory's kustomization must list
    its manifests, and the top folder must have one.
    """
    folder = Path(folder)
    registry = registry or SchemaRegistry.from_crd_dir()
    files = sorted(p for p in folder.rglob("*.y*ml") if p.is_file())
    by_dir: dict[Path, list[Path]] = {}
    for path in files:
        by_dir.setdefault(path.parent, []).append(path)
    errors: list[str] = []
    docs_by_dir: dict[Path, list[Document]] = {}
    for directory, paths in sorted(by_dir.items()):
        docs_by_dir[directory] = []
        for path in paths:
            if path.name in KUSTOMIZATION_FILES:
                continue
            try:
                docs_by_dir[directory] += load_file(path, str(path.relative_to(folder)))
            except ManifestError as exc:
                errors.append(str(exc))
    everything = [d for docs in docs_by_dir.values() for d in docs]
    runtimes = [d for d in everything if d.kind in RUNTIME_KINDS]
    if not everything and not errors:
        errors.append(f"{folder}: no manifests")
    for directory, docs in docs_by_dir.items():
        errors += validate_documents(docs, registry, context=[r for r in runtimes if r not in docs])
        kustomizations = [p for p in by_dir[directory] if p.name in KUSTOMIZATION_FILES]
        manifests = [p.name for p in by_dir[directory] if p.name not in KUSTOMIZATION_FILES]
        if directory == folder and not kustomizations:
            errors.append(f"{folder}: no kustomization.yaml, so `kubectl apply -k {folder}` cannot work")
        for path in kustomizations:
            try:
                for doc in load_file(path, str(path.relative_to(folder))):
                    errors += kustomization_errors(doc, directory, manifests)
            except ManifestError as exc:
                errors.append(str(exc))
    return everything, errors
