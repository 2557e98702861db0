"""The OpenAI-compatible API of the real server and model (sentence-embedding), called by the clients
applications use: the official `openai` client and LangChain's OpenAIEmbeddings, each pointed at
the server with `base_url`. Their vectors must be the V2 answer's for the same texts, exactly."""

from __future__ import annotations

import json
import urllib.request

import numpy as np
import openai
import pytest
from langchain_openai import OpenAIEmbeddings
from openai import OpenAI
from transformers import PreTrainedTokenizerFast

from tests.conftest import MODELS_DIR

MODEL = "sentence-embedding"
TEXTS = ["A man is playing a guitar.", "Someone is strumming a guitar.", "The stock market fell sharply today.",
         "Ünïcödé and emoji 🎸 survive the round trip."]


def v2_vectors(server, texts) -> np.ndarray:
    body = json.dumps({"inputs": [{"name": "text", "datatype": "BYTES", "shape": [len(texts)], "data": texts}]}).encode()
    request = urllib.request.Request(f"{server.url}/v2/models/{MODEL}/infer", data=body,
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=60) as reply:
        output = json.loads(reply.read())["outputs"][0]
    return np.array(output["data"]).reshape(output["shape"])


@pytest.fixture(scope="module")
def client(server) -> OpenAI:
    return OpenAI(base_url=f"{server.url}/openai/v1", api_key="not-used", max_retries=0)


@pytest.fixture(scope="module")
def tokenizer() -> PreTrainedTokenizerFast:
    return PreTrainedTokenizerFast.from_pretrained(MODELS_DIR / MODEL)


@pytest.mark.parametrize("encoding_format", [None, "float", "base64"])  # None: the client asks for base64 itself
def test_openai_client_gets_the_v2_vectors(server, client, tokenizer, encoding_format):
    extra = {"encoding_format": encoding_format} if encoding_format else {}
    answer = client.embeddings.create(model=MODEL, input=TEXTS, **extra)
    expected = v2_vectors(server, TEXTS)
    assert answer.model == MODEL and [d.index for d in answer.data] == list(range(len(TEXTS)))
    if encoding_format == "base64":  # the client hands the string over as it came
        vectors = [np.frombuffer(__import__("base64").b64decode(d.embedding), "<f4").astype(np.float64).tolist()
                   for d in answer.data]
    else:
        vectors = [d.embedding for d in answer.data]
    assert vectors == expected.tolist()
    # the tokens the model ran: its tokenizer's count with [CLS] and [SEP]
    assert answer.usage.prompt_tokens == answer.usage.total_tokens == sum(len(tokenizer(t)["input_ids"]) for t in TEXTS)


def test_one_string_and_token_ids_of_the_models_tokenizer(server, client, tokenizer):
    expected = v2_vectors(server, TEXTS[:2])
    single = client.embeddings.create(model=MODEL, input=TEXTS[0], encoding_format="float")
    assert single.data[0].embedding == expected[0].tolist()
    ids = [tokenizer(t, add_special_tokens=False)["input_ids"] for t in TEXTS[:2]]
    for ids_input in (ids, ids[0]):
        answer = client.embeddings.create(model=MODEL, input=ids_input, encoding_format="float")
        np.testing.assert_allclose([d.embedding for d in answer.data], expected[: len(answer.data)], atol=1e-6)


def test_models_are_listed_and_retrieved(client):
    assert [m.id for m in client.models.list()] == [MODEL]
    model = client.models.retrieve(MODEL)
    assert model.id == MODEL and model.owned_by == "predictors" and model.created > 0


def test_client_errors_are_the_clients_exceptions(client):
    with pytest.raises(openai.NotFoundError, match="not in the repository"):
        client.embeddings.create(model="no-such-model", input="x")
    with pytest.raises(openai.NotFoundError, match="does not embed texts"):
        client.embeddings.create(model="review-sentiment", input="x")
    with pytest.raises(openai.BadRequestError, match="Matryoshka") as refused:
        client.embeddings.create(model=MODEL, input="x", dimensions=128)
    assert refused.value.body["param"] == "dimensions" and refused.value.body["type"] == "invalid_request_error"
    with pytest.raises(openai.BadRequestError, match="outside the vocabulary"):
        client.embeddings.create(model=MODEL, input=[[10**9]])


def test_langchain_openai_embeddings_get_the_v2_vectors(server):
    # check_embedding_ctx_length=False: LangChain would otherwise cut texts with OpenAI's tiktoken
    # vocabulary (downloaded at run time) and send those token ids, which mean nothing to this model.
    embeddings = OpenAIEmbeddings(model=MODEL, base_url=f"{server.url}/v1", api_key="not-used",
                                  check_embedding_ctx_length=False, max_retries=0)
    expected = v2_vectors(server, TEXTS)
    assert embeddings.embed_documents(TEXTS) == expected.tolist()
    assert embeddings.embed_query(TEXTS[1]) == expected[1].tolist()


def test_openai_answers_carry_timings_and_are_counted(server, client):
    raw = client.embeddings.with_raw_response.create(model=MODEL, input=[f"counted text {id(client)}"])
    assert raw.headers["x-request-id"] and "backend;dur=" in raw.headers["server-timing"]
    metrics = urllib.request.urlopen(f"{server.url}/metrics", timeout=10).read().decode()
    line = next(l for l in metrics.splitlines()
                if l.startswith("predictors_requests_total{") and 'protocol="openai"' in l and f'model="{MODEL}"' in l
                and 'outcome="success"' in l)
    assert float(line.rsplit(" ", 1)[1]) >= 1
