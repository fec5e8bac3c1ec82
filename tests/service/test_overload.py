"""The service at its edges: 429 before tokenizing when the queue is over max_queue_ms, and clients that
leave are 499 (never 500) in the access log and /metrics, with their queued sequences dropped."""

from __future__ import annotations

import asyncio
import json
import random
import re
import socket
import threading
import time

import httpx

from service.main import create_app
from tests.service.conftest import make_settings
from tests.service.live_service import serve_bundles

MODEL = "tiny-sequence-classification"


def _requests_by_status(text: str) -> dict[str, float]:
    """bertkit_requests_total summed per status, from a /metrics page."""
    counts: dict[str, float] = {}
    for status, value in re.findall(r'^bertkit_requests_total\{[^}]*status="(\d+)"[^}]*\} (\S+)$', text, re.M):
        counts[status] = counts.get(status, 0) + float(value)
    return counts


def hold_backend(engine) -> tuple[threading.Event, threading.Event]:
    """(started, release): the engine's backend holds every batch until `release` is set (10 s at most)."""
    started, release = threading.Event(), threading.Event()
    real_run = engine.batcher.backend.run

    def held(batch):
        started.set()
        release.wait(10)
        return real_run(batch)

    engine.batcher.backend.run = held
    return started, release


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
            started, gate = hold_backend(engine)

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


def _call(app, chunks: list[bytes | None]) -> list[dict]:
    return asyncio.run(asgi_call(app, chunks))


async def asgi_call(app, chunks: list[bytes | None], client: tuple[str, int] = ("test", 1)) -> list[dict]:
    """Run one POST /v1/classify from `client` through the ASGI app and return what it sent; each chunk
    is a body part, None a disconnect, and the client disconnects once the chunks run out."""
    scope = {"type": "http", "method": "POST", "path": "/v1/classify", "raw_path": b"/v1/classify",
             "query_string": b"", "headers": [(b"content-type", b"application/json")], "http_version": "1.1",
             "scheme": "http", "server": ("test", 80), "client": client, "root_path": ""}  # fmt: skip
    pending, sent = list(chunks), []

    async def receive():
        chunk = pending.pop(0) if pending else None
        if chunk is None:
            return {"type": "http.disconnect"}
        return {"type": "http.request", "body": chunk, "more_body": bool(pending)}

    async def send(message):
        sent.append(message)

    await app(scope, receive, send)
    return sent


def test_client_gone_before_its_body_arrived_is_499_not_500(client):
    metrics = client.app.state.bertkit.metrics

    def count(status: str) -> float:
        return metrics.registry.get_sample_value("bertkit_requests_total", {"endpoint": "other", "status": status})

    before_499, before_500 = count("499") or 0, count("500") or 0
    # the body cut short; and no body at all (uvicorn reports a disconnect that came before the app read it)
    assert _call(client.app, [b'{"inputs": "half a bo', None]) == []
    assert _call(client.app, [None]) == []
    assert count("499") == before_499 + 2
    assert (count("500") or 0) == before_500


def _raw_request(body: bytes) -> bytes:
    head = f"POST /v1/classify HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\nContent-Length: {len(body)}"
    return head.encode() + b"\r\n\r\n" + body


def test_a_burst_of_clients_that_leave_is_499_never_500_and_their_work_is_dropped(tiny_bundles, tmp_path):
    """The real server (uvicorn, httptools) and raw sockets: clients that close mid-body, right after
    sending, and while their sequences are queued; a few stay for their answers."""
    rng = random.Random(0)
    words = "the movie was great bad boring fun and really quite long winded".split()
    bodies = [
        json.dumps({"inputs": [" ".join(rng.choice(words) for _ in range(40)) for _ in range(32)]}).encode()
        for _ in range(8)
    ]
    log = tmp_path / "serve.log"
    env = {"BERTKIT_BACKEND_WORKERS": "1", "BERTKIT_MAX_BATCH_SIZE": "1", "BERTKIT_MAX_QUEUE_MS": "600000"}
    with serve_bundles([tiny_bundles["sequence-classification"]], log, **env) as url:
        port = int(url.rsplit(":", 1)[1])
        outcomes: dict[str, list] = {"cut": [], "sent": [], "queued": [], "stayed": []}

        def client(kind: str, body: bytes) -> None:
            request = _raw_request(body)
            with socket.create_connection(("127.0.0.1", port), timeout=60) as s:
                if kind == "cut":
                    s.sendall(request[: len(request) // 2])
                    time.sleep(0.02)
                    return outcomes[kind].append(None)
                s.sendall(request)
                if kind == "sent":
                    return outcomes[kind].append(None)
                if kind == "queued":
                    time.sleep(rng.uniform(0.05, 0.3))
                    return outcomes[kind].append(None)
                outcomes[kind].append(s.makefile("rb").readline().split()[1])  # HTTP/1.1 200 OK

        kinds = ["cut"] * 30 + ["sent"] * 30 + ["queued"] * 60 + ["stayed"] * 4
        rng.shuffle(kinds)
        threads = [threading.Thread(target=client, args=(kind, rng.choice(bodies))) for kind in kinds]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        # Every request is accounted for once its handler has finished (a dropped one finishes fast).
        end = time.monotonic() + 60
        while True:
            page = httpx.get(f"{url}/metrics").text
            statuses = _requests_by_status(page)
            if statuses.get("499", 0) + statuses.get("500", 0) + statuses.get("200", 0) >= len(kinds) + 1:
                break  # + 1: the /ready poll
            assert time.monotonic() < end, statuses
            time.sleep(0.2)
        after = httpx.post(f"{url}/v1/classify", json={"inputs": "still serving"})
    dropped = re.search(r'^bertkit_dropped_sequences_total\{model="[^"]+",reason="cancelled"\} (\S+)$', page, re.M)
    access = [line for line in log.read_text().splitlines() if "POST /v1/classify" in line]
    print("statuses:", statuses, "dropped:", dropped and dropped.group(1))
    assert after.status_code == 200
    assert outcomes["stayed"] == [b"200"] * 4
    assert "500" not in statuses and not any(" 500 " in line for line in access)
    assert statuses.get("499", 0) >= 30 + 30  # at least every client that never waited for an answer
    assert sum(" 499 " in line for line in access) == statuses["499"]
    assert dropped and float(dropped.group(1)) > 0  # queued sequences of clients that left never ran
