"""Strict offline validation of Kubernetes manifests against the KServe CRD schemas.

There is no cluster to `kubectl apply --validate=strict` against, so this module does what the API
server would do with the CRDs' `openAPIV3Schema` (structural schemas), as strictly:

- an unknown field at any level is an error (strict field validation), and so is a duplicate key
  in the YAML itself;
- types, `format` (int32 / int64 ranges, date-time), `enum`, `pattern`, lengths, bounds, `required`;
- `nullable` (a null where the schema does not allow it is an error: the API server would silently
  drop it, which is never what the author meant);
- `x-kubernetes-int-or-string` (an integer or a string, never a float or a bool);
- `x-kubernetes-list-type: map` keys unique (with the schema's defaults applied, so
  `{containerPort: 8080}` and `{containerPort: 8080, protocol: TCP}` collide) and `set` items unique;
- `metadata` against ObjectMeta (the CRD leaves it to the API server): known fields only, name,
  label and annotation syntax;
- a document whose apiVersion/kind has no schema fails; it never passes silently.

On top of that, `check_semantics` holds the rules the schema cannot express (what the KServe
webhook and kubelet would reject, and this project's own rules): InferenceService name syntax,
exactly one predictor implementation, probes with exactly one handler and an explicit port,
requests <= limits, quantities written as strings, a runtime that exists and supports the model.

Every message names the document and the field: `InferenceService news-topic: spec.predictor...`.
`python -m predictors.k8s_validate manifests/` validates a folder and exits non-zero on errors.
"""

from __future__ import annotations

import argparse
import math
import os
import re
import sys
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any, Iterable

import yaml

ROOT = Path(__file__).resolve().parent.parent
CRD_DIR_ENV = "KSERVE_CRD_DIR"
KUSTOMIZATION_FILES = ("kustomization.yaml", "kustomization.yml", "Kustomization")

INT32 = (-(2**31), 2**31 - 1)
INT64 = (-(2**63), 2**63 - 1)

DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
DNS1123_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
QUALIFIED_NAME = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")
LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
IANA_SVC_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
# resource.Quantity's syntax (the CRDs' pattern for quantities); parse_quantity alone is more lenient.
QUANTITY = re.compile(r"^[+-]?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))(([KMGTPE]i)|[numkMGTPE]|([eE][+-]?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$")
# The KServe webhook's InferenceService name rule (IsvcNameFmt).
ISVC_NAME = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")

PREDICTOR_IMPLEMENTATIONS = (
    "sklearn", "xgboost", "tensorflow", "pytorch", "triton", "onnx", "huggingface", "pmml",
    "lightgbm", "paddle", "model",
)
PROBES = ("startupProbe", "readinessProbe", "livenessProbe")
PROBE_HANDLERS = ("exec", "httpGet", "tcpSocket", "grpc")
DEPLOYMENT_MODES = ("Standard", "Knative", "ModelMesh", "RawDeployment", "Serverless")
AUTOSCALER_CLASSES = ("hpa", "external", "keda", "none")
HPA_METRICS = ("cpu", "memory")
STORAGE_URI_PREFIXES = (
    "gs://", "s3://", "pvc://", "file://", "https://", "http://", "hdfs://", "webhdfs://", "oci://",
    "hf://",
)
# ObjectMeta fields a manifest may set; the others are written by the API server.
OBJECT_META_FIELDS = {
    "name": "string", "generateName": "string", "namespace": "string", "labels": "map",
    "annotations": "map", "finalizers": "list", "ownerReferences": "list",
}
SERVER_SET_META = {
    "uid", "resourceVersion", "generation", "creationTimestamp", "deletionTimestamp",
    "deletionGracePeriodSeconds", "managedFields", "selfLink",
}
KUSTOMIZATION_FIELDS = {
    "apiVersion", "kind", "metadata", "resources", "images", "labels", "commonLabels",
    "commonAnnotations", "namespace", "namePrefix", "nameSuffix", "patches", "replicas",
    "configMapGenerator", "secretGenerator", "generatorOptions", "components", "crds",
    "configurations", "transformers", "generators", "validators", "buildMetadata", "openapi",
    "replacements", "sortOptions", "helmCharts",
}
KUSTOMIZE_IMAGE_FIELDS = {"name", "newName", "newTag", "digest", "tagSuffix"}


class ManifestError(ValueError):
    """A manifest file that cannot even be read as YAML documents."""


@dataclass(frozen=True)
class Document:
    source: str  # file name (and index when a file holds several documents)
    body: Any

    @property
    def kind(self) -> str:
        return self.body.get("kind", "?") if isinstance(self.body, dict) else "?"

    @property
    def name(self) -> str:
        if isinstance(self.body, dict) and isinstance(self.body.get("metadata"), dict):
            return str(self.body["metadata"].get("name", "?"))
        return "?"

    @property
    def label(self) -> str:
        return f"{self.kind} {self.name} ({self.source})"


