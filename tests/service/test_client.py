"""The Python client and `bert predict`: request bodies, typed results, 429 retries, errors; then live.

The first part runs against httpx.MockTransport (milliseconds); the last part against the real
service (`bert serve` in a subprocess) with tiny bundles.
"""

from __future__ import annotations

import asyncio
import dataclasses
import email.utils
import json
import subprocess
import sys
import time
import typing

import httpx
import pytest

from service import client_cli, schemas
from service.client import Answer, AsyncClient, Client, Entity, LabelScore, ServiceError, retry_delay
from tests.helpers.bundles import TINY_FP32_TOLERANCE
from tests.helpers.tolerances import sum_tolerance

CLASSIFY = {"model": "sst2", "results": [[{"label": "positive", "score": 0.9}, {"label": "negative", "score": 0.1}]]}
NER = {
    "model": "conll",
    "results": [[{"entity_group": "LOC", "score": 0.8, "word": "Paris", "start": 9, "end": 14, "future": 1}]],
}
QA = {"model": "squad", "results": [{"answer": "Paris", "score": 0.7, "start": 16, "end": 21}]}
PARIS = Entity(entity_group="LOC", score=0.8, word="Paris", start=9, end=14)


class Recorder:
    """A MockTransport handler that answers from a queue of (status, headers, body) and records requests."""

    def __init__(self, *answers):
        self.answers = list(answers)
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        status, headers, body = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        return httpx.Response(status, headers=headers, json=body)

    def bodies(self):
        return [json.loads(r.content) for r in self.requests]


def make_client(recorder, **kwargs):
    sleeps: list[float] = []
    client = Client("http://svc", transport=httpx.MockTransport(recorder), sleep=sleeps.append, **kwargs)
    return client, sleeps


def test_single_and_batched_inputs_give_typed_results():
    rec = Recorder((200, {}, CLASSIFY))
    client, _ = make_client(rec)
    scores = [LabelScore(label="positive", score=0.9), LabelScore(label="negative", score=0.1)]
    assert client.classify("great film", top_k=2) == scores
    assert client.classify(["great film"]) == [scores]
    client.classify(("a man eats", "someone eats"))
    assert rec.bodies() == [
        {"inputs": "great film", "top_k": 2},
        {"inputs": ["great film"]},
        {"inputs": ["a man eats", "someone eats"]},
    ]
    assert [r.url.path for r in rec.requests] == ["/v1/classify"] * 3


def test_ner_ignores_unknown_fields_and_qa_pairs():
    rec = Recorder((200, {}, NER), (200, {}, QA), (200, {}, {**QA, "results": QA["results"] * 2}))
    client, _ = make_client(rec)
    assert client.ner("I was in Paris.", aggregation_strategy="first") == [PARIS]
    assert client.qa("Where?", "The tower is in Paris.") == Answer(answer="Paris", score=0.7, start=16, end=21)
    assert client.qa([("Where?", "in Paris."), ("Where else?", "in Paris.")])[1].answer == "Paris"
    bodies = rec.bodies()
    assert bodies[0] == {"inputs": "I was in Paris.", "aggregation_strategy": "first"}
    assert bodies[1] == {"inputs": {"question": "Where?", "context": "The tower is in Paris."}}
    assert bodies[2]["inputs"][1] == {"question": "Where else?", "context": "in Paris."}
    with pytest.raises(TypeError, match="context is required"):
        client.qa("Where?")


def _example(schema):
    """The answer the service documents for `schema` at /docs, so these mocks follow the schema."""
    return schema.model_config["json_schema_extra"]["examples"][0]


def test_results_are_the_service_response_models():
    embed, tokenize, fill_mask, models = (
        _example(s)
        for s in (schemas.EmbedResponse, schemas.TokenizeResponse, schemas.FillMaskResponse, schemas.ModelsResponse)
    )
    rec = Recorder(*((200, {}, answer) for answer in (embed, embed, tokenize, fill_mask, models)))
    client, _ = make_client(rec)
    assert client.embed(["a"]) == schemas.EmbedResponse(**embed)
    assert client.embed("a") == embed["embeddings"][0]
    hello = client.tokenize("hello")
    assert hello == schemas.TokenizedText(**tokenize["results"][0]) and hello.offsets[1] == (0, 5)
    assert client.fill_mask(["paris is the [MASK] of france."]) == schemas.FillMaskResponse(**fill_mask).results
    assert client.models() == [schemas.ModelInfo(**m) for m in models["models"]]


