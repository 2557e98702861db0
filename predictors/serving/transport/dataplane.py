"""kserve's DataPlane with honest answers: model lookups say why a model or version cannot serve
(404 / 503 with the load error), a body kserve cannot decode is a 400, never a 500, and a lazy or
on_demand model is loaded by the request that needs it (repository.acquire)."""

from __future__ import annotations

from typing import Any

from kserve.errors import InvalidInput
from kserve.protocol.dataplane import DataPlane

from .. import codec
from ..errors import ModelUnavailable
from ..predictor import TextPredictor
from ..repository import VERSION_SEPARATOR, PredictorRepository
from ..scheduling import DEFAULT_TIMEOUT_MS, LOAD_WAITED, request_timeout_seconds

#: A request whose model was evicted between its lookup and its start looks the model up again
#: (which loads it); this many times at most.
LOOKUPS_PER_REQUEST = 3
#: REST response header of a request that waited for its model to load (a cold start), in ms.
LOAD_WAIT_HEADER = "x-model-load-wait-ms"


class HonestDataPlane(DataPlane):
    def __init__(self, repository: PredictorRepository) -> None:
        super().__init__(model_registry=repository)
        self.repository = repository

    async def ready(self) -> bool:
        return self.repository.ready()

    async def get_model(self, name: str, request: Any = None, headers: dict[str, str] | None = None) -> TextPredictor:
        """The model to answer with, loaded first if it loads on requests; the wait for that load is
        bounded by the request's deadline (its timeout_ms, else the model's)."""
        base, _, version = name.partition(VERSION_SEPARATOR)

        def deadline() -> float | None:
            return request_timeout_seconds(request, headers, self.repository.timeout_ms(base) or DEFAULT_TIMEOUT_MS)

        return await self.repository.acquire(base, version or None, deadline)

    async def model_ready(self, model_name: str, disable_predictor_health_check: bool = False) -> bool:
        base, _, version = model_name.partition(VERSION_SEPARATOR)
        self.repository.check_servable(base, version or None)  # raises 404 / 503 with the reason
        return True

    async def infer(self, model_name: str, request: Any, headers: dict[str, str] | None = None) -> tuple[Any, dict[str, str]]:
        """kserve's infer, with a lookup that loads lazy models and survives an eviction: a model
        evicted after the lookup refuses the request before starting it, and the request looks the
        model up again, which loads it."""
        for attempt in range(LOOKUPS_PER_REQUEST):
            model = await self.get_model(model_name, request, headers)
            try:
                response, response_headers = await model(request, headers=headers)
            except ModelUnavailable:
                if not model.evicted or attempt == LOOKUPS_PER_REQUEST - 1:
                    raise
                continue
            waited = LOAD_WAITED.get()
            if waited:  # a cold start: say how much of the answer's time was the model's load
                response_headers = {**(response_headers or {}), LOAD_WAIT_HEADER: str(round(waited * 1000))}
            return response, response_headers
        raise AssertionError("unreachable: the last lookup's error is raised above")

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
