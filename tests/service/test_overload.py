"""The service at its edges: 429 before tokenizing when the queue is over max_queue_ms."""

from __future__ import annotations

import asyncio
import threading
import time

import httpx

from service.main import create_app
from tests.service.conftest import make_settings

MODEL = "tiny-sequence-classification"


async def _until(condition, timeout: float = 5.0) -> None:
    end = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < end, "timed out"
        await asyncio.sleep(0.005)


def test_overloaded_model_answers_429_with_retry_after_before_tokenizing(tiny_bundles):
    # One backend thread held busy; one request queued behind it is (a few tokens + the batch overhead)
    # of work, at the prior throughput a few ms: over a 1 ms budget, so every later request is refused.
    settings = make_settings([tiny_bundles["sequence-classification"]], warmup=False, backend_workers=1, max_queue_ms=1)
    app = create_app(settings)

    async def scenario():
        async with app.router.lifespan_context(app):
            state = app.state.bertkit
            engine = state.registry.engines[MODEL]
            started, gate = threading.Event(), threading.Event()
            real_run = engine.batcher.backend.run

            def gated(batch):
                started.set()
                gate.wait(10)
                return real_run(batch)

            engine.batcher.backend.run = gated

            def count(name: str) -> float:
                return state.metrics.registry.get_sample_value(name, {"model": MODEL}) or 0.0

            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://test", timeout=30) as client:
                running = asyncio.create_task(client.post("/v1/classify", json={"inputs": "runs first"}))
                await _until(started.is_set)
                queued = asyncio.create_task(client.post("/v1/classify", json={"inputs": "waits its turn"}))
                await _until(lambda: engine.batcher.queued[0] == 1)
                tokenized = count("bertkit_tokenize_seconds_count")
                refused = [await client.post("/v1/classify", json={"inputs": ["a"] * n}) for n in (1, 5, 50)]
                assert count("bertkit_tokenize_seconds_count") == tokenized == 2  # refused before tokenizing
                assert count("bertkit_rejected_requests_total") == 3
                gate.set()
                return refused, await running, await queued

    refused, running, queued = asyncio.run(scenario())
    assert running.status_code == queued.status_code == 200
    for r in refused:
        assert r.status_code == 429 and int(r.headers["retry-after"]) >= 1
        assert r.json()["error"]["type"] == "queue_full" and "max_queue_ms" in r.json()["error"]["message"]
