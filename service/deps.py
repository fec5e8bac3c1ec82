"""FastAPI dependencies: app state, API key, deadline header, disconnect-aware waiting."""

from __future__ import annotations

import asyncio
import hmac
from collections.abc import Awaitable
from typing import Annotated, TypeVar

from fastapi import Depends, Header, Request

from service.errors import ClientGoneError, PayloadTooLargeError, UnauthorizedError
from service.state import AppState

T = TypeVar("T")


# Dependencies are `async def` on purpose: FastAPI runs a plain `def` dependency in a worker thread,
# two thread hand-offs per request for a dictionary lookup (measured: ~15% of the event loop's CPU).


async def get_state(request: Request) -> AppState:
    return request.app.state.bertkit


StateDep = Annotated[AppState, Depends(get_state)]


def api_key_accepted(state: AppState, authorization: str) -> bool:
    """True when no API key is configured or `authorization` is `Bearer <key>` (constant-time compare)."""
    key = state.settings.api_key
    if key is None:
        return True
    scheme, _, token = authorization.partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(token.strip().encode(), key.get_secret_value().encode())


async def require_api_key(request: Request, state: StateDep) -> None:
    """`Authorization: Bearer <key>` when an API key is configured."""
    if not api_key_accepted(state, request.headers.get("authorization", "")):
        raise UnauthorizedError("missing or wrong API key: send `Authorization: Bearer <key>`")


TimeoutHeader = Annotated[
    int | None,
    Header(
        alias="X-Request-Timeout",
        ge=1,
        description="Deadline in milliseconds (the body's timeout_ms wins); past it the answer is 504.",
    ),
]


def check_count(state: AppState, count: int) -> None:
    limit = state.settings.max_inputs_per_request
    if count > limit:
        raise PayloadTooLargeError(f"the request has {count} inputs; at most {limit} per request, split it")


async def _wait_disconnect(request: Request) -> None:
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            return


async def until_disconnect(request: Request, work: Awaitable[T]) -> T:
    """Await `work`, cancelling it (and its queued sequences) if the client disconnects first.

    `work` runs in the calling task, not a task of its own: under load every task hand-off waits a
    whole event-loop iteration (service.loop_lag), and a separate task costs two of them (its start
    and waking the caller when it ends). A gone client cancels the calling task instead, and that
    cancellation is turned into ClientGoneError here.
    """
    current = asyncio.current_task()
    watcher = asyncio.ensure_future(_wait_disconnect(request))
    waiting, gone = True, False

    def on_watcher_done(w: asyncio.Future) -> None:
        nonlocal gone
        if waiting and not w.cancelled():
            w.exception()  # mark it seen; a failed receive counts as a gone client too
            gone = True
            current.cancel()

    # A done-callback instead of asyncio.wait: one less future and four less callbacks per request.
    watcher.add_done_callback(on_watcher_done)
    try:
        return await work
    except asyncio.CancelledError:
        if gone:
            current.uncancel()  # our own cancellation, handled here
            raise ClientGoneError("the client closed the connection before the answer was ready") from None
        raise
    finally:
        waiting = False  # a callback already scheduled must not cancel what the caller does next
        watcher.remove_done_callback(on_watcher_done)
        watcher.cancel()
