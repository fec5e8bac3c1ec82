"""Refuse requests to an overloaded model with 429 before FastAPI parses them.

Under overload most requests are refused. Refused the normal way, each still costs the event loop
routing, pydantic validation, dependency injection and an exception handler: work that shares
the CPU with the model. A closed-loop client retries at once, so on a small machine the refusals
alone take a core away from inference (1,024 connections on 2 cores: 33-45% of requests were
429s and accepted throughput fell to 75-81% of the 64-connection figure).

This middleware sits after BodyGuardMiddleware (the body is already read and bounded). For
`POST /v1/<task>` it finds the model the request names (a regex over the raw JSON, no parse),
and when that model is loaded and its queued work is already over `max_queue_ms` (the batcher's
own `refusal()`, the test `admit` makes) it answers the same 429 + Retry-After the route would.
Every other request, and every doubt (no key or a wrong one, a model not loaded, a body it cannot
read), goes on to the app unchanged. The gate does not validate: while a model is overloaded, an
invalid request to it is refused 429 too, and told what is wrong when it comes back.

A connection that comes back before the Retry-After it was given gets its 429 after a hold (up to
`early_retry_hold_ms`, see service.early_retry): a client that ignores Retry-After cannot turn the
refusals into a busy loop. A client that leaves during the hold gets nothing (logged as 499).
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time

from service.asgi import error_json, header, replaying, send_json
from service.deps import api_key_accepted
from service.early_retry import EarlyRetries
from service.engine import TASK_ROUTES, overloaded
from service.state import AppState

TASK_OF_PATH = {path: task for task, path in TASK_ROUTES.items()}
ENDPOINT_KEY = "bertkit.endpoint"  # scope key: the route path, for metrics when no route ran
REFUSED_KEY = "bertkit.refused"  # scope key: the model the gate refused the request for
log = logging.getLogger("service")
# "model": "NAME" at the top level or anywhere (a nested "model" key only makes the gate pass)
_MODEL = re.compile(rb'"model"\s*:\s*(null|"((?:[^"\\]|\\.)*)")')


def model_named(body: bytes) -> tuple[bool, str | None]:
    """(readable, model): the model the JSON body names (None: the default) if there is one answer."""
    found = _MODEL.findall(body)
    if not found:
        return True, None
    if len(found) > 1:
        return False, None  # "model" also inside the inputs: let the app read it properly
    raw, quoted = found[0]
    if raw == b"null":
        return True, None
    try:
        return True, json.loads(b'"' + quoted + b'"')
    except ValueError:
        return False, None


class RefusalLog:
    """The gate's 429s in the log as one line per model and `every_s` seconds, not one per request:
    under a storm of retries, a line per refusal costs the event loop as much as the refusal itself
    and buries everything else. /metrics still counts each one."""

    def __init__(self, every_s: float = 1.0, clock=time.monotonic):
        self.every_s, self.clock = every_s, clock
        self.counts: dict[str, int] = {}
        self.since = clock()

    def note(self, model: str) -> None:
        if not self.counts:
            self.since = self.clock()  # the window opens at the first refusal after a quiet spell
        self.counts[model] = self.counts.get(model, 0) + 1
        self.flush_if_due()

    def flush_if_due(self) -> None:
        """Log the counts if `every_s` has passed (also called on answered requests, so the last
        refusals of a burst are logged once traffic goes on)."""
        if not self.counts:
            return
        now = self.clock()
        if now - self.since < self.every_s:
            return
        for name, count in self.counts.items():
            log.info(
                "429 x %d for model %r in the last %.1fs: queued work over max_queue_ms", count, name, now - self.since
            )
        self.counts, self.since = {}, now


class OverloadGateMiddleware:
    def __init__(self, app, state: AppState):
        self.app = app
        self.state = state
        self.early_retries = EarlyRetries(state.settings.early_retry_hold_ms / 1000)

    def _authorized(self, scope) -> bool:
        return api_key_accepted(self.state, header(scope, b"authorization", b"").decode("latin-1"))

    async def __call__(self, scope, receive, send):
        task = TASK_OF_PATH.get(scope.get("path", "")) if scope["type"] == "http" else None
        if task is None or scope.get("method") != "POST" or not self._authorized(scope):
            return await self.app(scope, receive, send)
        message = await receive()  # BodyGuardMiddleware replays the whole body in one message
        body = message.get("body", b"") if message["type"] == "http.request" else b""
        readable, name = model_named(body)
        engine = self.state.registry.loaded_for(task, name) if readable and not self.state.draining else None
        refusal = engine.batcher.refusal() if engine is not None else None
        if refusal is not None:
            scope[ENDPOINT_KEY], scope[REFUSED_KEY] = scope["path"], engine.name
            self.state.metrics.rejected.labels(engine.name).inc()
            error = overloaded(refusal)  # the route's own 429: same type, message and Retry-After
            hold = self.early_retries.hold_s(scope.get("client"), refusal.retry_after_s)
            if hold > 0:
                self.state.metrics.held_refusals.labels(engine.name).inc()
                if await left_within(receive, hold):
                    return  # nobody to answer: the access log records 499
            headers = tuple((k.lower().encode(), v.encode()) for k, v in error.headers.items())
            return await send_json(send, error.status, error_json(error.type, error.message), headers)
        await self.app(scope, replaying(message, receive), send)


async def left_within(receive, seconds: float) -> bool:
    """Whether the client disconnects within `seconds` (its request body already read: the next
    message the server sends is http.disconnect, when it leaves)."""
    try:
        async with asyncio.timeout(seconds):
            return (await receive())["type"] == "http.disconnect"
    except TimeoutError:
        return False
