"""The task fast path: the answers FastAPI would give, byte for byte, and FastAPI itself for every
request it does not take (other content types, a wrong key, a bad header, a body that fails)."""

from __future__ import annotations

import json

import pytest
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient

from service.main import create_app
from service.routes import tasks
from service.task_fast_path import FAST_ROUTES, TaskFastPathMiddleware
from tests.service.conftest import make_settings

FAST = {"content-type": "application/json"}
VIA_FASTAPI = {"content-type": "application/json; charset=utf-8"}  # a content type the fast path leaves alone

REQUESTS = [
    ("/v1/classify", {"inputs": ["a fine film", "a dull one"], "top_k": 1}),
    ("/v1/classify", {"inputs": [["A man eats.", "Someone eats."]], "truncate": False}),
    ("/v1/classify", {"inputs": "x", "model": "no-such-model"}),  # 404 raised inside the route
    ("/v1/classify", {"inputs": ["x"] * 65}),  # 413
    ("/v1/ner", {"inputs": "John Smith went to Paris.", "aggregation_strategy": "none"}),  # exclude_none
    ("/v1/ner", {"inputs": ["John lives in Berlin.", "Mary"]}),
    ("/v1/qa", {"inputs": {"question": "Where did John go?", "context": "John went to Paris."}, "top_k": 2}),
    ("/v1/qa", {"inputs": [{"question": "Who?", "context": "Mary did."}], "timeout_ms": 5000}),
]


class Recorder:
    """Stands for FastAPI behind the fast path: counts the requests handed on, then hands them on."""

    def __init__(self, app):
        self.app, self.paths = app, []

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http":
            self.paths.append(scope["path"])
        await self.app(scope, receive, send)


@pytest.fixture
def handed_on(client, monkeypatch) -> list[str]:
    """The paths of the requests the fast path handed on to FastAPI during a test."""
    client.get("/health")  # builds the middleware stack
    layer = client.app.middleware_stack
    while not isinstance(layer, TaskFastPathMiddleware):
        layer = layer.app
    recorder = Recorder(layer.app)
    monkeypatch.setattr(layer, "app", recorder)
    return recorder.paths


def _post(client, path, body, headers):
    return client.post(path, content=json.dumps(body), headers={"X-Request-ID": "same-id", **headers})


@pytest.mark.parametrize(("path", "body"), REQUESTS)
def test_fast_path_answers_what_fastapi_answers(client, handed_on, path, body):
    fast = _post(client, path, body, FAST)
    assert handed_on == []
    slow = _post(client, path, body, VIA_FASTAPI)
    assert handed_on == [path]
    assert (fast.status_code, fast.content) == (slow.status_code, slow.content)
    assert fast.headers.items() == slow.headers.items()


@pytest.mark.parametrize(
    ("body", "headers"),
    [
        ({"inputs": "x"}, VIA_FASTAPI),
        ({"inputs": "x"}, {"content-type": "text/plain"}),
        ({"inputs": "x"}, {**FAST, "X-Request-Timeout": "soon"}),
        ({"inputs": "x"}, {**FAST, "X-Request-Timeout": "0"}),
        ({"inputs": "x", "top_k": 0}, FAST),
        ({"inputs": "x", "unknown": 1}, FAST),
        ({"inputs": "\ud800"}, FAST),  # json.dumps escapes it; the text validator refuses it
        ({}, FAST),
    ],
)
def test_requests_that_fail_or_are_unusual_go_to_fastapi(client, handed_on, body, headers):
    r = _post(client, "/v1/classify", body, headers)
    assert handed_on == ["/v1/classify"]
    assert r.status_code in (200, 422)


def test_invalid_json_goes_to_fastapi(client, handed_on):
    r = client.post("/v1/classify", content=b'{"inputs": "x",}', headers=FAST)
    assert handed_on == ["/v1/classify"] and r.status_code == 422
    assert r.json()["error"]["details"][0]["field"] == "body"


def test_json_nested_too_deep_for_the_parser_goes_to_fastapi(client, handed_on):
    body = b'{"inputs": ' + b"[" * 50_000 + b"]" * 50_000 + b"}"
    fast = client.post("/v1/classify", content=body, headers=FAST)
    slow = client.post("/v1/classify", content=body, headers=VIA_FASTAPI)
    assert handed_on == ["/v1/classify"] * 2 and fast.status_code == slow.status_code < 500


def test_valid_timeout_header_and_metrics_on_the_fast_path(client, handed_on):
    metrics = client.app.state.bertkit.metrics.requests.labels("/v1/classify", "200")
    before = metrics._value.get()
    r = _post(client, "/v1/classify", {"inputs": "x"}, {**FAST, "X-Request-Timeout": "5000"})
    assert r.status_code == 200 and r.headers["x-request-id"] == "same-id"
    assert handed_on == [] and metrics._value.get() == before + 1


def test_api_key_on_both_paths(tiny_bundles):
    settings = make_settings([tiny_bundles["sequence-classification"]], api_key="s3cret", warmup=False)
    app = create_app(settings)
    with TestClient(app) as c:
        wrong = c.post("/v1/classify", json={"inputs": "x"}, headers={"Authorization": "Bearer wrong"})
        right = c.post("/v1/classify", json={"inputs": "x"}, headers={"Authorization": "Bearer s3cret"})
    assert wrong.status_code == 401 and wrong.headers["www-authenticate"] == "Bearer"
    assert right.status_code == 200


def test_no_fast_path_with_opentelemetry_on(tiny_bundles):
    settings = make_settings([tiny_bundles["sequence-classification"]], opentelemetry=True, warmup=False)
    assert all(m.cls is not TaskFastPathMiddleware for m in create_app(settings).user_middleware)


@pytest.mark.parametrize("path", sorted(FAST_ROUTES))
def test_fast_routes_are_the_declared_routes(path):
    declared = next(r for r in tasks.router.routes if isinstance(r, APIRoute) and r.path == path)
    fast = FAST_ROUTES[path]
    assert fast.endpoint is declared.endpoint
    assert fast.request_model is declared.body_field.field_info.annotation
    assert fast.exclude_none == declared.response_model_exclude_none
    assert declared.response_class.__class__.__name__ == "DefaultPlaceholder"  # FastAPI dumps the model as JSON