def test_health_and_ready_take_503_as_the_answer():
    rec = Recorder((503, {"Retry-After": "1"}, {"status": "loading"}))
    client, sleeps = make_client(rec)
    assert client.health() is False and client.ready() is False
    assert sleeps == [] and len(rec.requests) == 2


def test_the_client_imports_only_httpx_and_pydantic():
    code = "import sys, service.client; print(sorted({m.split('.')[0] for m in sys.modules}))"
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    for heavy in ("fastapi", "starlette", "onnxruntime", "numpy", "tokenizers", "torch", "training", "model", "core"):
        assert f"'{heavy}'" not in loaded, heavy


def test_429_is_retried_after_retry_after_seconds():
    busy = (429, {"Retry-After": "2"}, {"error": {"type": "queue_full", "message": "queue full"}})
    rec = Recorder(busy, busy, (200, {}, CLASSIFY))
    client, sleeps = make_client(rec)
    assert client.classify("ok")[0].label == "positive"
    assert sleeps == [2.0, 2.0]
    assert len(rec.requests) == 3


def test_429_gives_up_after_max_retries_with_the_server_message():
    busy = (429, {"Retry-After": "1"}, {"error": {"type": "queue_full", "message": "queue full", "request_id": "r1"}})
    rec = Recorder(busy)
    client, sleeps = make_client(rec, max_retries=2)
    with pytest.raises(ServiceError) as err:
        client.classify("x")
    assert (err.value.status, err.value.kind, err.value.request_id) == (429, "queue_full", "r1")
    assert "queue full" in str(err.value)
    assert len(rec.requests) == 3 and sleeps == [1.0, 1.0]


def test_retry_after_http_date_backoff_and_cap():
    when = email.utils.formatdate(time.time() + 5, usegmt=True)
    assert 3.5 < retry_delay(httpx.Response(429, headers={"Retry-After": when}), 0, 0.25, 30) <= 5.0
    assert retry_delay(httpx.Response(429, headers={"Retry-After": "120"}), 0, 0.25, 30) == 30  # capped
    no_header = httpx.Response(429)
    assert 0.25 <= retry_delay(no_header, 0, 0.25, 30) < 0.32
    assert 1.0 <= retry_delay(no_header, 2, 0.25, 30) < 1.26  # exponential
    assert 0.25 <= retry_delay(httpx.Response(429, headers={"Retry-After": "soon"}), 0, 0.25, 30) < 0.32


def test_other_errors_are_not_retried():
    rec = Recorder((422, {}, {"error": {"type": "validation_error", "message": "body.top_k: must be >= 1"}}))
    client, sleeps = make_client(rec)
    with pytest.raises(ServiceError, match="top_k") as err:
        client.classify("x", top_k=0)
    assert err.value.status == 422 and sleeps == [] and len(rec.requests) == 1


def test_api_key_header_and_env_url(monkeypatch):
    monkeypatch.setenv("BERTKIT_URL", "http://from-env:9000/")
    rec = Recorder((200, {}, {"models": []}))
    client = Client(api_key="s3cret", transport=httpx.MockTransport(rec))
    assert client.models() == []
    assert rec.requests[0].headers["Authorization"] == "Bearer s3cret"
    assert str(rec.requests[0].url) == "http://from-env:9000/v1/models"


def test_async_client_retries_and_parses():
    busy = (429, {"Retry-After": "0.5"}, {"error": {"type": "queue_full", "message": "full"}})
    rec = Recorder(busy, (200, {}, NER))
    sleeps: list[float] = []

    async def fake_sleep(seconds):
        sleeps.append(seconds)

    async def go():
        async with AsyncClient("http://svc", transport=httpx.MockTransport(rec), sleep=fake_sleep) as client:
            return await client.ner(["I was in Paris."])

    assert asyncio.run(go()) == [[PARIS]]
    assert sleeps == [0.5]


