"""`metadata` (ObjectMeta) as a strict JSON Schema. A CRD's schema says only `metadata: {type:
object}` and leaves the rest to the API server; this is what the server enforces on what a
manifest may set: known fields only (the server-written ones are refused), name and namespace
syntax, label and annotation keys that are qualified names, string values."""

from __future__ import annotations

from typing import Any

DNS1123_LABEL = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
DNS1123_SUBDOMAIN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
# [prefix/]name: the prefix a DNS subdomain, the name at most 63 alphanumerics, '-', '_', '.'
QUALIFIED_KEY = (
    r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?"
    r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$"
)
LABEL_VALUE = r"^(([A-Za-z0-9][-A-Za-z0-9_.]{0,61})?[A-Za-z0-9])?$"

#: Written by the API server; a manifest that sets one is wrong even though the server would ignore it.
SERVER_SET_FIELDS = (
    "uid", "resourceVersion", "generation", "creationTimestamp", "deletionTimestamp",
    "deletionGracePeriodSeconds", "managedFields", "selfLink",
)

OBJECT_META: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["name"],
    "properties": {
        "name": {"type": "string", "maxLength": 253, "pattern": DNS1123_SUBDOMAIN},
        "generateName": {"type": "string"},
        "namespace": {"type": "string", "maxLength": 63, "pattern": DNS1123_LABEL},
        "labels": {
            "type": "object",
            "propertyNames": {"pattern": QUALIFIED_KEY, "maxLength": 317},
            "additionalProperties": {"type": "string", "pattern": LABEL_VALUE},
        },
        "annotations": {
            "type": "object",
            "propertyNames": {"pattern": QUALIFIED_KEY, "maxLength": 317},
            "additionalProperties": {"type": "string"},
        },
        "finalizers": {"type": "array", "items": {"type": "string"}},
        "ownerReferences": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["apiVersion", "kind", "name", "uid"],
                "properties": {
                    "apiVersion": {"type": "string"}, "kind": {"type": "string"}, "name": {"type": "string"},
                    "uid": {"type": "string"}, "controller": {"type": "boolean"},
                    "blockOwnerDeletion": {"type": "boolean"},
                },
                "additionalProperties": False,
            },
        },
    },
}


def scope_errors(metadata: Any, namespaced: bool) -> list[str]:
    """A cluster-scoped kind takes no namespace."""
    if not namespaced and isinstance(metadata, dict) and "namespace" in metadata:
        return ["metadata.namespace: the kind is cluster-scoped and takes no namespace"]
    return []
