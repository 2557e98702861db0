"""`x-kubernetes-list-type: map` and `set`: the list-uniqueness rules of a structural schema that
JSON Schema cannot express (its `uniqueItems` compares whole items, not their key fields).

A `map` list's items are identified by their `x-kubernetes-list-map-keys`, with the schema's
defaults applied first, so `{containerPort: 8080}` and `{containerPort: 8080, protocol: TCP}`
are the same entry (the API server refuses the pair; a client-side apply would merge them)."""

from __future__ import annotations

from typing import Any

from .documents import field_path


def _key_of(item: dict[str, Any], keys: list[str], item_schema: dict[str, Any]) -> tuple[Any, ...]:
    properties = item_schema.get("properties") or {}
    return tuple(item.get(k, (properties.get(k) or {}).get("default")) for k in keys)


def list_map_errors(value: Any, schema: dict[str, Any], path: tuple[Any, ...] = ()) -> list[str]:
    """Duplicate list-map keys and set items in `value`, walking `schema` (a CRD openAPIV3Schema)."""
    errors: list[str] = []
    if isinstance(value, dict):
        properties = schema.get("properties") or {}
        additional = schema.get("additionalProperties")
        for key, item in value.items():
            child = properties.get(key) or (additional if isinstance(additional, dict) else None)
            if child:
                errors.extend(list_map_errors(item, child, (*path, key)))
    elif isinstance(value, list):
        item_schema = schema.get("items") or {}
        for i, item in enumerate(value):
            errors.extend(list_map_errors(item, item_schema, (*path, i)))
        where = field_path(path)
        list_type = schema.get("x-kubernetes-list-type")
        if list_type == "map":
            keys = list(schema.get("x-kubernetes-list-map-keys") or [])
            seen: dict[tuple[Any, ...], int] = {}
            for i, item in enumerate(value):
                if not isinstance(item, dict):
                    continue
                key = _key_of(item, keys, item_schema)
                unset = [k for k, v in zip(keys, key) if v is None]
                if unset:
                    errors.append(f"{where}[{i}]: list-map key field(s) {unset} must be set")
                elif key in seen:
                    shown = ", ".join(f"{k}={v!r}" for k, v in zip(keys, key))
                    errors.append(f"{where}[{i}]: duplicate entry ({shown}), already at {where}[{seen[key]}]")
                else:
                    seen[key] = i
        elif list_type == "set":
            for i, item in enumerate(value):
                if item in value[:i]:
                    errors.append(f"{where}[{i}]: duplicate value {item!r} in a set list")
    return errors
