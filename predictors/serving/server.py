"""kserve.ModelServer wired for honest state: models load in the background after the ports open,
liveness answers meanwhile, and readiness says yes only once every model answered a warm-up request.

Three small subclasses of kserve's own parts do this:
- HonestDataPlane: server readiness = all registered models ready; a request to a model that is
  still loading gets 503 instead of kserve's synchronous `model.load()` on the event loop; a body
  kserve cannot decode is a 400, never a 500.
- FolderModelRepository: the repository extension's load/unload work on model folders (kserve's
  `ModelRepository.load` is a stub).
- PredictorServer: starts the background loader and adds `/v2/models/<name>/config`, the place
  (as in Triton) where labels, backend and batching settings are discoverable.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from pathlib import Path
from typing import Any

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from kserve import ModelServer
from kserve.errors import InvalidInput, ModelNotFound, ModelNotReady
from kserve.model_repository import ModelRepository
from kserve.protocol.dataplane import DataPlane

from ..model import ModelConfig, ModelConfigError
from ..tasks import load_model_config
from . import codec
from .limits import BodyLimit
from .predictor import TextPredictor

# A child of kserve's logger, so lines share its handler and format (kserve configures no root handler).
logger = logging.getLogger("kserve.predictors")


class HonestDataPlane(DataPlane):
    async def ready(self) -> bool:
        models = self.model_registry.get_models()
        if not models:
            return False
        for name in models:
            if not await self.model_registry.is_model_ready(name):
                return False
        return True

    async def get_model(self, name: str):
        model = self.model_registry.get_model(name)
        if model is None:
            raise ModelNotFound(name)
        if not await self.model_registry.is_model_ready(name):
            detail = getattr(model, "load_error", None) or "still loading"
            raise ModelNotReady(name, detail)
        return model

    async def model_metadata(self, model_name: str) -> dict:
        metadata = await super().model_metadata(model_name)
        model = self.model_registry.get_model(model_name)
        if isinstance(model, TextPredictor):
            metadata["platform"] = model.platform
            metadata["versions"] = [model.config.version]
        return metadata

    def decode(self, body, headers, protocol_version: str = "v1", model_name: str | None = None):
        if protocol_version == "v2":  # REST V2 JSON or binary-extension bodies, checked strictly
            return codec.decode_rest_v2(body, headers, model_name), {}
        try:
            return super().decode(body, headers, protocol_version, model_name)
        except InvalidInput:
            raise
        except Exception as exc:  # malformed binary extension bodies, bad UTF-8, missing keys
            raise InvalidInput(f"cannot decode the request body: {type(exc).__name__}: {exc}") from None


class FolderModelRepository(ModelRepository):
    """Model folders by name; loads run on a background thread so start-up never blocks the ports."""

    def __init__(self, models_dir: str | Path, configs: list[tuple[str, ModelConfig]] | None = None) -> None:
        super().__init__(str(models_dir))
        self._configs: dict[str, ModelConfig] = dict(configs or [])

    def register(self, config: ModelConfig, name: str | None = None) -> TextPredictor:
        model = TextPredictor(config, name)
        self._configs[model.name] = config
        self.update(model)
        return model

    async def load(self, name: str) -> bool:
        """Repository extension load (`POST /v2/repository/models/<name>/load`): (re)read the folder
        and load it on a worker thread, so the event loop keeps answering probes meanwhile."""
        config = self._configs.get(name)
        try:
            config = load_model_config(Path(self.models_dir) / name, name) if config is None else config
        except ModelConfigError as exc:
            raise ModelNotFound(name) from exc
        model = self.get_model(name)
        if not isinstance(model, TextPredictor):
            model = self.register(config, name)
        return await asyncio.to_thread(_load_logged, model)

    def load_in_background(self) -> threading.Thread:
        models = [m for m in self.get_models().values() if isinstance(m, TextPredictor)]

        def load_all() -> None:
            for model in models:
                _load_logged(model)

        thread = threading.Thread(target=load_all, name="model-loader", daemon=True)
        thread.start()
        return thread


def _load_logged(model: TextPredictor) -> bool:
    try:
        return model.load()
    except Exception as exc:  # one broken model must not stop the others
        model.load_error = f"failed to load from {model.config.path}: {type(exc).__name__}: {exc}"
        logger.error("model %s %s", model.name, model.load_error)
        return False


async def _request_validation_handler(_: Request, exc: RequestValidationError) -> JSONResponse:
    problems = "; ".join(
        f"{'.'.join(str(p) for p in err.get('loc', ()))}: {err.get('msg')}" for err in exc.errors()
    )
    return JSONResponse(status_code=400, content={"error": f"invalid request body: {problems}"})


class PredictorServer(ModelServer):
    def __init__(self, repository: FolderModelRepository, **kwargs: Any) -> None:
        super().__init__(registered_models=repository, **kwargs)
        self.dataplane = HonestDataPlane(model_registry=repository)
        self.repository = repository

    def start(self, models: list | None = None) -> None:
        from kserve.model_server import app

        app.add_exception_handler(RequestValidationError, _request_validation_handler)
        app.add_middleware(BodyLimit, models=self.repository)
        app.add_api_route("/v2/models/{model_name}/config", self._model_config, methods=["GET"])
        for model in self.repository.get_models().values():
            model.enable_latency_logging = self.enable_latency_logging
        self.repository.load_in_background()
        super().start([])

    async def _model_config(self, model_name: str) -> dict[str, Any]:
        model = self.repository.get_model(model_name)
        if model is None:
            raise ModelNotFound(model_name)
        return model.describe()
