"""Every endpoint and error path of the HTTP API, on tiny real bundles."""

from __future__ import annotations

import json
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from fastapi.testclient import TestClient

from service.main import create_app
from service.state import BundleRefusedError
from tests.helpers.bundles import TINY_FP32_TOLERANCE
from tests.helpers.tolerances import sum_tolerance
from tests.service.conftest import make_settings

LONG_TEXT = " ".join(["john smith went to paris and berlin with mary"] * 20)  # far over 64 tokens


def post(client, path, body, **kw):
    return client.post(path, json=body, **kw)


# --- endpoints ---------------------------------------------------------------------------------


def test_models_health_ready_metrics(client, tiny_bundles):
    models = client.get("/v1/models").json()["models"]
    by_name = {m["name"]: m for m in models}
    assert by_name["tiny-sequence-classification"]["default"] is True
    assert by_name["tiny-cls-int8"]["default"] is False
    assert by_name["tiny-cls-int8"]["precision"] == "int8"
    for bundle in tiny_bundles.values():  # /v1/models says what bundle.json says
        manifest = json.loads((bundle / "bundle.json").read_text())
        expected = manifest.get("batch_invariant", manifest["precision"] != "int8")
        assert by_name[manifest["name"]]["batch_invariant"] is expected
    assert by_name["tiny-sequence-classification"]["batch_invariant"] is True
    assert all(m["provider"] == "CPUExecutionProvider" for m in models)
    assert client.get("/health").json()["status"] == "ok"
    assert client.get("/ready").status_code == 200
    post(client, "/v1/classify", {"inputs": "warm"})
    text = client.get("/metrics").text
    for name in ("bertkit_requests_total", "bertkit_batch_size", "bertkit_batch_padding_ratio", "bertkit_queue_seconds",
                 "bertkit_inference_seconds", "bertkit_tokenize_seconds", "bertkit_queue_sequences"):  # fmt: skip
        assert name in text


def test_classify_single_batch_pairs_and_top_k(client):
    one = post(client, "/v1/classify", {"inputs": "a great movie"}).json()
    assert one["model"] == "tiny-sequence-classification"
    scores = one["results"][0]
    assert [s["label"] for s in scores] in (["positive", "negative"], ["negative", "positive"])
    # fp32 at worst: the n exps' sum rounds n - 1 times, each division once
    total = sum(s["score"] for s in scores)
    assert scores[0]["score"] >= scores[1]["score"] and total == pytest.approx(1.0, abs=sum_tolerance(3, 1.0))
    many = post(client, "/v1/classify", {"inputs": ["a great movie", "bad", "a great movie"], "top_k": 1}).json()
    assert len(many["results"]) == 3 and all(len(r) == 1 for r in many["results"])
    # another batch: softmax moves a score less than the logits move
    assert many["results"][0][0]["score"] == pytest.approx(scores[0]["score"], abs=TINY_FP32_TOLERANCE)
    pairs = post(client, "/v1/classify", {"inputs": [["the film", "the movie"]]})
    assert pairs.status_code == 200 and len(pairs.json()["results"][0]) == 2
    int8 = post(client, "/v1/classify", {"inputs": "a great movie", "model": "tiny-cls-int8"}).json()
    assert int8["model"] == "tiny-cls-int8"


def test_classify_truncation(client):
    assert post(client, "/v1/classify", {"inputs": LONG_TEXT}).status_code == 200
    r = post(client, "/v1/classify", {"inputs": ["short", LONG_TEXT], "truncate": False})
    assert r.status_code == 422
    assert r.json()["error"]["details"][0]["field"] == "inputs[1]"
    assert "truncate" in r.json()["error"]["message"]


@pytest.mark.parametrize(
    "text",
    [
        "John Smith lives in Paris.",
        "José Müller à São Paulo, près de la gare.",
        "李明在北京大学工作。",
        "café 😀 naïve",
    ],
)
def test_ner_offsets_point_into_the_input(client, text):
    r = post(client, "/v1/ner", {"inputs": text, "aggregation_strategy": "none", "ignore_labels": []})
    assert r.status_code == 200
    entities = r.json()["results"][0]
    tokens = post(client, "/v1/tokenize", {"inputs": text, "model": "tiny-token-classification"}).json()
    offsets = [
        tuple(o) for o, s in zip(tokens["results"][0]["offsets"], tokens["results"][0]["sequence_ids"]) if s == 0
    ]
    assert [(e["start"], e["end"]) for e in entities] == offsets  # every token, in order
    covered = {i for e in entities for i in range(e["start"], e["end"])}
    assert covered == {i for i, ch in enumerate(text) if not ch.isspace()}
    for e in entities:
        assert e["word"] == text[e["start"] : e["end"]]
    grouped = post(client, "/v1/ner", {"inputs": text}).json()["results"][0]
    for e in grouped:
        assert e["word"] == text[e["start"] : e["end"]] and "index" not in e


