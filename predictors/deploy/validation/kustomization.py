"""The kustomization: not sent to the API server, so checked here as kustomize reads it (known
fields, resources that exist and cover every manifest of the folder, image overrides), and, where
kubectl is installed, built for real with `kubectl kustomize` (offline) and compared with the
documents of the files it lists."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import yaml

from .documents import Document, load_file, type_name

KUSTOMIZATION_FILES = ("kustomization.yaml", "kustomization.yml", "Kustomization")
KUSTOMIZATION_FIELDS = {
    "apiVersion", "kind", "metadata", "resources", "images", "labels", "commonLabels",
    "commonAnnotations", "namespace", "namePrefix", "nameSuffix", "patches", "replicas",
    "configMapGenerator", "secretGenerator", "generatorOptions", "components", "crds",
    "configurations", "transformers", "generators", "validators", "buildMetadata", "openapi",
    "replacements", "sortOptions", "helmCharts",
}
IMAGE_FIELDS = {"name", "newName", "newTag", "digest", "tagSuffix"}
KUBECTL_TIMEOUT_SECONDS = 60


def kustomization_errors(doc: Document, folder: Path, manifest_files: list[str]) -> list[str]:
    """Errors of one kustomization in `folder`, whose manifest files are `manifest_files`."""
    body = doc.body
    label = f"Kustomization ({doc.source})"
    if not isinstance(body, dict):
        return [f"{label}: must be a mapping"]
    errors = []
    if body.get("apiVersion") != "kustomize.config.k8s.io/v1beta1":
        errors.append(f"apiVersion: {body.get('apiVersion')!r} must be 'kustomize.config.k8s.io/v1beta1'")
    if body.get("kind") != "Kustomization":
        errors.append(f"kind: {body.get('kind')!r} must be 'Kustomization'")
    errors += [f"{key}: unknown field" for key in body if key not in KUSTOMIZATION_FIELDS]
    resources = body.get("resources")
    if not isinstance(resources, list) or not resources:
        errors.append("resources: must list the manifests to apply")
        resources = []
    listed: set[str] = set()
    for i, resource in enumerate(resources):
        if not isinstance(resource, str):
            errors.append(f"resources[{i}]: must be a string, got {type_name(resource)}")
            continue
        if resource in listed:
            errors.append(f"resources[{i}]: {resource!r} is listed twice")
        listed.add(resource)
        if not (folder / resource).exists():
            errors.append(f"resources[{i}]: {resource!r} does not exist in {folder}")
    errors += [f"resources: {name!r} is in {folder} but not listed, so `kubectl apply -k` would skip it"
               for name in manifest_files if name not in listed]
    for i, image in enumerate(body.get("images") or []):
        if not isinstance(image, dict):
            errors.append(f"images[{i}]: must be a mapping")
            continue
        errors += [f"images[{i}].{key}: unknown field" for key in image if key not in IMAGE_FIELDS]
        errors += [f"images[{i}].{key}: must be a string, got {type_name(value)} {value!r}"
                   for key, value in image.items() if key in IMAGE_FIELDS and not isinstance(value, str)]
        if "name" not in image:
            errors.append(f"images[{i}].name: missing required field")
    return [f"{label}: {e}" for e in errors]


def kubectl_kustomize(folder: Path) -> list[dict[str, Any]] | None:
    """The documents `kubectl kustomize folder` builds (offline), or None when kubectl is not installed.
    Raises RuntimeError with kubectl's message when the build fails."""
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        return None
    built = subprocess.run([kubectl, "kustomize", str(folder)], capture_output=True, text=True,
                           timeout=KUBECTL_TIMEOUT_SECONDS)
    if built.returncode != 0:
        raise RuntimeError(f"`kubectl kustomize {folder}` failed: {built.stderr.strip()}")
    return [d for d in yaml.safe_load_all(built.stdout) if d is not None]


def _key(body: dict[str, Any]) -> tuple[str, str]:
    return str(body.get("kind")), str((body.get("metadata") or {}).get("name"))


def _first_difference(a: Any, b: Any, path: str = "") -> str:
    if isinstance(a, dict) and isinstance(b, dict):
        for key in sorted(set(a) | set(b), key=str):
            if a.get(key) != b.get(key):
                return _first_difference(a.get(key), b.get(key), f"{path}.{key}" if path else str(key))
    elif isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        for i, (x, y) in enumerate(zip(a, b)):
            if x != y:
                return _first_difference(x, y, f"{path}[{i}]")
    return f"{path or '(document)'}: built {a!r}, file says {b!r}"


def build_differences(built: list[dict[str, Any]], expected: list[dict[str, Any]]) -> list[str]:
    """What differs between the documents kustomize built and the ones expected, by kind and name."""
    built_by_key = {_key(d): d for d in built}
    expected_by_key = {_key(d): d for d in expected}
    problems = [f"{kind} {name}: in the files, missing from the kustomize build"
                for kind, name in expected_by_key if (kind, name) not in built_by_key]
    problems += [f"{kind} {name}: built by kustomize, in no listed file"
                 for kind, name in built_by_key if (kind, name) not in expected_by_key]
    for key, body in expected_by_key.items():
        if key in built_by_key and built_by_key[key] != body:
            problems.append(f"{key[0]} {key[1]}: {_first_difference(built_by_key[key], body)}")
    return problems


def kubectl_build_errors(folder: Path) -> list[str] | None:
    """`kubectl kustomize folder` compared with the documents of the files its kustomization lists
    (the image override applied to them as kustomize applies it); None when kubectl is missing."""
    kustomization = next((folder / n for n in KUSTOMIZATION_FILES if (folder / n).is_file()), None)
    if kustomization is None:
        return [f"{folder}: no kustomization to build"]
    try:
        built = kubectl_kustomize(folder)
    except (RuntimeError, subprocess.TimeoutExpired) as exc:
        return [str(exc)]
    if built is None:
        return None
    spec = yaml.safe_load(kustomization.read_text(encoding="utf-8")) or {}
    expected = [d.body for r in spec.get("resources") or [] if (folder / r).is_file() for d in load_file(folder / r)]
    for body in expected:
        _apply_images(body, spec.get("images") or [])
    return [f"kubectl kustomize {folder}: {p}" for p in build_differences(built, expected)]


def _apply_images(value: Any, images: list[dict[str, Any]]) -> None:
    """kustomize's `images:` transformer on `image:` fields (name match, newName / newTag / digest)."""
    if isinstance(value, list):
        for item in value:
            _apply_images(item, images)
        return
    if not isinstance(value, dict):
        return
    for key, item in value.items():
        if key == "image" and isinstance(item, str):
            name, _, tag = item.partition("@")[0].partition(":")
            for image in images:
                if image.get("name") == name:
                    new, new_tag = image.get("newName", name), image.get("newTag", tag)
                    value[key] = f"{new}@{image['digest']}" if image.get("digest") else new + (f":{new_tag}" if new_tag else "")
        else:
            _apply_images(item, images)