def test_cli_says_one_line_when_the_service_is_down(capsys):
    code = client_cli.main(["classify", "hello", "--url", "http://127.0.0.1:9", "--timeout", "2"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "cannot reach the service" in err


def test_cli_needs_some_text(capsys):
    assert client_cli.main(["ner", "--url", "http://127.0.0.1:9"]) == 2
    assert "no text given" in capsys.readouterr().err


def test_cli_ner_aggregation_is_the_apis():
    """`bert predict ner` sends what a bare POST /v1/ner would use, and offers the same strategies."""
    api = schemas.NerRequest.model_fields["aggregation_strategy"]
    cli = next(f for f in dataclasses.fields(client_cli.NerOptions) if f.name == "aggregation")
    assert client_cli._parser().parse_args(["ner", "x"]).aggregation == api.default
    assert tuple(cli.metadata["choices"]) == typing.get_args(api.annotation)


def test_cli_models_takes_no_model():
    with pytest.raises(SystemExit) as exit_info:
        client_cli.main(["models", "--model", "x", "--url", "http://127.0.0.1:9"])
    assert exit_info.value.code == 2


# --- live: the real service with tiny bundles ----------------------------------------------------


@pytest.fixture(scope="module")
def live_url(tiny_bundles, tmp_path_factory):
    from tests.service.live_service import serve_bundles

    order = ["sequence-classification", "token-classification", "question-answering", "embedding", "fill-mask"]
    log = tmp_path_factory.mktemp("live") / "serve.log"
    with serve_bundles([tiny_bundles[t] for t in order], log) as url:
        yield url


def test_live_every_endpoint(live_url):
    with Client(live_url) as bert:
        assert bert.health() and bert.ready()
        tasks = {m.task for m in bert.models()}
        assert {"sequence-classification", "token-classification", "question-answering", "embedding"} <= tasks
        scores = bert.classify("a great movie")
        assert sorted(s.label for s in scores) == ["negative", "positive"]
        # fp32 at worst: the n exps' sum rounds n - 1 times, each division once
        assert scores[0].score >= scores[1].score and abs(sum(s.score for s in scores) - 1) <= sum_tolerance(3, 1.0)
        assert len(bert.classify(["a great movie", "a bad film"], top_k=1)) == 2
        text = "John Smith lives in Paris, près de la gare."
        entities = bert.ner(text, aggregation_strategy="none", ignore_labels=[])
        assert entities and all(text[e.start : e.end] == e.word for e in entities)
        context = "The capital of France is Paris."
        answer = bert.qa("What is the capital of France?", context)
        assert context[answer.start : answer.end] == answer.answer
        assert len(bert.qa("Where?", context, top_k=2)) == 2
        embedded = bert.embed(["one sentence", "another one"])
        assert len(embedded.embeddings) == 2 and len(embedded.embeddings[0]) == embedded.dim
        # unit-normalised in fp32 at worst: a dim-term sum of squares and a division, then squared again here
        vector = bert.embed("one sentence")
        assert abs(sum(x * x for x in vector) - 1) <= 2 * sum_tolerance(len(vector) + 1, 1.0)
        assert bert.tokenize("Paris").tokens[0] == "[CLS]"
        assert "bertkit_queue_sequences" in bert.metrics()
        with pytest.raises(ServiceError) as err:
            bert.classify("x", model="no-such-model")
        assert err.value.status == 404 and "tiny-sequence-classification" in err.value.message


def test_live_async_matches_sync(live_url):
    texts = [f"the movie was {w}" for w in ("great", "bad", "boring", "fun", "long", "short")]

    async def go():
        async with AsyncClient(live_url) as bert:
            return await asyncio.gather(*(bert.classify(t) for t in texts))

    with Client(live_url) as bert:
        alone = [bert.classify(t) for t in texts]
    together = asyncio.run(go())
    for a, b in zip(alone, together):
        assert [s.label for s in a] == [s.label for s in b]
        # other batch-mates: softmax moves a score less than the logits move
        assert all(abs(x.score - y.score) <= TINY_FP32_TOLERANCE for x, y in zip(a, b))


def test_live_cli(live_url, capsys):
    assert client_cli.main(["classify", "a great movie", "a bad film", "--url", live_url]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 2 and lines[0].endswith("\ta great movie") and "positive" in lines[0]
    assert client_cli.main(["ner", "John lives in Paris", "--url", live_url, "--json"]) == 0
    record = json.loads(capsys.readouterr().out)
    assert record["text"] == "John lives in Paris" and isinstance(record["entities"], list)
    context = "The capital of France is Paris."
    assert client_cli.main(["qa", "--question", "Capital?", "--context", context, "--url", live_url, "--json"]) == 0
    answer = json.loads(capsys.readouterr().out)
    assert context[answer["start"] : answer["end"]] == answer["answer"]
    assert client_cli.main(["models", "--url", live_url]) == 0
    assert "tiny-token-classification\ttoken-classification" in capsys.readouterr().out
    assert client_cli.main(["classify", "x", "--model", "nope", "--url", live_url]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "HTTP 404" in err
