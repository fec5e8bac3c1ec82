"""How long a request waits for the event loop, outside the model's queue.

Under many connections the event loop, not the model, is where a request waits longest on a small
machine. One loop iteration serves every socket that became ready during the previous one, so with
1,024 busy connections an iteration lasts long (hundreds of ms), and an accepted request waits for
the loop several times: before its bytes are read, when its tokens come back from the tokenizer
pool, and when its batch is done and the answer is to be written. The batcher's admission counts
only the work queued for the model, so accepted requests waited max_queue_ms in the queue *plus*
those loop waits (accepted p99 ~2.5 s for a 1 s max_queue_ms at 1,024 connections on 2 cores).

`LoopLag` measures the loop: a background task sleeps `interval_s` and records how late it woke
up. A timer that falls due during an iteration runs at the start of the next one, so the
lateness is about one iteration: what a request that becomes ready now waits before the loop
reads it. Samples are smoothed exponentially over time (half-life `half_life_s`), short enough to
follow a burst within a second, long enough that one slow iteration (a garbage collection) does
not swing admission. At idle the lag is ~0 and changes nothing.

Admission (service.batching.Batcher, its `outside_wait`) adds `factor x lag` to the queue wait of
a new request.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable


class LoopLag:
    """Smoothed lateness of the event loop, in seconds; `observe` is fed by `watch` (or by tests)."""

    def __init__(self, half_life_s: float = 0.5, clock: Callable[[], float] = time.monotonic):
        self.half_life_s = half_life_s
        self.clock = clock
        self.seconds = 0.0  # smoothed lag
        self._last: float | None = None  # when the last sample came

    def observe(self, late_s: float, now: float) -> None:
        """One sample: a callback due at `now - late_s` ran at `now`."""
        if self._last is None:
            self.seconds = max(0.0, late_s)
        else:
            # Weighted by the time the sample covers: a long iteration is one sample but a long time.
            weight = 1.0 - 0.5 ** (max(0.0, now - self._last) / self.half_life_s)
            self.seconds += weight * (max(0.0, late_s) - self.seconds)
        self._last = now

    async def watch(self, interval_s: float = 0.01) -> None:
        """Sample forever (cancel to stop): sleep `interval_s`, record the oversleep."""
        while True:
            due = self.clock() + interval_s
            await asyncio.sleep(interval_s)
            now = self.clock()
            self.observe(now - due, now)