def test_ner_long_input_runs_in_windows_without_cuts(client):
    r = post(client, "/v1/ner", {"inputs": [LONG_TEXT, "short"], "aggregation_strategy": "none", "ignore_labels": []})
    long_entities, short_entities = r.json()["results"]
    n_tokens = len(post(client, "/v1/tokenize", {"inputs": LONG_TEXT}).json()["results"][0]["ids"]) - 2
    assert n_tokens > 64 and len(long_entities) == n_tokens
    assert long_entities[-1]["end"] == len(LONG_TEXT)
    assert len(short_entities) == 1
    for strategy in ("simple", "first", "average", "max"):
        grouped = post(client, "/v1/ner", {"inputs": LONG_TEXT, "aggregation_strategy": strategy}).json()["results"][0]
        assert all(LONG_TEXT[e["start"] : e["end"]] == e["word"] for e in grouped)


def test_qa_answers_spans_of_the_context(client):
    context = "The Eiffel Tower is in Paris. " + LONG_TEXT + " Mary Smith wrote the book in 1818."
    r = post(client, "/v1/qa", {"inputs": {"question": "who wrote the book?", "context": context}, "doc_stride": 16})
    answer = r.json()["results"][0]
    assert isinstance(answer, dict) and answer["answer"] == context[answer["start"] : answer["end"]]
    assert 0 <= answer["score"] <= 1
    several = post(
        client,
        "/v1/qa",
        {"inputs": [{"question": "where?", "context": "John lives in Berlin."}] * 2, "top_k": 3,
         "handle_impossible_answer": True},
    ).json()["results"]  # fmt: skip
    assert len(several) == 2 and len(several[0]) == 3
    assert [a["score"] for a in several[0]] == sorted((a["score"] for a in several[0]), reverse=True)
    assert several[0] == several[1]


def test_qa_errors(client):
    # a long question is cut to the model's max_query_len tokens, as in fine-tuning and evaluation
    long_question = {"question": LONG_TEXT, "context": "short context"}
    r = post(client, "/v1/qa", {"inputs": long_question})
    assert r.status_code == 200 and r.json()["results"][0]["answer"] in "short context"
    r = post(client, "/v1/qa", {"inputs": {"question": "why?", "context": "a b c"}, "doc_stride": 10_000})
    assert r.status_code == 200  # a stride wider than the window is capped at half the context room
    r = post(client, "/v1/qa", {"inputs": {"question": "why?", "context": ""}})
    assert r.status_code == 422 and "context" in r.json()["error"]["message"]
    blank = post(client, "/v1/qa", {"inputs": {"question": "why?", "context": "   "}})
    assert blank.status_code == 200 and blank.json()["results"][0]["answer"] == ""


def test_embed_and_fill_mask(client):
    r = post(client, "/v1/embed", {"inputs": ["hello world", "paris"]}).json()
    assert r["dim"] == 32 and len(r["embeddings"]) == 2
    # unit-normalised in fp32 at worst: a 32-term sum of squares and a division
    assert np.linalg.norm(r["embeddings"][0]) == pytest.approx(1.0, abs=sum_tolerance(r["dim"] + 1, 1.0))
    raw = post(client, "/v1/embed", {"inputs": "hello world", "normalize": False}).json()["embeddings"][0]
    # another batch moves raw by TINY_FP32_TOLERANCE; dividing by its norm scales that, the norm moves too
    tolerance = 2 * TINY_FP32_TOLERANCE / np.linalg.norm(raw) + sum_tolerance(r["dim"] + 1, 1.0)
    assert np.allclose(np.asarray(raw) / np.linalg.norm(raw), r["embeddings"][0], rtol=0, atol=tolerance)
    masks = post(client, "/v1/fill-mask", {"inputs": "paris is the [MASK] of [MASK].", "top_k": 3}).json()
    per_mask = masks["results"][0]
    assert len(per_mask) == 2 and all(len(p) == 3 for p in per_mask)
    assert per_mask[0][0]["score"] >= per_mask[0][1]["score"]
    assert per_mask[0][0]["sequence"].startswith("paris is the ")
    r = post(client, "/v1/fill-mask", {"inputs": ["has a [MASK]", "no mask here"]})
    assert r.status_code == 422 and r.json()["error"]["details"][0]["field"] == "inputs[1]"


