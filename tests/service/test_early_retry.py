"""A connection that comes back before its Retry-After gets its next 429 only when that Retry-After
ends; one that honours it, another connection, or a model with room is answered at once."""

from __future__ import annotations

import asyncio
import json
import re
import time

import httpx
import pytest

from service.early_retry import EarlyRetries
from service.main import create_app
from service.overload_gate import left_within
from tests.service.conftest import make_settings
from tests.service.test_overload import _until, asgi_call, hold_backend


def _retries(max_hold_s: float = 5.0, **kwargs):
    now = [0.0]
    return EarlyRetries(max_hold_s, clock=lambda: now[0], **kwargs), now


def test_a_connection_back_before_its_retry_after_is_held_until_it_ends():
    retries, now = _retries()
    assert retries.hold_s(("a", 1), 2) == 0.0  # first refusal: at once, told to wait 2 s
    now[0] = 0.5
    assert retries.hold_s(("a", 1), 1) == pytest.approx(1.5)  # back early: held until t=2
    now[0] = 2.0  # the held 429 went out at t=2 with Retry-After 1
    assert retries.hold_s(("a", 1), 1) == pytest.approx(1.0)  # back at once again: held until t=3
    now[0] = 4.5
    assert retries.hold_s(("a", 1), 1) == 0.0  # honoured it: answered at once


def test_the_hold_is_capped_per_connection_and_off_without_a_client_or_a_limit():
    retries, now = _retries(max_hold_s=0.25)
    retries.hold_s(("a", 1), 10)
    assert retries.hold_s(("a", 1), 10) == 0.25
    assert retries.hold_s(("a", 2), 10) == 0.0  # another connection of the same host
    assert retries.hold_s(None, 10) == 0.0  # no client address: nothing to tell it apart by
    off, _ = _retries(max_hold_s=0)
    off.hold_s(("a", 1), 10)
    assert off.hold_s(("a", 1), 10) == 0.0


def test_memory_is_bounded_and_expired_connections_are_forgotten():
    retries, now = _retries(max_clients=3)
    for port in range(10):
        retries.hold_s(("a", port), 1)
    assert list(retries.told_until) == [("a", 7), ("a", 8), ("a", 9)]  # the longest-told went first
    now[0] = 5.0
    retries.hold_s(("b", 1), 1)
    assert list(retries.told_until) == [("b", 1)]  # every other one's time had passed


def test_left_within_sees_a_disconnect_and_times_out_on_a_client_that_stays():
    async def leaves():
        await asyncio.sleep(0.01)
        return {"type": "http.disconnect"}

    async def stays():
        await asyncio.sleep(10)

    async def both():
        return await left_within(leaves, 5), await left_within(stays, 0.05)

    assert asyncio.run(both()) == (True, False)


def _counter(metrics: str, name: str, labels: str) -> float:
    found = re.search(rf"^{name}\{{{labels}\}} (\S+)$", metrics, re.M)
    return float(found.group(1)) if found else 0.0


def test_the_gate_holds_early_retries_of_one_connection_only(tiny_bundles):
    settings = make_settings(
        [tiny_bundles["sequence-classification"]],
        warmup=False,
        backend_workers=1,
        max_queue_ms=1,
        early_retry_hold_ms=300,
    )
    app = create_app(settings)
    body = {"inputs": "a"}

    async def scenario():
        async with app.router.lifespan_context(app):
            engine = app.state.bertkit.registry.engines["tiny-sequence-classification"]
            started, release = hold_backend(engine)

            def client(address):
                transport = httpx.ASGITransport(app=app, client=address)
                return httpx.AsyncClient(transport=transport, base_url="http://test", timeout=30)

            async with client(("10.0.0.1", 1001)) as a, client(("10.0.0.2", 1001)) as b:
                running = asyncio.create_task(a.post("/v1/classify", json={"inputs": "runs first"}))
                await _until(started.is_set)
                queued = asyncio.create_task(b.post("/v1/classify", json={"inputs": "waits its turn"}))
                await _until(lambda: engine.batcher.queued[0] == 1)
                first = await a.post("/v1/classify", json=body)
                t0 = time.monotonic()
                early = await a.post("/v1/classify", json=body)  # at once, ignoring Retry-After
                held_for = time.monotonic() - t0
                other = await b.post("/v1/classify", json=body)  # another connection: its first refusal
                metrics_before_leaving = (await b.get("/metrics")).text
                leaving = json.dumps(body).encode()
                sent = await asgi_call(app, [leaving], client=("10.0.0.1", 1001))  # early again, then leaves
                release.set()
                await running, await queued
                room = await a.post("/v1/classify", json=body)  # early, but the model has room now
                metrics = (await b.get("/metrics")).text
                return first, early, held_for, other, metrics_before_leaving, sent, room, metrics

    first, early, held_for, other, metrics_before, sent, room, metrics = asyncio.run(scenario())
    assert first.status_code == early.status_code == other.status_code == 429
    assert all(int(r.headers["retry-after"]) >= 1 for r in (first, early, other))
    assert held_for >= 0.29  # held 300 ms (its Retry-After of >= 1 s, capped at early_retry_hold_ms)
    model = 'model="tiny-sequence-classification"'
    assert _counter(metrics_before, "bertkit_held_refusals_total", model) == 1  # the early one only
    assert sent == []  # it left during the hold: nothing was sent
    assert _counter(metrics, "bertkit_held_refusals_total", model) == 2
    assert _counter(metrics, "bertkit_requests_total", 'endpoint="/v1/classify",status="499"') == 1
    assert _counter(metrics, "bertkit_requests_total", 'endpoint="/v1/classify",status="429"') == 3
    assert room.status_code == 200
