"""The HTTP routes beyond kserve's: readiness that says what is missing, version routes, the
repository API (load / unload / index / memory) and per-model config. Registered before kserve's
V1/V2 routes, so these answer first."""

from __future__ import annotations

import json
import logging
from typing import Any, Union

from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse
from kserve.protocol.rest.v2_datamodels import InferenceRequest
from kserve.protocol.rest.v2_endpoints import V2Endpoints

from ..errors import BadRequest, NoExplainer
from ..repository import PredictorRepository, versioned_key
from .error_handlers import error_response

logger = logging.getLogger("kserve.predictors")


def register_routes(app: FastAPI, repository: PredictorRepository, dataplane: Any, is_stopping: Any) -> None:
    """Added before kserve registers its own routes, so these answer first."""
    v2 = V2Endpoints(dataplane=dataplane, model_repository_extension=None)

    async def server_ready(request: Request) -> JSONResponse:
        if is_stopping():
            return error_response(request, 503, "shutting down")
        missing = repository.not_ready()
        if not repository.ready():
            detail = "; ".join(f"{name}: {why}" for name, why in sorted(missing.items())) or "no model is loaded"
            return JSONResponse(status_code=503, content={"ready": False, "error": f"not ready: {detail}", "models": missing})
        return JSONResponse({"ready": True})

    async def model_metadata(model_name: str, model_version: str | None = None) -> dict[str, Any]:
        repository.check_servable(model_name, model_version)
        return await dataplane.model_metadata(versioned_key(model_name, model_version) if model_version else model_name)

    async def infer(
        raw_request: Request, raw_response: Response, model_name: str,
        request_body: Union[InferenceRequest, bytes], model_version: str | None = None,
    ) -> Any:
        """kserve answers `?model_version=` with 501; here it reaches that version."""
        repository.check_servable(model_name, model_version)
        key = versioned_key(model_name, model_version) if model_version else model_name
        return await v2.infer(raw_request, raw_response, key, request_body)

    async def model_ready(model_name: str, model_version: str | None = None) -> dict[str, Any]:
        """Ready: requests will be answered. A lazy model not in memory is ready (its first request
        loads it) and says so in `state`; probing it loads nothing."""
        repository.check_servable(model_name, model_version)
        entry = repository.entries[model_name]
        state = repository.state(entry)
        return {"name": model_name, "ready": True, **({"version": model_version} if model_version else {}),
                **({"state": state, "reason": repository.reason(entry)} if state != "READY" else {})}

    async def versioned_ready(model_name: str, model_version: str) -> dict[str, Any]:
        return await model_ready(model_name, model_version)

    async def versioned_metadata(model_name: str, model_version: str) -> dict[str, Any]:
        repository.check_servable(model_name, model_version)
        return await dataplane.model_metadata(versioned_key(model_name, model_version))

    async def versioned_infer(
        raw_request: Request, raw_response: Response, model_name: str, model_version: str,
        request_body: Union[InferenceRequest, bytes],
    ) -> Any:
        repository.check_servable(model_name, model_version)
        return await v2.infer(raw_request, raw_response, versioned_key(model_name, model_version), request_body)

    async def model_config(model_name: str, model_version: str | None = None) -> dict[str, Any]:
        entry = repository.entries.get(model_name)
        if entry is None:
            repository.resolve(model_name)  # raises the 404 naming the models
        model = repository.get_model(versioned_key(model_name, model_version) if model_version else model_name)
        described = model.describe() if model is not None else {"name": model_name, "ready": False}
        return {**described, **repository.describe(entry),
                "versions": [row for row in repository.index() if row["name"] == model_name]}

    async def versioned_config(model_name: str, model_version: str) -> dict[str, Any]:
        return await model_config(model_name, model_version)

    async def repository_index() -> list[dict[str, Any]]:
        return repository.index()

    async def repository_memory() -> dict[str, Any]:
        return repository.memory()

    async def repository_load(model_name: str, request: Request) -> dict[str, Any]:
        """Triton's load, with `{"parameters": {"storage_uri": "s3://..."}}` to fetch the model."""
        storage_uri = load_parameters(await request.body())
        result = await repository.request_load(model_name, storage_uri)
        return {"name": model_name, "load": True, **result}

    async def repository_unload(model_name: str, request: Request) -> dict[str, Any]:
        load_parameters(await request.body(), allowed=())
        result = await repository.request_unload(model_name)
        return {"name": model_name, "unload": True, **result}

    async def explain(model_name: str) -> None:
        repository.check_servable(model_name)  # 404 / 503 for a model that does not serve
        raise NoExplainer(f"model '{model_name}' has no explainer; it answers :predict only")

    app.add_api_route("/v2/health/ready", server_ready, methods=["GET"])
    app.add_api_route("/v1/models/{model_name}:explain", explain, methods=["POST"])
    app.add_api_route("/v2/models/{model_name}", model_metadata, methods=["GET"])
    app.add_api_route("/v2/models/{model_name}/infer", infer, methods=["POST"], response_model=None)
    app.add_api_route("/v2/models/{model_name}/ready", model_ready, methods=["GET"])
    app.add_api_route("/v2/models/{model_name}/versions/{model_version}/ready", versioned_ready, methods=["GET"])
    app.add_api_route("/v2/models/{model_name}/versions/{model_version}", versioned_metadata, methods=["GET"])
    app.add_api_route("/v2/models/{model_name}/versions/{model_version}/infer", versioned_infer, methods=["POST"], response_model=None)
    app.add_api_route("/v2/models/{model_name}/config", model_config, methods=["GET"])
    app.add_api_route("/v2/models/{model_name}/versions/{model_version}/config", versioned_config, methods=["GET"])
    app.add_api_route("/v2/repository/index", repository_index, methods=["POST", "GET"])
    app.add_api_route("/v2/repository/memory", repository_memory, methods=["GET"])
    # `:path` so that names with encoded separators reach the handler and get a 400, not a 404.
    app.add_api_route("/v2/repository/models/{model_name:path}/load", repository_load, methods=["POST"])
    app.add_api_route("/v2/repository/models/{model_name:path}/unload", repository_unload, methods=["POST"])


#: The parameters a repository load takes (Triton's load takes `config` and files; this server reads
#: models from folders or storage URIs).
LOAD_PARAMETERS = ("storage_uri",)


def load_parameters(body: bytes, allowed: tuple[str, ...] = LOAD_PARAMETERS) -> str | None:
    """The storage_uri of a load body (empty, `{}`, or `{"parameters": {"storage_uri": "..."}}`), or
    BadRequest naming what is wrong with it."""
    if not body.strip():
        return None
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadRequest(f"the body is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise BadRequest('the body must be a JSON object such as {"parameters": {"storage_uri": "s3://bucket/model"}}')
    unknown = sorted(set(data) - {"parameters"})
    if unknown:
        raise BadRequest(f"unknown key(s) {unknown} in the body; it takes only 'parameters'")
    parameters = data.get("parameters") or {}
    if not isinstance(parameters, dict):
        raise BadRequest("'parameters' must be a JSON object")
    unknown = sorted(set(parameters) - set(allowed))
    if unknown:
        raise BadRequest(f"unknown parameter(s) {unknown}; this call takes {list(allowed) or 'none'}")
    uri = parameters.get("storage_uri")
    if uri is not None and not isinstance(uri, str):
        raise BadRequest(f"parameters.storage_uri must be a string such as s3://bucket/models/name, got {uri!r}"[:200])
    return uri
