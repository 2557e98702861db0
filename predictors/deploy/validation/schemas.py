"""CRD schemas as strict JSON Schemas, validated with `jsonschema`.

The API server validates a custom resource against its CRD's `openAPIV3Schema` (a structural
schema) and, with strict field validation (`kubectl apply --validate=strict`), refuses unknown
fields. Offline, the same is done the way kubeconform does it: each version's schema is converted
once into a JSON Schema that says what the server enforces --

- `additionalProperties: false` wherever `properties` is given and
  `x-kubernetes-preserve-unknown-fields` is not (an unknown field is an error);
- `x-kubernetes-int-or-string` as `anyOf: [integer, string]`;
- `nullable: true` as a `null` type (anywhere else null is an error: the server would drop it);
- OpenAPI's boolean `exclusiveMinimum/Maximum` as JSON Schema's numeric ones;
- formats int32 / int64 as integer ranges, date-time as RFC 3339;
- `metadata` as ObjectMeta (objectmeta.py), `apiVersion` and `kind` as constants --

and a document is validated with jsonschema's Draft 7 validator. Each error names the field path:
`spec.predictor.model.resources.limits.memroy: unknown field`. List-map key uniqueness, which
JSON Schema cannot express, is in listmaps.py.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml
from jsonschema import Draft7Validator, FormatChecker
from jsonschema.exceptions import ValidationError

from .documents import Document, field_path, type_name
from .objectmeta import OBJECT_META, SERVER_SET_FIELDS, scope_errors

CRD_DIR_ENVS = ("PREDICTORS_CRD_DIR", "KSERVE_CRD_DIR")
#: ../shared/k8s-schemas beside the checkout the command runs in (its working directory).
SHARED_CRD_DIR = Path("..") / "shared" / "k8s-schemas"
HOW_TO_PROVIDE = "clone the steering repo's shared/ beside this one, or set PREDICTORS_CRD_DIR"
INT_RANGES = {"int32": (-(2**31), 2**31 - 1), "int64": (-(2**63), 2**63 - 1)}
INT_OR_STRING = [{"type": "integer"}, {"type": "string"}]


class CrdSchemasNotFound(FileNotFoundError):
    """No CustomResourceDefinition under the CRD folder; the message says how to provide them."""


def default_crd_dir() -> Path:
    """$PREDICTORS_CRD_DIR or $KSERVE_CRD_DIR, else ../shared/k8s-schemas beside the checkout."""
    for name in CRD_DIR_ENVS:
        if os.environ.get(name):
            return Path(os.environ[name])
    return SHARED_CRD_DIR.resolve()


def missing_crds_reason(crd_dir: Path | None = None) -> str:
    """One line: where the CRD schemas were looked for and how to provide them."""
    where = crd_dir or default_crd_dir()
    shown = "../shared/k8s-schemas" if where == SHARED_CRD_DIR.resolve() else str(where)
    return f"CRD schemas not found at {shown} ({HOW_TO_PROVIDE})"


# ---- openAPIV3Schema -> strict JSON Schema --------------------------------------------------------
_SCHEMA_MAPS = ("properties", "patternProperties", "definitions")
_SCHEMA_LISTS = ("allOf", "anyOf", "oneOf")
_SCHEMA_ONE = ("items", "additionalProperties", "not", "propertyNames")
_DROPPED = ("description", "nullable", "example", "externalDocs")


_INLINE_FLAGS = re.compile(r"\(\?([ims]+)\)")


def python_pattern(pattern: str) -> str:
    """A Go (RE2) pattern as Python's `re` reads it: inline flags such as `^(?i)(a|b)$` moved to the
    front (Python allows global flags only there)."""
    flags = "".join(sorted(set("".join(_INLINE_FLAGS.findall(pattern)))))
    if not flags or pattern.startswith(f"(?{flags})"):
        return pattern
    return f"(?{flags})" + _INLINE_FLAGS.sub("", pattern)


def strict_schema(node: dict[str, Any]) -> dict[str, Any]:
    """One structural-schema node (and everything under it) as a strict JSON Schema."""
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key in _SCHEMA_MAPS and isinstance(value, dict):
            out[key] = {name: strict_schema(sub) for name, sub in value.items()}
        elif key in _SCHEMA_LISTS and isinstance(value, list):
            out[key] = [strict_schema(sub) for sub in value]
        elif key in _SCHEMA_ONE and isinstance(value, dict):
            out[key] = strict_schema(value)
        elif key in _DROPPED or key.startswith("x-kubernetes-"):
            continue
        elif key == "pattern" and isinstance(value, str):
            out[key] = python_pattern(value)
        else:
            out[key] = value
    for bound, limit in (("exclusiveMinimum", "minimum"), ("exclusiveMaximum", "maximum")):
        if isinstance(node.get(bound), bool):
            if node[bound] and limit in node:
                out[bound] = out.pop(limit)
            else:
                out.pop(bound, None)
    if node.get("x-kubernetes-int-or-string"):
        out.pop("type", None)
        out["anyOf"] = INT_OR_STRING
    if "properties" in node and "additionalProperties" not in node and not node.get("x-kubernetes-preserve-unknown-fields"):
        out["additionalProperties"] = False
    if node.get("nullable"):
        if isinstance(out.get("type"), str):
            out["type"] = [out["type"], "null"]
        if "enum" in out:
            out["enum"] = [*out["enum"], None]
        if "anyOf" in out:
            out["anyOf"] = [*out["anyOf"], {"type": "null"}]
    return out


def document_schema(api_version: str, kind: str, openapi: dict[str, Any]) -> dict[str, Any]:
    """The JSON Schema of a whole document of one kind."""
    schema = strict_schema(openapi)
    properties = schema.setdefault("properties", {})
    properties["apiVersion"] = {"const": api_version}
    properties["kind"] = {"const": kind}
    properties["metadata"] = OBJECT_META
    schema["required"] = sorted({"apiVersion", "kind", "metadata", *schema.get("required", [])})
    schema["additionalProperties"] = False
    return schema


FORMATS = FormatChecker(formats=())


@FORMATS.checks("int32")
def _int32(value: object) -> bool:
    low, high = INT_RANGES["int32"]
    return not isinstance(value, int) or isinstance(value, bool) or low <= value <= high


@FORMATS.checks("int64")
def _int64(value: object) -> bool:
    low, high = INT_RANGES["int64"]
    return not isinstance(value, int) or isinstance(value, bool) or low <= value <= high


@FORMATS.checks("date-time", raises=ValueError)
def _date_time(value: object) -> bool:
    if isinstance(value, str):
        datetime.fromisoformat(value.replace("Z", "+00:00"))
    return True


# ---- the registry -----------------------------------------------------------------------------------
@dataclass
class KindSchema:
    api_version: str
    kind: str
    namespaced: bool
    openapi: dict[str, Any]  # as the CRD gives it (listmaps.py reads its x-kubernetes-* keys)
    _validator: Draft7Validator | None = field(default=None, repr=False)

    @property
    def validator(self) -> Draft7Validator:
        if self._validator is None:
            schema = document_schema(self.api_version, self.kind, self.openapi)
            self._validator = Draft7Validator(schema, format_checker=FORMATS)
        return self._validator


class SchemaRegistry:
    """The served versions of every CustomResourceDefinition under a folder, by (apiVersion, kind)."""

    def __init__(self) -> None:
        self.kinds: dict[tuple[str, str], KindSchema] = {}

    @classmethod
    def from_crd_dir(cls, crd_dir: Path | str | None = None) -> "SchemaRegistry":
        """Every CRD in the YAML files under `crd_dir` (recursively; default: default_crd_dir())."""
        folder = Path(crd_dir) if crd_dir else default_crd_dir()
        registry = cls()
        loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # the KServe CRDs are 2 MB
        for path in sorted(folder.rglob("*.y*ml")) if folder.is_dir() else []:
            for doc in yaml.load_all(path.read_text(encoding="utf-8"), Loader=loader):
                if isinstance(doc, dict) and doc.get("kind") == "CustomResourceDefinition":
                    registry.add_crd(doc)
        if not registry.kinds:
            raise CrdSchemasNotFound(missing_crds_reason(folder if crd_dir else None))
        return registry

    def add_crd(self, crd: dict[str, Any]) -> None:
        spec = crd["spec"]
        for version in spec["versions"]:
            if not version.get("served", True):
                continue
            api_version = f"{spec['group']}/{version['name']}"
            self.kinds[(api_version, spec["names"]["kind"])] = KindSchema(
                api_version, spec["names"]["kind"], spec.get("scope", "Namespaced") == "Namespaced",
                version["schema"]["openAPIV3Schema"],
            )

    def get(self, api_version: str, kind: str) -> KindSchema | None:
        return self.kinds.get((api_version, kind))

    def known(self) -> list[str]:
        return sorted(f"{api} {kind}" for api, kind in self.kinds)


# ---- errors -------------------------------------------------------------------------------------------
def _join(path: str, key: str) -> str:
    tail = field_path([key])
    return f"{path}.{tail}" if path and not tail.startswith("[") else path + tail


def describe(error: ValidationError) -> list[str]:
    """One jsonschema error as `field.path: what is wrong` lines."""
    path = field_path(error.absolute_path)
    where = path or "(document)"
    instance, schema, validator = error.instance, error.schema, error.validator
    if validator == "additionalProperties" and isinstance(instance, dict):
        known = schema.get("properties") or {}
        patterns = list((schema.get("patternProperties") or {}))
        extra = [k for k in instance if k not in known and not any(re.search(p, k) for p in patterns)]
        lines = []
        for key in extra:
            hint = " (written by the API server, not by a manifest)" if path == "metadata" and key in SERVER_SET_FIELDS else ""
            lines.append(f"{_join(path, str(key))}: unknown field{hint}")
        return lines
    if validator == "required" and isinstance(instance, dict):
        return [f"{_join(path, name)}: missing required field" for name in error.validator_value if name not in instance]
    if validator == "type":
        expected = error.validator_value
        wanted = " or ".join(expected) if isinstance(expected, list) else expected
        return [f"{where}: must be {wanted}, got {type_name(instance)} {instance!r}"]
    if validator == "anyOf" and error.validator_value[:2] == INT_OR_STRING:
        return [f"{where}: must be an integer or a string, got {type_name(instance)} {instance!r}"]
    if validator == "format" and error.validator_value in INT_RANGES:
        low, high = INT_RANGES[error.validator_value]
        return [f"{where}: {instance} is out of range for {error.validator_value} ({low}..{high})"]
    if validator == "enum":
        return [f"{where}: {instance!r} is not one of {[v for v in error.validator_value if v is not None]}"]
    if validator == "const":
        return [f"{where}: must be {error.validator_value!r}, got {instance!r}"]
    if "propertyNames" in error.schema_path:
        return [f"{where}: key {instance!r} is not a qualified name ([prefix/]name, name at most 63 characters)"]
    if validator == "pattern":
        return [f"{where}: {instance!r} does not match the pattern {error.validator_value}"]
    return [f"{where}: {error.message}"]


def schema_errors(doc: Document, registry: SchemaRegistry) -> list[str]:
    """What the API server's schema validation would refuse in one document (without its label)."""
    body = doc.body
    if not isinstance(body, dict):
        return [f"a manifest document must be a mapping, got {type_name(body)}"]
    api_version, kind = body.get("apiVersion"), body.get("kind")
    missing = [f"{name}: missing required field" for name, value in (("apiVersion", api_version), ("kind", kind))
               if not isinstance(value, str) or not value]
    if missing:
        return missing
    schema = registry.get(api_version, kind)
    if schema is None:
        served = [api for api, known_kind in registry.kinds if known_kind == kind]
        hint = f"; {kind} is served as apiVersion {', '.join(served)}" if served else ""
        return [f"apiVersion: no schema for apiVersion {api_version!r} kind {kind!r}{hint} "
                f"(known: {', '.join(registry.known())})"]
    errors = [line for error in schema.validator.iter_errors(body) for line in describe(error)]
    return sorted(set(errors), key=errors.index) + scope_errors(body.get("metadata"), schema.namespaced)