# ---- YAML reading -------------------------------------------------------------------------------
class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate mapping keys (kubectl's strict decoding does too)."""


def _construct_mapping(loader: _StrictLoader, node: yaml.MappingNode, deep: bool = False) -> dict:
    loader.flatten_mapping(node)
    mapping: dict = {}
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in mapping:
            raise ManifestError(
                f"duplicate field {key!r} at line {key_node.start_mark.line + 1} "
                f"(first at another line of the same mapping)"
            )
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


def load_file(path: Path) -> list[Document]:
    return load_yaml_documents(path.read_text(encoding="utf-8"), path.name)


# ---- schemas ------------------------------------------------------------------------------------
def default_crd_dir() -> Path:
    """$KSERVE_CRD_DIR, else `<repo>/../shared/k8s-schemas/kserve` (CI clones the repo beside shared/)."""
    override = os.environ.get(CRD_DIR_ENV)
    return Path(override) if override else ROOT.parent / "shared" / "k8s-schemas" / "kserve"


class SchemaRegistry:
    """openAPIV3Schema per (apiVersion, kind), read from CustomResourceDefinition files."""

    def __init__(self) -> None:
        self.schemas: dict[tuple[str, str], dict[str, Any]] = {}
        self.scopes: dict[tuple[str, str], str] = {}

    @classmethod
    def from_crd_dir(cls, crd_dir: Path | str | None = None) -> "SchemaRegistry":
        crd_dir = Path(crd_dir) if crd_dir else default_crd_dir()
        files = sorted(crd_dir.glob("*.yaml")) if crd_dir.is_dir() else []
        if not files:
            raise FileNotFoundError(
                f"no CRD files in {crd_dir}; set ${CRD_DIR_ENV} to the folder holding the KServe CRDs "
                f"(serving.kserve.io_*.yaml)"
            )
        registry = cls()
        for path in files:
            for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")):
                if isinstance(doc, dict) and doc.get("kind") == "CustomResourceDefinition":
                    registry.add_crd(doc)
        if not registry.schemas:
            raise FileNotFoundError(f"{crd_dir} holds no CustomResourceDefinition")
        return registry

    def add_crd(self, crd: dict[str, Any]) -> None:
        spec = crd["spec"]
        for version in spec["versions"]:
            if not version.get("served", True):
                continue
            key = (f"{spec['group']}/{version['name']}", spec["names"]["kind"])
            self.schemas[key] = version["schema"]["openAPIV3Schema"]
            self.scopes[key] = spec.get("scope", "Namespaced")

    def known(self) -> list[str]:
        return sorted(f"{api} {kind}" for api, kind in self.schemas)


# ---- structural-schema validation --------------------------------------------------------------
def _join(path: str, key: str) -> str:
    if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_-]*", key):
        return f"{path}.{key}" if path else key
    return f"{path}[{key}]"


