"""kserve's DataPlane with honest answers: model lookups say why a model or version cannot serve
(404 / 503 with the load error), and a body kserve cannot decode is a 400, never a 500."""

from __future__ import annotations

from typing import Any

from kserve.errors import InvalidInput
from kserve.protocol.dataplane import DataPlane

from .. import codec
from ..predictor import TextPredictor
from ..repository import VERSION_SEPARATOR, PredictorRepository


class HonestDataPlane(DataPlane):
    def __init__(self, repository: PredictorRepository) -> None:
        super().__init__(model_registry=repository)
        self.repository = repository

    async def ready(self) -> bool:
        return self.repository.ready()

    async def get_model(self, name: str) -> TextPredictor:
        base, _, version = name.partition(VERSION_SEPARATOR)
        return self.repository.resolve(base, version or None)

    async def model_ready(self, model_name: str, disable_predictor_health_check: bool = False) -> bool:
        await self.get_model(model_name)  # raises 404 / 503 with the reason
        return True

    async def model_metadata(self, model_name: str) -> dict:
        model = await self.get_model(model_name)
        metadata = await super().model_metadata(model_name)
        entry = self.repository.entries[model.name]
        metadata.update(name=model.name, platform=model.platform, versions=entry.ready_versions())
        return metadata

    def decode(self, body: Any, headers: Any, protocol_version: str = "v1", model_name: str | None = None) -> Any:
        if protocol_version == "v2":  # REST V2 JSON or binary-extension bodies, checked strictly
            return codec.decode_rest_v2(body, headers, model_name), {}
        try:
            return super().decode(body, headers, protocol_version, model_name)
        except InvalidInput:
            raise
        except Exception as exc:  # malformed binary extension bodies, bad UTF-8, missing keys
            raise InvalidInput(f"cannot decode the request body: {exc}") from None
