"""Manifest files read as YAML documents, as strictly as kubectl decodes them: a duplicate key in
a mapping is an error, not a silent overwrite."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml


class ManifestError(ValueError):
    """A manifest file that cannot even be read as YAML documents."""


@dataclass(frozen=True)
class Document:
    source: str  # file name (and index when a file holds several documents)
    body: Any

    @property
    def kind(self) -> str:
        return str(self.body.get("kind", "?")) if isinstance(self.body, dict) else "?"

    @property
    def name(self) -> str:
        if isinstance(self.body, dict) and isinstance(self.body.get("metadata"), dict):
            return str(self.body["metadata"].get("name", "?"))
        return "?"

    @property
    def label(self) -> str:
        return f"{self.kind} {self.name} ({self.source})"


def as_document(item: Document | dict[str, Any], index: int = 0) -> Document:
    """A Document as is; a plain mapping (a document rendered in memory) named by its kind and name."""
    if isinstance(item, Document):
        return item
    meta = item.get("metadata") if isinstance(item, dict) else None
    name = meta.get("name") if isinstance(meta, dict) else None
    return Document(f"document {index}" if name is None else f"{item.get('kind')}/{name}", item)


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate mapping keys (kubectl's strict decoding does too)."""


def _construct_mapping(loader: _StrictLoader, node: yaml.MappingNode, deep: bool = False) -> dict:
    loader.flatten_mapping(node)
    mapping: dict = {}
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in mapping:
            raise ManifestError(f"duplicate field {key!r} at line {key_node.start_mark.line + 1}")
        mapping[key] = loader.construct_object(value_node, deep=deep)
    return mapping


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def load_yaml_documents(text: str, source: str) -> list[Document]:
    try:
        bodies = [b for b in yaml.load_all(text, Loader=_StrictLoader) if b is not None]
    except ManifestError as exc:
        raise ManifestError(f"{source}: {exc}") from None
    except yaml.YAMLError as exc:
        raise ManifestError(f"{source}: not valid YAML: {exc}") from None
    if len(bodies) == 1:
        return [Document(source, bodies[0])]
    return [Document(f"{source}#{i}", body) for i, body in enumerate(bodies)]


def load_file(path: Path, source: str | None = None) -> list[Document]:
    return load_yaml_documents(path.read_text(encoding="utf-8"), source or path.name)


def type_name(value: Any) -> str:
    """The JSON type of a value, as error messages name it."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


def field_path(parts: Any) -> str:
    """`spec.predictor.model.env[4].name`; keys that are not plain names in brackets."""
    path = ""
    for part in parts:
        if isinstance(part, int):
            path += f"[{part}]"
        elif str(part).replace("_", "a").replace("-", "a").isalnum() and not str(part)[:1].isdigit():
            path += f".{part}" if path else str(part)
        else:
            path += f"[{part}]"
    return path
