"""The one parser of a request path into the model route it names: every middleware and the fast
path ask here instead of keeping a regular expression of their own."""

from __future__ import annotations

from dataclasses import dataclass

V2_MODELS = "/v2/models/"
V1_MODELS = "/v1/models/"
#: Answered by the connection guard before anything else (kubelet liveness probes).
LIVENESS_PATHS = ("/", "/v2/health/live", "/v1/health/live")


@dataclass(frozen=True)
class ModelRoute:
    """A path under /v2/models/<name> or /v1/models/<name>."""

    protocol: str  # "v2_rest" or "v1" (the metrics' protocol label)
    model: str
    version: str | None  # /versions/<v> of a V2 path
    action: str  # V2: what follows the name (and version): "infer", "ready", "config", "" (metadata); V1: the verb after ':'

    @property
    def infer(self) -> bool:
        """An inference request: V2 .../infer or V1 :predict."""
        return self.action == ("infer" if self.protocol == "v2_rest" else "predict")


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
    return None


def infer_route(path: str) -> ModelRoute | None:
    """The route of an inference request (V2 infer, V1 predict), else None."""
    route = model_route(path)
    return route if route is not None and route.infer else None
