"""The one parser of a request path into the model route it names: every middleware and the fast
path ask here instead of keeping a regular expression of their own."""

from __future__ import annotations

from dataclasses import dataclass

V2_MODELS = "/v2/models/"
V1_MODELS = "/v1/models/"
#: Where the OpenAI-compatible API answers: KServe's own prefix first, then the bare one the OpenAI
#: clients' default base URLs end in. `/v1/models` is KServe V1's model list as well (routes.py).
OPENAI_PREFIXES = ("/openai/v1", "/v1")
OPENAI_EMBEDDINGS = "embeddings"
OPENAI_MODELS = "models"
#: Answered by the connection guard before anything else (kubelet liveness probes).
LIVENESS_PATHS = ("/", "/v2/health/live", "/v1/health/live")


@dataclass(frozen=True)
class ModelRoute:
    """A path under /v2/models/<name> or /v1/models/<name>, or an OpenAI inference path."""

    protocol: str  # "v2_rest", "v1" or "openai" (the metrics' protocol label)
    model: str | None  # None for OpenAI routes: their body names the model
    version: str | None  # /versions/<v> of a V2 path
    action: str  # V2: what follows the name (and version): "infer", "ready", "config", "" (metadata); V1: the verb after ':'; OpenAI: the path after the prefix

    @property
    def infer(self) -> bool:
        """An inference request: V2 .../infer, V1 :predict or OpenAI embeddings."""
        return self.action == {"v2_rest": "infer", "v1": "predict", "openai": OPENAI_EMBEDDINGS}[self.protocol]


def openai_action(path: str) -> str | None:
    """What follows an OpenAI prefix ("embeddings", "models", "models/<id>"), or None when the path
    is not under one."""
    for prefix in OPENAI_PREFIXES:
        if path.startswith(prefix + "/"):
            return path[len(prefix) + 1:]
    return None


def model_route(path: str) -> ModelRoute | None:
    """The model route `path` names, or None when it names none (or an empty model name)."""
    if path.startswith(V2_MODELS):
        name, *rest = path[len(V2_MODELS):].split("/")
        version = None
        if len(rest) >= 2 and rest[0] == "versions":
            version, rest = rest[1], rest[2:]
            if not version:
                return None
        return ModelRoute("v2_rest", name, version, "/".join(rest)) if name else None
    if path.startswith(V1_MODELS):
        tail = path[len(V1_MODELS):]
        if "/" in tail:
            return None
        name, _, verb = tail.partition(":")
        return ModelRoute("v1", name, None, verb) if name else None
    if openai_action(path) == OPENAI_EMBEDDINGS:
        return ModelRoute("openai", None, None, OPENAI_EMBEDDINGS)
    return None


def infer_route(path: str) -> ModelRoute | None:
    """The route of an inference request (V2 infer, V1 predict, OpenAI embeddings), else None."""
    route = model_route(path)
    return route if route is not None and route.infer else None
