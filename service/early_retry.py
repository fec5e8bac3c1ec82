"""Hold the 429 of a client connection that comes back before the Retry-After it was given.

A client that honours Retry-After costs the server one cheap refusal per Retry-After. One that
does not (wrk, a retry loop without back-off) sends its next request the moment a 429 arrives, so
under overload the refusals become a busy loop that takes CPU from inference: 1,024 such
connections on 2 cores drew 3,190 429s a second and accepted throughput fell to 0.61x of the
64-connection figure (benchmarks/results/overload.md, before this).

EarlyRetries remembers, per client connection (the ASGI scope's `client`: host and port), until
when it was told to wait. A refusal to a connection that comes back earlier is held until then (at
most `max_hold_s`) before it is sent. A held refusal is a sleeping coroutine: no CPU, and an
HTTP/1.1 connection sends nothing else while it waits for its answer. Only refusals are held: a
request that comes back early while the model has room is admitted at once, and a client that
honours Retry-After never waits for its 429.
"""

from __future__ import annotations

import time
from collections.abc import Hashable


class EarlyRetries:
    def __init__(self, max_hold_s: float, max_clients: int = 65_536, clock=time.monotonic):
        self.max_hold_s = max_hold_s
        self.max_clients = max_clients  # most connections remembered; beyond it the longest-told are forgotten
        self.clock = clock
        self.told_until: dict[Hashable, float] = {}  # connection -> when its last Retry-After ends, oldest first

    def hold_s(self, client: Hashable | None, retry_after_s: float) -> float:
        """Seconds to hold the refusal about to be sent to `client` (0: send it now); remembers the
        Retry-After it carries, counted from when it is sent."""
        if client is None or self.max_hold_s <= 0:
            return 0.0
        now = self.clock()
        told = self.told_until.pop(client, None)
        hold = min(told - now, self.max_hold_s) if told is not None and told > now else 0.0
        self.told_until[client] = now + hold + retry_after_s  # re-inserted: the dict stays in order of telling
        self._forget_expired(now)
        return hold

    def _forget_expired(self, now: float) -> None:
        """Drop connections from the front (told longest ago) while their time has passed or there
        are more than max_clients. Told later means, within a Retry-After or two, ending later, so the
        front is where the expired ones are; a few expired ones behind a live one wait for a later call."""
        told_until = self.told_until
        while told_until:
            client, until = next(iter(told_until.items()))
            if until > now and len(told_until) <= self.max_clients:
                return
            del told_until[client]