def test_tokenize(client):
    r = post(client, "/v1/tokenize", {"inputs": [["Héllo", "北京"]], "model": "tiny-sequence-classification"}).json()
    out = r["results"][0]
    assert out["tokens"][0] == "[CLS]" and out["sequence_ids"][-1] is None
    assert 1 in out["type_ids"] and len(out["ids"]) == len(out["offsets"])


@pytest.mark.parametrize("text", ["", "   \t\n ", "\x00\x07 control \x1b chars", "😀😀😀", "中" * 300, "a" * 5000])
def test_odd_texts_get_answers(client, text):
    for path, body in [
        ("/v1/classify", {"inputs": text}),
        ("/v1/ner", {"inputs": text}),
        ("/v1/embed", {"inputs": text}),
        ("/v1/qa", {"inputs": {"question": "what?", "context": text or "x"}}),
    ]:
        r = post(client, path, body)
        assert r.status_code == 200, (path, r.text)


# --- errors ------------------------------------------------------------------------------------


def test_unknown_wrong_task_and_bad_model_names(client):
    r = post(client, "/v1/classify", {"inputs": "x", "model": "nope"})
    assert r.status_code == 404
    assert "tiny-sequence-classification" in r.json()["error"]["message"]
    r = post(client, "/v1/classify", {"inputs": "x", "model": "tiny-token-classification"})
    assert r.status_code == 422 and "/v1/ner" in r.json()["error"]["message"]
    r = post(client, "/v1/classify", {"inputs": "x", "model": "../../etc/passwd"})
    assert r.status_code == 422 and r.json()["error"]["details"][0]["field"] == "body.model"


def test_validation_errors_name_the_field(client):
    cases = [
        ({"inputs": []}, "body.inputs"),
        ({"inputs": "x", "top_k": 0}, "body.top_k"),
        ({"inputs": "x", "unknown": 1}, "body.unknown"),
        ({"inputs": [["only one"]]}, "body.inputs"),
        ({}, "body.inputs"),
    ]
    for body, field in cases:
        r = post(client, "/v1/classify", body)
        assert r.status_code == 422, body
        assert any(d["field"].startswith(field) for d in r.json()["error"]["details"]), r.json()
    r = post(client, "/v1/ner", {"inputs": "x", "aggregation_strategy": "mean"})
    assert r.status_code == 422 and "aggregation_strategy" in r.json()["error"]["message"]


def test_invalid_json_utf8_and_surrogates(client):
    headers = {"content-type": "application/json"}
    for raw in [b'{"inputs": "\xff\xfe"}', b'{"inputs": ', b'{"inputs": "\\ud800"}', b"\x00"]:
        r = client.post("/v1/classify", content=raw, headers=headers)
        assert r.status_code == 422, (raw, r.text)
        assert r.json()["error"]["message"]


def test_limits_give_413(client):
    r = post(client, "/v1/classify", {"inputs": ["x"] * 65})
    assert r.status_code == 413 and "64" in r.json()["error"]["message"]
    r = post(client, "/v1/classify", {"inputs": "word " * 50_000})
    assert r.status_code == 413


def test_deadline_gives_504(client, monkeypatch):
    engine = client.app.state.bertkit.registry.engines["tiny-sequence-classification"]
    gate = threading.Event()
    real_run = engine.batcher.backend.run
    monkeypatch.setattr(engine.batcher.backend, "run", lambda batch: (gate.wait(2), real_run(batch))[1])
    try:
        r = post(client, "/v1/classify", {"inputs": "slow", "timeout_ms": 50})
        assert r.status_code == 504
        r = post(client, "/v1/classify", {"inputs": "slow"}, headers={"X-Request-Timeout": "50"})
        assert r.status_code == 504
    finally:
        gate.set()
    r = post(client, "/v1/classify", {"inputs": "x"}, headers={"X-Request-Timeout": "soon"})
    assert r.status_code == 422


def test_request_ids_and_json_404(client):
    r = client.get("/v1/nothing-here")
    assert r.status_code == 404 and r.json()["error"]["type"] == "not_found"
    assert r.headers["x-request-id"] == r.json()["error"]["request_id"]
    r = client.get("/health", headers={"X-Request-ID": "abc-123"})
    assert r.headers["x-request-id"] == "abc-123"
    assert client.get("/v1/classify").status_code == 405