def _type_name(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number (float)"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


def _is_integer(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_type(value: Any, expected: str) -> bool:
    if expected == "object":
        return isinstance(value, dict)
    if expected == "array":
        return isinstance(value, list)
    if expected == "string":
        return isinstance(value, str)
    if expected == "integer":
        return _is_integer(value)
    if expected == "number":
        return (isinstance(value, (int, float)) and not isinstance(value, bool)) and math.isfinite(value)
    if expected == "boolean":
        return isinstance(value, bool)
    return True


def _check_format(value: Any, fmt: str, path: str, errors: list[str]) -> None:
    if fmt in ("int32", "int64") and _is_integer(value):
        low, high = INT32 if fmt == "int32" else INT64
        if not low <= value <= high:
            errors.append(f"{path}: {value} is out of range for {fmt} ({low}..{high})")
    elif fmt == "date-time" and isinstance(value, str):
        try:
            datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            errors.append(f"{path}: {value!r} is not an RFC 3339 date-time")


def _value_checks(value: Any, schema: dict[str, Any], path: str, errors: list[str]) -> None:
    """enum, pattern, lengths, bounds: the keywords that apply to a value of any declared type."""
    if "enum" in schema and value not in schema["enum"]:
        errors.append(f"{path}: {value!r} is not one of {schema['enum']}")
    if isinstance(value, str):
        if "pattern" in schema and not re.search(schema["pattern"], value):
            errors.append(f"{path}: {value!r} does not match the pattern {schema['pattern']}")
        if "maxLength" in schema and len(value) > schema["maxLength"]:
            errors.append(f"{path}: longer than {schema['maxLength']} characters")
        if "minLength" in schema and len(value) < schema["minLength"]:
            errors.append(f"{path}: shorter than {schema['minLength']} characters")
    if _check_type(value, "number"):
        if "minimum" in schema:
            low = schema["minimum"]
            if value < low or (schema.get("exclusiveMinimum") and value == low):
                errors.append(f"{path}: {value} is below the minimum {low}")
        if "maximum" in schema:
            high = schema["maximum"]
            if value > high or (schema.get("exclusiveMaximum") and value == high):
                errors.append(f"{path}: {value} is above the maximum {high}")
    if isinstance(value, list):
        if "minItems" in schema and len(value) < schema["minItems"]:
            errors.append(f"{path}: needs at least {schema['minItems']} item(s)")
        if "maxItems" in schema and len(value) > schema["maxItems"]:
            errors.append(f"{path}: has more than {schema['maxItems']} items")
    if isinstance(value, dict):
        if "minProperties" in schema and len(value) < schema["minProperties"]:
            errors.append(f"{path}: needs at least {schema['minProperties']} field(s)")
        if "maxProperties" in schema and len(value) > schema["maxProperties"]:
            errors.append(f"{path}: has more than {schema['maxProperties']} fields")


def validate_value(value: Any, schema: dict[str, Any], path: str, errors: list[str]) -> None:
    """Validate `value` against one structural-schema node, appending `path: message` errors."""
    if value is None:
        if not schema.get("nullable"):
            errors.append(f"{path}: null is not allowed here (the field is not nullable; the API server would drop it)")
        return

    if schema.get("x-kubernetes-int-or-string"):
        if not (_is_integer(value) or isinstance(value, str)):
            errors.append(f"{path}: must be an integer or a string, got {_type_name(value)} {value!r}")
            return
        if _is_integer(value):
            _check_format(value, "int64", path, errors)
        # pattern and friends only constrain the string branch
        if isinstance(value, str):
            _value_checks(value, schema, path, errors)
        return

    for combinator in ("allOf", "anyOf", "oneOf"):
        if combinator in schema:
            results = []
            for sub in schema[combinator]:
                sub_errors: list[str] = []
                validate_value(value, {**sub, "nullable": True}, path, sub_errors)
                results.append(sub_errors)
            passed = sum(1 for r in results if not r)
            if combinator == "allOf" and passed != len(results):
                errors.extend(e for r in results for e in r)
            elif combinator == "anyOf" and passed == 0:
                errors.append(f"{path}: matches none of the allowed forms: " + "; ".join(r[0] for r in results if r))
            elif combinator == "oneOf" and passed != 1:
                errors.append(f"{path}: must match exactly one allowed form, matches {passed}")
    if "not" in schema:
        not_errors: list[str] = []
        validate_value(value, {**schema["not"], "nullable": True}, path, not_errors)
        if not not_errors:
            errors.append(f"{path}: matches a form that is not allowed")

    expected = schema.get("type")
    if expected and not _check_type(value, expected):
        errors.append(f"{path}: must be {'an' if expected[0] in 'aeiou' else 'a'} {expected}, got {_type_name(value)} {value!r}")
        return
    if "format" in schema:
        _check_format(value, schema["format"], path, errors)
    _value_checks(value, schema, path, errors)

    if isinstance(value, dict):
        _validate_object(value, schema, path, errors)
    elif isinstance(value, list):
        _validate_array(value, schema, path, errors)


def _validate_object(value: dict, schema: dict[str, Any], path: str, errors: list[str]) -> None:
    properties = schema.get("properties") or {}
    additional = schema.get("additionalProperties")
    preserve = schema.get("x-kubernetes-preserve-unknown-fields", False)
    for field in schema.get("required") or []:
        if field not in value:
            errors.append(f"{_join(path, field)}: missing required field \"{field}\"")
    for key, item in value.items():
        if not isinstance(key, str):
            errors.append(f"{path}: field names must be strings, got {_type_name(key)} {key!r}")
            continue
        child = _join(path, key)
        if key in properties:
            validate_value(item, properties[key], child, errors)
        elif isinstance(additional, dict):
            validate_value(item, additional, child, errors)
        elif additional is True or preserve:
            continue
        else:
            errors.append(f"{child}: unknown field \"{child}\"")


def _list_map_key(item: Any, keys: list[str], item_schema: dict[str, Any]) -> tuple | None:
    if not isinstance(item, dict):
        return None
    props = item_schema.get("properties") or {}
    return tuple(item.get(k, props.get(k, {}).get("default")) for k in keys)


def _validate_array(value: list, schema: dict[str, Any], path: str, errors: list[str]) -> None:
    item_schema = schema.get("items") or {}
    for i, item in enumerate(value):
        validate_value(item, item_schema, f"{path}[{i}]", errors)
    list_type = schema.get("x-kubernetes-list-type")
    if list_type == "map":
        keys = schema.get("x-kubernetes-list-map-keys") or []
        seen: dict[tuple, int] = {}
        for i, item in enumerate(value):
            key = _list_map_key(item, keys, item_schema)
            if key is None:
                continue
            missing = [k for k, v in zip(keys, key) if v is None]
            if missing:
                errors.append(f"{path}[{i}]: list-map key field(s) {missing} must be set")
                continue
            if key in seen:
                shown = ", ".join(f"{k}={v!r}" for k, v in zip(keys, key))
                errors.append(f"{path}[{i}]: duplicate entry ({shown}) already at {path}[{seen[key]}]")
            else:
                seen[key] = i
    elif list_type == "set":
        seen_items: list[Any] = []
        for i, item in enumerate(value):
            if item in seen_items:
                errors.append(f"{path}[{i}]: duplicate value {item!r} in a set list")
            seen_items.append(item)


# ---- ObjectMeta ---------------------------------------------------------------------------------
def _check_qualified_key(key: Any, path: str, what: str, errors: list[str]) -> None:
    if not isinstance(key, str):
        errors.append(f"{path}: {what} keys must be strings, got {_type_name(key)} {key!r}")
        return
    prefix, _, name = key.rpartition("/")
    if "/" in key:
        if not prefix or len(prefix) > 253 or not DNS1123_SUBDOMAIN.match(prefix):
            errors.append(f"{path}: {what} key {key!r} has an invalid prefix (must be a DNS subdomain)")
    if not name or len(name) > 63 or not QUALIFIED_NAME.match(name):
        errors.append(f"{path}: {what} key {key!r} is not a valid qualified name")


def validate_object_meta(meta: Any, path: str, errors: list[str], namespaced: bool = True) -> None:
    if not isinstance(meta, dict):
        errors.append(f"{path}: must be an object, got {_type_name(meta)}")
        return
    for key, value in meta.items():
        child = _join(path, str(key))
        if key in SERVER_SET_META:
            errors.append(f"{child}: unknown field \"{child}\" (set by the API server, not by a manifest)")
        elif key not in OBJECT_META_FIELDS:
            errors.append(f"{child}: unknown field \"{child}\"")
        elif value is None:
            errors.append(f"{child}: null is not allowed here")
        elif OBJECT_META_FIELDS[key] == "string" and not isinstance(value, str):
            errors.append(f"{child}: must be a string, got {_type_name(value)} {value!r}")
        elif OBJECT_META_FIELDS[key] == "map" and not isinstance(value, dict):
            errors.append(f"{child}: must be an object, got {_type_name(value)}")
        elif OBJECT_META_FIELDS[key] == "list" and not isinstance(value, list):
            errors.append(f"{child}: must be an array, got {_type_name(value)}")
    name = meta.get("name")
    if name is None and not meta.get("generateName"):
        errors.append(f"{path}.name: missing required field \"name\"")
    if isinstance(name, str) and (len(name) > 253 or not DNS1123_SUBDOMAIN.match(name)):
        errors.append(f"{path}.name: {name!r} is not a valid DNS-1123 subdomain (lower case alphanumerics, '-', '.')")
    namespace = meta.get("namespace")
    if isinstance(namespace, str) and (len(namespace) > 63 or not DNS1123_LABEL.match(namespace)):
        errors.append(f"{path}.namespace: {namespace!r} is not a valid DNS-1123 label")
    if namespace is not None and not namespaced:
        errors.append(f"{path}.namespace: the kind is cluster-scoped and takes no namespace")
    labels = meta.get("labels")
    if isinstance(labels, dict):
        for key, value in labels.items():
            child = _join(f"{path}.labels", str(key))
            _check_qualified_key(key, child, "label", errors)
            if not isinstance(value, str):
                errors.append(f"{child}: label values must be strings, got {_type_name(value)} {value!r} (quote it)")
            elif len(value) > 63 or not LABEL_VALUE.match(value):
                errors.append(f"{child}: {value!r} is not a valid label value")
    annotations = meta.get("annotations")
    if isinstance(annotations, dict):
        total = 0
        for key, value in annotations.items():
            child = _join(f"{path}.annotations", str(key))
            _check_qualified_key(key, child, "annotation", errors)
            if not isinstance(value, str):
                errors.append(f"{child}: annotation values must be strings, got {_type_name(value)} {value!r} (quote it)")
            else:
                total += len(str(key)) + len(value)
        if total > 256 * 1024:
            errors.append(f"{path}.annotations: total size {total} exceeds 256 KiB")


# ---- one document against its schema ------------------------------------------------------------
def validate_schema(doc: Document, registry: SchemaRegistry) -> list[str]:
    """Schema errors of one document, each prefixed with the document's kind, name and file."""
    body = doc.body
    if not isinstance(body, dict):
        return [f"{doc.source}: a manifest document must be a mapping, got {_type_name(body)}"]
    errors: list[str] = []
    api_version, kind = body.get("apiVersion"), body.get("kind")
    if not isinstance(api_version, str) or not api_version:
        errors.append("apiVersion: missing required field \"apiVersion\"")
    if not isinstance(kind, str) or not kind:
        errors.append("kind: missing required field \"kind\"")
    if errors:
        return [f"{doc.label}: {e}" for e in errors]
    key = (api_version, kind)
    schema = registry.schemas.get(key)
    if schema is None:
        same_kind = [api for api, k in registry.schemas if k == kind]
        hint = f"; {kind} is served as apiVersion {', '.join(same_kind)}" if same_kind else ""
        return [
            f"{doc.label}: apiVersion/kind: no schema for apiVersion {api_version!r} kind {kind!r}{hint} "
            f"(known: {', '.join(registry.known())})"
        ]
    validate_object_meta(body.get("metadata"), "metadata", errors, registry.scopes.get(key) == "Namespaced")
    root_properties = schema.get("properties") or {}
    for field, value in body.items():
        if field in ("apiVersion", "kind", "metadata"):
            continue
        if field not in root_properties:
            errors.append(f"{field}: unknown field \"{field}\"")
            continue
        validate_value(value, root_properties[field], field, errors)
    for field in schema.get("required") or []:
        if field not in body:
            errors.append(f"{field}: missing required field \"{field}\"")
    return [f"{doc.label}: {e}" for e in errors]


# ---- what the schema cannot say -----------------------------------------------------------------
def _parse_quantity(value: Any) -> Decimal | None:
    from kubernetes.utils import parse_quantity

    if isinstance(value, str) and not QUANTITY.match(value):
        return None
    try:
        return parse_quantity(value)
    except (ValueError, TypeError):
        return None


def check_resources(resources: Any, path: str, errors: list[str], require: Iterable[str] = ()) -> None:
    """Quantities written as strings, parseable, requests <= limits; `require`d resources present."""
    if resources is None:
        if require:
            errors.append(f"{path}: missing; requests and limits for {', '.join(require)} are required")
        return
    if not isinstance(resources, dict):
        return  # the schema reports the type
    for section in ("requests", "limits"):
        values = resources.get(section)
        if values is None:
            if require:
                errors.append(f"{path}.{section}: missing; {section} for {', '.join(require)} are required")
            continue
        if not isinstance(values, dict):
            continue
        for name in require:
            if name not in values:
                errors.append(f"{path}.{section}.{name}: missing; every container needs a {name} {section[:-1]}")
        for name, value in values.items():
            child = _join(f"{path}.{section}", str(name))
            if not isinstance(value, str):
                errors.append(f"{child}: write quantities as strings (\"{value}\"), got {_type_name(value)} {value!r}")
                continue
            if _parse_quantity(value) is None:
                errors.append(f"{child}: {value!r} is not a valid quantity")
    requests, limits = resources.get("requests"), resources.get("limits")
    if isinstance(requests, dict) and isinstance(limits, dict):
        for name, request in requests.items():
            if name in limits:
                low, high = _parse_quantity(request), _parse_quantity(limits[name])
                if low is not None and high is not None and low > high:
                    errors.append(
                        f"{path}.requests.{name}: request {request} is greater than the limit {limits[name]}"
                    )


def check_probe(probe: Any, path: str, errors: list[str], ports: dict[int, str] | None = None) -> None:
    """Exactly one handler, an explicit port in 1..65535 (declared by the container when known)."""
    if not isinstance(probe, dict):
        return
    handlers = [h for h in PROBE_HANDLERS if probe.get(h) is not None]
    if len(handlers) != 1:
        errors.append(
            f"{path}: must have exactly one handler of {list(PROBE_HANDLERS)}, has {handlers or 'none'}"
        )
    for handler in handlers:
        spec = probe[handler]
        if handler == "exec":
            errors.append(f"{path}.exec: an exec probe has no port; use httpGet, tcpSocket or grpc with an explicit port")
            continue
        if not isinstance(spec, dict):
            continue
        port = spec.get("port")
        child = f"{path}.{handler}.port"
        if port is None:
            errors.append(f"{child}: missing; every probe needs an explicit port")
        elif not _is_integer(port):
            errors.append(f"{child}: must be an explicit port number, got {_type_name(port)} {port!r}")
        elif not 1 <= port <= 65535:
            errors.append(f"{child}: {port} is not a port in 1..65535")
        elif ports is not None and port not in ports:
            errors.append(f"{child}: {port} is not one of the container's ports {sorted(ports)}")
    name = path.rsplit(".", 1)[-1]
    if name in ("livenessProbe", "startupProbe") and probe.get("successThreshold", 1) != 1:
        errors.append(f"{path}.successThreshold: must be 1 for a {name}")
    for field in ("periodSeconds", "timeoutSeconds", "failureThreshold", "successThreshold"):
        value = probe.get(field)
        if _is_integer(value) and value < 1:
            errors.append(f"{path}.{field}: must be at least 1, got {value}")
    if _is_integer(probe.get("initialDelaySeconds")) and probe["initialDelaySeconds"] < 0:
        errors.append(f"{path}.initialDelaySeconds: must not be negative")


def container_ports(container: dict[str, Any]) -> dict[int, str]:
    return {
        p["containerPort"]: str(p.get("name", ""))
        for p in container.get("ports") or []
        if isinstance(p, dict) and _is_integer(p.get("containerPort"))
    }


def check_container(container: Any, path: str, errors: list[str], require_resources: bool = False,
                    probe_ports: dict[int, str] | None = None) -> None:
    """Rules kubelet / the API server's pod validation apply that a CRD schema cannot."""
    if not isinstance(container, dict):
        return
    names: dict[str, int] = {}
    numbers: dict[int, int] = {}
    for i, port in enumerate(container.get("ports") or []):
        if not isinstance(port, dict):
            continue
        number, name = port.get("containerPort"), port.get("name")
        child = f"{path}.ports[{i}]"
        if _is_integer(number):
            if not 1 <= number <= 65535:
                errors.append(f"{child}.containerPort: {number} is not a port in 1..65535")
            if number in numbers:
                errors.append(f"{child}.containerPort: duplicate port {number}, already at {path}.ports[{numbers[number]}]")
            numbers.setdefault(number, i)
        if isinstance(name, str):
            if len(name) > 15 or not IANA_SVC_NAME.match(name) or not re.search("[a-z]", name):
                errors.append(f"{child}.name: {name!r} is not a valid port name (IANA_SVC_NAME, at most 15 characters)")
            if name in names:
                errors.append(f"{child}.name: duplicate port name {name!r}, already at {path}.ports[{names[name]}]")
            names.setdefault(name, i)
    env_seen: dict[str, int] = {}
    for i, env in enumerate(container.get("env") or []):
        if isinstance(env, dict) and isinstance(env.get("name"), str):
            if env["name"] in env_seen:
                errors.append(f"{path}.env[{i}].name: duplicate variable {env['name']!r}, already at {path}.env[{env_seen[env['name']]}]")
            env_seen.setdefault(env["name"], i)
            divisor = ((env.get("valueFrom") or {}).get("resourceFieldRef") or {}).get("divisor")
            if divisor is not None and not isinstance(divisor, str):
                errors.append(f"{path}.env[{i}].valueFrom.resourceFieldRef.divisor: write quantities as strings, got {_type_name(divisor)}")
    ports = probe_ports if probe_ports is not None else (container_ports(container) or None)
    for probe in PROBES:
        check_probe(container.get(probe), f"{path}.{probe}", errors, ports)
    check_resources(
        container.get("resources"), f"{path}.resources", errors,
        require=("cpu", "memory") if require_resources else (),
    )


def _implementations(predictor: dict[str, Any]) -> list[str]:
    return [key for key in PREDICTOR_IMPLEMENTATIONS if predictor.get(key) is not None]


def check_inference_service(doc: Document, runtimes: dict[str, dict[str, Any]]) -> list[str]:
    body = doc.body
    errors: list[str] = []
    name = doc.name
    if not ISVC_NAME.match(name):
        errors.append(f"metadata.name: {name!r} must match {ISVC_NAME.pattern} (KServe InferenceService names)")
    if "status" in body:
        errors.append("status: written by the controller; a manifest must not set it")
    annotations = (body.get("metadata") or {}).get("annotations") or {}
    spec = body.get("spec") if isinstance(body.get("spec"), dict) else {}
    predictor = spec.get("predictor") if isinstance(spec.get("predictor"), dict) else None
    if predictor is None:
        return [f"{doc.label}: {e}" for e in errors + ["spec.predictor: missing required field \"predictor\""]]
    implementations = _implementations(predictor)
    custom = bool(predictor.get("containers"))
    if len(implementations) > 1:
        errors.append(f"spec.predictor: exactly one predictor implementation is allowed, found {implementations}")
    elif not implementations and not custom:
        errors.append(
            f"spec.predictor: no predictor implementation; set one of {list(PREDICTOR_IMPLEMENTATIONS)} or containers"
        )

    mode = annotations.get("serving.kserve.io/deploymentMode")
    if mode is not None and mode not in DEPLOYMENT_MODES:
        errors.append(f"metadata.annotations[serving.kserve.io/deploymentMode]: {mode!r} is not one of {list(DEPLOYMENT_MODES)}")
    autoscaler = annotations.get("serving.kserve.io/autoscalerClass")
    if autoscaler is not None and autoscaler not in AUTOSCALER_CLASSES:
        errors.append(f"metadata.annotations[serving.kserve.io/autoscalerClass]: {autoscaler!r} is not one of {list(AUTOSCALER_CLASSES)}")
    metric = predictor.get("scaleMetric")
    target = predictor.get("scaleTarget")
    if mode == "Standard" and autoscaler in (None, "hpa"):
        if metric is not None and metric not in HPA_METRICS:
            errors.append(f"spec.predictor.scaleMetric: {metric!r} is not an HPA metric {list(HPA_METRICS)}")
        if _is_integer(target) and (metric in (None, "cpu")) and not 1 <= target <= 100:
            errors.append(f"spec.predictor.scaleTarget: {target} must be a utilization percentage in 1..100")
    low, high = predictor.get("minReplicas"), predictor.get("maxReplicas")
    if _is_integer(low) and low < 0:
        errors.append(f"spec.predictor.minReplicas: must not be negative, got {low}")
    if _is_integer(low) and _is_integer(high) and high < low:
        errors.append(f"spec.predictor.maxReplicas: {high} is less than minReplicas {low}")
    grace = predictor.get("terminationGracePeriodSeconds")
    if _is_integer(grace) and grace < 0:
        errors.append(f"spec.predictor.terminationGracePeriodSeconds: must not be negative, got {grace}")

    model = predictor.get("model")
    if isinstance(model, dict):
        if model.get("name"):
            errors.append("spec.predictor.model.name: not allowed in a predictor (KServe names the container)")
        uri = model.get("storageUri")
        if isinstance(uri, str) and not uri.startswith(STORAGE_URI_PREFIXES):
            errors.append(f"spec.predictor.model.storageUri: {uri!r} has no supported scheme {list(STORAGE_URI_PREFIXES)}")
        runtime_name = model.get("runtime")
        runtime = runtimes.get(runtime_name) if isinstance(runtime_name, str) else None
        merged: dict[str, Any] | None = None
        if isinstance(runtime_name, str) and runtime is None:
            errors.append(f"spec.predictor.model.runtime: no ServingRuntime {runtime_name!r} among the manifests")
        if runtime is not None:
            errors.extend(_runtime_support_errors(model, runtime))
            from .deploy import merge_runtime_container

            try:
                merged = merge_runtime_container(runtime, model)
            except ValueError as exc:
                errors.append(f"spec.predictor.model: {exc}")
        if merged and _is_integer(grace):
            hook = (merged.get("lifecycle") or {}).get("preStop") or {}
            command = (hook.get("exec") or {}).get("command") or []
            seconds = (hook.get("sleep") or {}).get("seconds")
            if len(command) == 2 and command[0] in ("sleep", "/bin/sleep") and command[1].isdigit():
                seconds = int(command[1])
            if _is_integer(seconds) and seconds >= grace:
                errors.append(
                    f"spec.predictor.terminationGracePeriodSeconds: {grace}s leaves no time after the "
                    f"{seconds}s preStop hook; kubelet would kill the server before it drains"
                )
        probe_ports = container_ports(merged) if merged else None
        check_container(model, "spec.predictor.model", errors, require_resources=True,
                        probe_ports=probe_ports if probe_ports else None)
    for i, container in enumerate(predictor.get("containers") or []):
        check_container(container, f"spec.predictor.containers[{i}]", errors, require_resources=True)
    return [f"{doc.label}: {e}" for e in errors]


def _runtime_support_errors(model: dict[str, Any], runtime: dict[str, Any]) -> list[str]:
    errors = []
    spec = runtime.get("spec") or {}
    model_format = model.get("modelFormat") or {}
    formats = [f for f in spec.get("supportedModelFormats") or [] if isinstance(f, dict)]
    matching = [f for f in formats if f.get("name") == model_format.get("name")]
    if not matching:
        errors.append(
            f"spec.predictor.model.modelFormat.name: {model_format.get('name')!r} is not supported by runtime "
            f"{runtime['metadata']['name']!r} ({[f.get('name') for f in formats]})"
        )
    elif model_format.get("version") and not any(f.get("version") == model_format.get("version") for f in matching):
        errors.append(f"spec.predictor.model.modelFormat.version: {model_format.get('version')!r} is not supported by the runtime")
    protocol = model.get("protocolVersion")
    if protocol and protocol not in (spec.get("protocolVersions") or []):
        errors.append(f"spec.predictor.model.protocolVersion: {protocol!r} is not in the runtime's protocolVersions")
    return errors


def check_serving_runtime(doc: Document) -> list[str]:
    body = doc.body
    errors: list[str] = []
    spec = body.get("spec") if isinstance(body.get("spec"), dict) else {}
    containers = [c for c in spec.get("containers") or [] if isinstance(c, dict)]
    main = [c for c in containers if c.get("name") == "kserve-container"]
    if len(main) != 1:
        errors.append(f"spec.containers: needs exactly one container named \"kserve-container\", has {len(main)}")
    for i, container in enumerate(containers):
        if not container.get("image"):
            errors.append(f"spec.containers[{i}].image: missing; a runtime container needs an image")
        check_container(container, f"spec.containers[{i}]", errors)
    if not spec.get("supportedModelFormats"):
        errors.append("spec.supportedModelFormats: missing; the runtime must name the model formats it serves")
    return [f"{doc.label}: {e}" for e in errors]


def check_semantics(docs: list[Document]) -> list[str]:
    """The rules the schema cannot say, across all documents (an InferenceService needs its runtime)."""
    errors: list[str] = []
    runtimes = {
        d.name: d.body for d in docs
        if isinstance(d.body, dict) and d.kind in ("ServingRuntime", "ClusterServingRuntime")
    }
    seen: dict[tuple[str, str], str] = {}
    for doc in docs:
        if not isinstance(doc.body, dict):
            continue
        key = (doc.kind, doc.name)
        if key in seen:
            errors.append(f"{doc.label}: metadata.name: duplicate {doc.kind} {doc.name!r}, also in {seen[key]}")
        seen.setdefault(key, doc.source)
        if doc.kind == "InferenceService":
            errors.extend(check_inference_service(doc, runtimes))
        elif doc.kind in ("ServingRuntime", "ClusterServingRuntime"):
            errors.extend(check_serving_runtime(doc))
    return errors


# ---- kustomization ------------------------------------------------------------------------------
def validate_kustomization(doc: Document, folder: Path, manifest_files: list[str]) -> list[str]:
    """A Kustomization is not sent to the API server; check it as strictly as kustomize reads it."""
    body = doc.body
    label = f"Kustomization ({doc.source})"
    if not isinstance(body, dict):
        return [f"{label}: must be a mapping"]
    errors: list[str] = []
    if body.get("apiVersion") != "kustomize.config.k8s.io/v1beta1":
        errors.append(f"apiVersion: {body.get('apiVersion')!r} must be 'kustomize.config.k8s.io/v1beta1'")
    if body.get("kind") != "Kustomization":
        errors.append(f"kind: {body.get('kind')!r} must be 'Kustomization'")
    for key in body:
        if key not in KUSTOMIZATION_FIELDS:
            errors.append(f"{key}: unknown field \"{key}\"")
    resources = body.get("resources")
    if not isinstance(resources, list) or not resources:
        errors.append("resources: must list the manifests to apply")
        resources = []
    listed: set[str] = set()
    for i, resource in enumerate(resources):
        if not isinstance(resource, str):
            errors.append(f"resources[{i}]: must be a string, got {_type_name(resource)}")
            continue
        if resource in listed:
            errors.append(f"resources[{i}]: {resource!r} is listed twice")
        listed.add(resource)
        if not (folder / resource).exists():
            errors.append(f"resources[{i}]: {resource!r} does not exist in {folder}")
    for name in manifest_files:
        if name not in listed:
            errors.append(f"resources: {name!r} is in {folder} but not listed, so `kubectl apply -k` would skip it")
    for i, image in enumerate(body.get("images") or []):
        if not isinstance(image, dict):
            errors.append(f"images[{i}]: must be a mapping")
            continue
        for key, value in image.items():
            if key not in KUSTOMIZE_IMAGE_FIELDS:
                errors.append(f"images[{i}].{key}: unknown field \"images[{i}].{key}\"")
            elif not isinstance(value, str):
                errors.append(f"images[{i}].{key}: must be a string, got {_type_name(value)} {value!r}")
        if "name" not in image:
            errors.append(f"images[{i}].name: missing required field \"name\"")
    return [f"{label}: {e}" for e in errors]


# ---- a folder -----------------------------------------------------------------------------------
def validate_documents(docs: list[Document], registry: SchemaRegistry) -> list[str]:
    errors: list[str] = []
    for doc in docs:
        errors.extend(validate_schema(doc, registry))
    errors.extend(check_semantics(docs))
    return errors


def validate_folder(folder: Path | str, registry: SchemaRegistry | None = None) -> tuple[list[Document], list[str]]:
    """Every document under `folder`: (the documents read, every error found)."""
    folder = Path(folder)
    registry = registry or SchemaRegistry.from_crd_dir()
    files = sorted(p for p in folder.iterdir() if p.suffix in (".yaml", ".yml") and p.is_file())
    kustomizations = [p for p in files if p.name in KUSTOMIZATION_FILES]
    manifests = [p for p in files if p.name not in KUSTOMIZATION_FILES]
    errors: list[str] = []
    docs: list[Document] = []
    for path in manifests:
        try:
            docs.extend(load_file(path))
        except ManifestError as exc:
            errors.append(str(exc))
    if not docs and not errors:
        errors.append(f"{folder}: no manifests")
    errors.extend(validate_documents(docs, registry))
    if not kustomizations:
        errors.append(f"{folder}: no kustomization.yaml, so `kubectl apply -k {folder}` cannot work")
    for path in kustomizations:
        try:
            for doc in load_file(path):
                errors.extend(validate_kustomization(doc, folder, [p.name for p in manifests]))
        except ManifestError as exc:
            errors.append(str(exc))
    return docs, errors


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m predictors.k8s_validate", description=__doc__.split("\n\n")[0])
    parser.add_argument("paths", nargs="*", default=[str(ROOT / "manifests")], help="manifest folders or files")
    parser.add_argument("--crd-dir", default=None, help=f"KServe CRD folder (default ${CRD_DIR_ENV} or ../shared/k8s-schemas/kserve)")
    args = parser.parse_args(argv)
    try:
        registry = SchemaRegistry.from_crd_dir(args.crd_dir)
    except FileNotFoundError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    errors: list[str] = []
    count = 0
    for raw in args.paths:
        path = Path(raw)
        if path.is_dir():
            docs, found = validate_folder(path, registry)
        else:
            try:
                docs = load_file(path)
            except ManifestError as exc:
                errors.append(str(exc))
                continue
            found = validate_documents(docs, registry)
        count += len(docs)
        errors.extend(found)
    for error in errors:
        print(f"error: {error}", file=sys.stderr)
    print(f"{count} document(s), {len(errors)} error(s)")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
