"""The overload gate: 429 for an overloaded model before FastAPI parses the request; everything else
(another model, a model not loaded, a wrong API key, a body it cannot read) goes on to the app."""

from __future__ import annotations

import asyncio
import logging
import re

import httpx
import pytest

from service.main import create_app
from service.overload_gate import model_named
from tests.service.conftest import make_settings
from tests.service.test_overload import _until, hold_backend

BUSY, OTHER = "tiny-sequence-classification", "tiny-cls-int8"


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (b'{"inputs": "a"}', (True, None)),
        (b'{"inputs": "a", "model": null}', (True, None)),
        (b'{"model" : "tiny-cls-int8", "inputs": ["a"]}', (True, "tiny-cls-int8")),
        (b'{"model": "we\\"ird\\u00e9", "inputs": "a"}', (True, 'we"ird\u00e9')),
        (b'{"model": "a", "inputs": {"model": "b"}}', (False, None)),  # two candidates: the app decides
        (b'{"model": "bad \\x escape"}', (False, None)),
    ],
)
def test_model_named_reads_the_model_without_parsing_the_body(body, expected):
    assert model_named(body) == expected


def test_gate_refuses_the_overloaded_model_before_the_route_and_lets_the_rest_through(tiny_bundles):
    bundles = [tiny_bundles["sequence-classification"], tiny_bundles["int8"]]
    settings = make_settings(bundles, warmup=False, backend_workers=1, max_queue_ms=1, api_key="s3cret")
    app = create_app(settings)
    auth = {"Authorization": "Bearer s3cret"}

    async def scenario():
        async with app.router.lifespan_context(app):
            state = app.state.bertkit
            engine = state.registry.engines[BUSY]
            started, release = hold_backend(engine)
            routed = []  # every request that reached a route's registry lookup
            real_use = state.registry.use

            def counting_use(task, name):
                routed.append(name)
                return real_use(task, name)

            state.registry.use = counting_use
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://test", timeout=30, headers=auth) as c:
                running = asyncio.create_task(c.post("/v1/classify", json={"inputs": "runs first"}))
                await _until(started.is_set)
                queued = asyncio.create_task(c.post("/v1/classify", json={"inputs": "waits its turn"}))
                await _until(lambda: engine.batcher.queued[0] == 1)
                assert engine.batcher.refusal() is not None
                before = len(routed)
                refused = [
                    await c.post("/v1/classify", json={"inputs": "a"}),
                    await c.post("/v1/classify", json={"inputs": ["a"] * 5, "model": BUSY}),
                ]
                assert len(routed) == before  # refused by the gate: no route ran
                answers = {
                    "other model": await c.post("/v1/classify", json={"inputs": "fine", "model": OTHER}),
                    "unknown model": await c.post("/v1/classify", json={"inputs": "a", "model": "nope"}),
                    "wrong key": await c.post(
                        "/v1/classify", json={"inputs": "a"}, headers={"Authorization": "Bearer wrong"}
                    ),
                    "invalid body": await c.post("/v1/classify", json={"inputs": 3, "model": OTHER}),
                }
                assert len(routed) == before + 2  # the other model and the unknown one reached the route
                release.set()
                metrics = (await c.get("/metrics")).text
                return refused, answers, await running, await queued, metrics

    refused, answers, running, queued, metrics = asyncio.run(scenario())
    assert running.status_code == queued.status_code == 200
    for r in refused:
        assert r.status_code == 429 and int(r.headers["retry-after"]) >= 1
        error = r.json()["error"]
        assert error["type"] == "queue_full" and "max_queue_ms" in error["message"]
        assert error["request_id"] == r.headers["x-request-id"]
    assert answers["other model"].status_code == 200
    assert answers["unknown model"].status_code == 404
    assert answers["wrong key"].status_code == 401
    assert answers["invalid body"].status_code == 422  # validation is the app's
    counted = re.search(r'^bertkit_requests_total\{endpoint="/v1/classify",status="429"\} (\S+)$', metrics, re.M)
    assert counted and float(counted.group(1)) == 2
    rejected = re.search(rf'^bertkit_rejected_requests_total\{{model="{BUSY}"\}} (\S+)$', metrics, re.M)
    assert rejected and float(rejected.group(1)) == 2


def test_refusals_are_logged_as_one_line_per_model_and_second():
    from service.overload_gate import RefusalLog, log

    now = [0.0]
    refusals = RefusalLog(every_s=1.0, clock=lambda: now[0])
    lines = []
    log.addHandler(handler := _ListHandler(lines))
    try:
        for t in (0.1, 0.2, 0.5, 0.9):
            now[0] = t
            refusals.note("a")
        refusals.note("b")
        assert lines == []  # less than a second: nothing yet
        now[0] = 1.2
        refusals.note("a")
        assert sorted(lines) == [  # the window opened at the first refusal, 0.1
            "429 x 1 for model 'b' in the last 1.1s: queued work over max_queue_ms",
            "429 x 5 for model 'a' in the last 1.1s: queued work over max_queue_ms",
        ]
        now[0] = 1.5
        refusals.note("a")
        now[0] = 2.4
        refusals.flush_if_due()
        assert len(lines) == 2  # the window opened at 1.5: not a second yet
        now[0] = 2.6
        refusals.flush_if_due()  # an answered request after the burst logs what is left
        assert lines[-1] == "429 x 1 for model 'a' in the last 1.1s: queued work over max_queue_ms"
    finally:
        log.removeHandler(handler)


class _ListHandler(logging.Handler):
    def __init__(self, lines: list):
        super().__init__()
        self.lines = lines

    def emit(self, record):
        self.lines.append(record.getMessage())