def test_queue_full_gives_429_with_retry_after_and_accepted_requests_finish(tiny_bundles):
    settings = make_settings([tiny_bundles["sequence-classification"]], max_queue_requests=4, warmup=False)
    app = create_app(settings)
    with TestClient(app) as c:
        engine = app.state.bertkit.registry.engines["tiny-sequence-classification"]
        gate = threading.Event()
        real_run = engine.batcher.backend.run
        engine.batcher.backend.run = lambda batch: (gate.wait(5), real_run(batch))[1]
        with ThreadPoolExecutor(12) as pool:
            futures = [pool.submit(post, c, "/v1/classify", {"inputs": f"text {i}"}) for i in range(12)]
            big = pool.submit(post, c, "/v1/classify", {"inputs": ["a", "b", "c", "d", "e"]})
            while sum(f.done() for f in futures) < 7:  # 1 running + 4 queued; the rest are refused
                threading.Event().wait(0.01)
            gate.set()
            responses = [f.result() for f in futures]
        codes = sorted(r.status_code for r in responses)
        assert codes.count(200) >= 5 and set(codes) <= {200, 429}
        refused = [r for r in responses if r.status_code == 429]
        assert refused and all(int(r.headers["retry-after"]) >= 1 for r in refused)
        assert big.result().status_code == 413  # 5 inputs can never fit a 4-sequence queue


def test_api_key_and_cors(tiny_bundles):
    settings = make_settings(
        [tiny_bundles["sequence-classification"]], api_key="s3cret", cors_origins="https://app.example", warmup=False
    )
    with TestClient(create_app(settings)) as c:
        assert post(c, "/v1/classify", {"inputs": "x"}).status_code == 401
        bad = post(c, "/v1/classify", {"inputs": "x"}, headers={"Authorization": "Bearer wrong"})
        assert bad.status_code == 401 and bad.headers["www-authenticate"] == "Bearer"
        ok = post(c, "/v1/classify", {"inputs": "x"}, headers={"Authorization": "Bearer s3cret"})
        assert ok.status_code == 200
        assert c.get("/health").status_code == 200
        preflight = c.options(
            "/v1/classify",
            headers={"Origin": "https://app.example", "Access-Control-Request-Method": "POST",
                     "Access-Control-Request-Headers": "authorization,content-type"},
        )  # fmt: skip
        assert preflight.headers["access-control-allow-origin"] == "https://app.example"


def test_bundle_that_fails_to_load_is_refused(tmp_path, tiny_bundles):
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(tiny_bundles["sequence-classification"], broken)
    (broken / "model.onnx").write_bytes(b"not a model")
    app = create_app(make_settings([broken]))
    with pytest.raises(BundleRefusedError, match="model.onnx"):
        with TestClient(app):
            pass
    assert app.state.bertkit.ready is False


def test_playground_is_served_when_present(client):
    page = client.get("/")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assert client.get("/openapi.json").json()["paths"].keys() >= {"/v1/classify", "/v1/ner", "/v1/qa"}


def test_client_disconnect_drops_queued_work(client, monkeypatch):
    import asyncio
    import json as _json

    app = client.app
    engine = app.state.bertkit.registry.engines["tiny-sequence-classification"]
    gate, seen = threading.Event(), []
    real_run = engine.batcher.backend.run

    def gated(batch):
        gate.wait(5)
        seen.extend(len(x) for x in batch)
        return real_run(batch)

    monkeypatch.setattr(engine.batcher.backend, "run", gated)
    dropped = app.state.bertkit.metrics.dropped.labels("tiny-sequence-classification", "cancelled")
    before = dropped._value.get()

    async def call(text: str, disconnect_after: float | None):
        body = _json.dumps({"inputs": text}).encode()
        scope = {"type": "http", "method": "POST", "path": "/v1/classify", "raw_path": b"/v1/classify",
                 "query_string": b"", "headers": [(b"content-type", b"application/json")], "http_version": "1.1",
                 "scheme": "http", "server": ("test", 80), "client": ("test", 1), "root_path": ""}  # fmt: skip
        sent, messages = False, []

        async def receive():
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            await asyncio.sleep(disconnect_after if disconnect_after is not None else 30)
            return {"type": "http.disconnect"}

        async def send(message):
            messages.append(message)

        await app(scope, receive, send)
        return messages

    async def scenario():
        blockers = []
        for i in range(engine.batcher.config.workers):  # occupy every backend thread
            blockers.append(asyncio.create_task(call(f"first {i}", None)))
            await asyncio.sleep(0.2)
        gone = asyncio.create_task(call("a very long text " * 5, 0.1))  # its client leaves while queued
        await asyncio.sleep(0.4)
        gate.set()
        return [await b for b in blockers], await gone

    firsts, gone = asyncio.run(scenario())
    assert all(first[0]["status"] == 200 for first in firsts) and gone[0]["status"] == 499
    assert dropped._value.get() == before + 1
    assert max(seen) < 10  # the long text never reached the backend
