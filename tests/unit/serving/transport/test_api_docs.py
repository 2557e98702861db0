"""The browsable API and CORS as build_app sets them up (transport/api_docs.py, server.py
CrossOrigin), in process over stand-in predictors. The pages in a real browser, with no network
beyond the server, and CORS from a page of another origin: tests/integration/test_browser.py."""

from __future__ import annotations

import asyncio
import re

import pytest
from starlette.testclient import TestClient

from predictors.model.environment import ServerEnvironment
from predictors.serving.transport.dataplane import HonestDataPlane
from predictors.serving.transport.server import ServerOptions, build_app

from ..stand_ins import stand_in_repository


def app_for(tmp_path, docs=True, origins=()):
    repository = stand_in_repository(tmp_path, ("m",), embedders=("e",))
    asyncio.run(repository.load_all())
    environment = ServerEnvironment(cors_allowed_origins=origins)
    return build_app(repository, HonestDataPlane(repository), ServerOptions(enable_docs_url=docs), environment, lambda: False)


@pytest.fixture
def client(tmp_path):
    with TestClient(app_for(tmp_path)) as client:
        yield client


@pytest.mark.parametrize("page, asset", [("/docs", "swagger-ui-bundle.js"), ("/redoc", "redoc.standalone.js")])
def test_pages_load_their_assets_from_the_server_itself(client, page, asset):
    html = client.get(page).text
    external = [url for url in re.findall(r"""(?:src|href)=["']([^"']+)""", html) if not url.startswith("/")]
    assert not external, external  # no CDN, no fonts from elsewhere
    assert f"/static-offline-docs/{asset}" in html
    script = client.get(f"/static-offline-docs/{asset}")
    assert script.status_code == 200 and len(script.content) > 100_000


def test_docs_are_off_unless_asked_for(tmp_path):
    with TestClient(app_for(tmp_path, docs=False)) as client:
        assert client.get("/docs").status_code == 404 and client.get("/redoc").status_code == 404
        assert client.get("/openapi.json").status_code == 200  # the machine-readable description stays


def test_openapi_describes_the_routes_that_answer(client):
    document = client.get("/openapi.json").json()
    paths = document["paths"]
    for path in ("/v2/models/{model_name}/infer", "/v2/repository/index", "/v2/repository/models/{model_name}/load",
                 "/openai/v1/embeddings", "/v1/embeddings", "/openai/v1/models", "/v1/models/{model_name}:predict"):
        assert path in paths, path
    infer = paths["/v2/models/{model_name}/infer"]["post"]
    # ours, not kserve's shadowed route of the same path (whose docstring FastAPI would show)
    assert "kserve answers" in infer["description"]
    example = infer["requestBody"]["content"]["application/json"]["example"]
    assert example["inputs"][0]["name"] == "text" and example["inputs"][0]["datatype"] == "BYTES"
    assert "application/octet-stream" in infer["requestBody"]["content"]
    assert {"200", "400", "404", "429", "503", "504"} <= set(infer["responses"])
    assert [p["example"] for p in infer["parameters"] if p["name"] == "model_name"] == ["e"]  # a served model
    embeddings = paths["/openai/v1/embeddings"]["post"]
    assert embeddings["requestBody"]["content"]["application/json"]["example"]["model"] == "e"
    assert embeddings["responses"]["400"]["content"]["application/json"]["schema"]["$ref"].endswith("/OpenAIError")
    assert embeddings["requestBody"]["content"]["application/json"]["schema"]["properties"]["encoding_format"]
    assert not any("422" in operation["responses"] for operations in paths.values() for operation in operations.values())
    assert "HTTPValidationError" not in document["components"]["schemas"]


def test_cors_is_off_by_default(client):
    reply = client.options("/v2/models/m/infer", headers={"Origin": "http://page.example", "Access-Control-Request-Method": "POST"})
    assert "access-control-allow-origin" not in reply.headers


def test_cors_answers_preflights_and_simple_requests_of_allowed_origins(tmp_path):
    with TestClient(app_for(tmp_path, origins=("http://page.example",))) as client:
        preflight = client.options("/v1/embeddings", headers={
            "Origin": "http://page.example", "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "content-type, authorization, x-stainless-os"})
        assert preflight.status_code == 200
        assert preflight.headers["access-control-allow-origin"] == "http://page.example"
        assert "POST" in preflight.headers["access-control-allow-methods"]
        assert "x-stainless-os" in preflight.headers["access-control-allow-headers"]
        reply = client.post("/v1/embeddings", json={"model": "e", "input": "x"}, headers={"Origin": "http://page.example"})
        assert reply.headers["access-control-allow-origin"] == "http://page.example"
        exposed = reply.headers["access-control-expose-headers"]
        assert "server-timing" in exposed and "x-request-id" in exposed
        assert reply.headers["timing-allow-origin"] == "http://page.example"
        refused = client.options("/v1/embeddings", headers={"Origin": "http://other.example", "Access-Control-Request-Method": "POST"})
        assert refused.status_code == 400 and "access-control-allow-origin" not in refused.headers
