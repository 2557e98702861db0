"""The kustomization as kustomize reads it, and the comparison of a kustomize build with the files."""

from __future__ import annotations

import copy

from predictors.deploy.validation import Document
from predictors.deploy.validation.kustomization import _apply_images, build_differences, kustomization_errors


def _folder(tmp_path, rendered_docs, rendered):
    for name, text in rendered.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    return tmp_path


def test_the_rendered_kustomization_is_clean(tmp_path, rendered, rendered_docs):
    folder = _folder(tmp_path, rendered_docs, rendered)
    kustomization = rendered_docs["kustomization.yaml"][0]
    manifests = [n for n in rendered if "/" not in n and n != "kustomization.yaml"]
    assert kustomization_errors(Document("kustomization.yaml", kustomization), folder, manifests) == []


def test_unlisted_missing_and_unknown_entries_are_named(tmp_path, rendered, rendered_docs):
    folder = _folder(tmp_path, rendered_docs, rendered)
    kustomization = copy.deepcopy(rendered_docs["kustomization.yaml"][0])
    listed = list(kustomization["resources"])
    broken = dict(kustomization, resources=[*listed[:-1], "gone.yaml", "gone.yaml"], imagez=[],
                  images=[{"name": "predictors", "newTag": 2, "tagg": "x"}])
    errors = kustomization_errors(Document("kustomization.yaml", broken), folder, listed)
    expected = [
        f"resources: {listed[-1]!r} is in {folder} but not listed",
        f"resources[{len(listed) - 1}]: 'gone.yaml' does not exist",
        f"resources[{len(listed)}]: 'gone.yaml' is listed twice",
        "imagez: unknown field",
        "images[0].tagg: unknown field",
        "images[0].newTag: must be a string, got integer 2",
    ]
    for text in expected:
        assert any(text in e for e in errors), f"no error says {text!r}:\n" + "\n".join(errors)


def test_build_differences_name_the_document_and_the_field():
    runtime = {"kind": "ServingRuntime", "metadata": {"name": "rt"}, "spec": {"containers": [{"image": "predictors:1"}]}}
    other = copy.deepcopy(runtime)
    other["spec"]["containers"][0]["image"] = "predictors:2"
    extra = {"kind": "ConfigMap", "metadata": {"name": "cm"}}
    assert build_differences([runtime], [runtime]) == []
    assert build_differences([other, extra], [runtime]) == [
        "ConfigMap cm: built by kustomize, in no listed file",
        "ServingRuntime rt: spec.containers[0].image: built 'predictors:2', file says 'predictors:1'",
    ]


def test_image_overrides_apply_like_kustomize():
    doc = {"spec": {"containers": [{"image": "predictors:0.1.0"}, {"image": "other:1"}, {"image": "predictors"}]}}
    _apply_images(doc, [{"name": "predictors", "newName": "registry.example.com/predictors", "newTag": "2"}])
    assert [c["image"] for c in doc["spec"]["containers"]] == [
        "registry.example.com/predictors:2", "other:1", "registry.example.com/predictors:2"]
