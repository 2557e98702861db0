"""The connection guard's door admission picks the scheduler of the version a request names
(stand-in predictors with real schedulers: tests/unit/serving/stand_ins.py)."""

from __future__ import annotations

import asyncio

from predictors.serving.scheduling import DoorTicket
from predictors.serving.transport.connection import ConnectionGuard
from tests.helpers import write_folder

from ..stand_ins import stand_in_repository


def infer_scope(path: str, body_bytes: int = 300) -> dict:
    return {"type": "http", "method": "POST", "path": path, "headers": [(b"content-length", str(body_bytes).encode())]}


def test_a_versioned_request_holds_its_ticket_at_that_versions_door(tmp_path):
    for version in ("1", "2"):
        write_folder(tmp_path / "m" / version)
    (tmp_path / "m" / "predictor.yaml").write_text("version_policy: all\ncache: {enabled: false}\n")
    repository = stand_in_repository(tmp_path, ())
    asyncio.run(repository.load("m"))
    guard = ConnectionGuard(app=None, repository=repository)
    try:
        schedulers = {v: repository.resolve("m", v).scheduler for v in ("1", "2")}
        versioned = guard._admission(infer_scope("/v2/models/m/versions/1/infer"))
        unversioned = guard._admission(infer_scope("/v2/models/m/infer"))
        assert isinstance(versioned, DoorTicket) and isinstance(unversioned, DoorTicket)
        assert versioned.door is schedulers["1"].door  # not the default version's
        assert unversioned.door is schedulers["2"].door  # the default: the highest ready version
        assert schedulers["1"].describe()["arriving_texts_estimated"] >= 1
        versioned.release()
        unversioned.release()
        assert schedulers["1"].describe()["arriving_texts_estimated"] == 0
        assert guard._admission(infer_scope("/v2/models/m/versions/9/infer")) is None  # no such version: the route says so
    finally:
        repository.unload("m")
