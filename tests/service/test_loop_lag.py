"""The event-loop lag: smoothed over time, ~0 at idle, and it follows a blocked loop."""

from __future__ import annotations

import asyncio
import time

import pytest

from service.loop_lag import LoopLag


def test_lag_is_smoothed_over_time_not_samples():
    lag = LoopLag(half_life_s=0.5)
    lag.observe(0.0, now=0.0)
    lag.observe(0.2, now=0.5)  # one half-life later: half way to the new sample
    assert lag.seconds == pytest.approx(0.1)
    for i in range(1, 11):  # ten samples 1 ms apart barely move it: one slow iteration does not swing admission
        lag.observe(0.0, now=0.5 + i / 1000)
    assert lag.seconds == pytest.approx(0.1 * 0.5 ** (10 / 500), rel=1e-6)
    lag.observe(-0.01, now=5.0)  # a timer that fired early counts as no lag
    assert lag.seconds == pytest.approx(0.0, abs=1e-3)


def test_watch_reads_about_zero_at_idle_and_the_length_of_a_blocked_iteration():
    lag = LoopLag(half_life_s=0.05)

    async def scenario():
        watcher = asyncio.create_task(lag.watch(interval_s=0.005))
        await asyncio.sleep(0.1)
        idle = lag.seconds
        for _ in range(5):
            time.sleep(0.05)  # the loop busy for 50 ms an iteration
            await asyncio.sleep(0)
        busy = lag.seconds
        watcher.cancel()
        return idle, busy

    idle, busy = asyncio.run(scenario())
    assert idle < 0.01
    assert 0.02 < busy < 0.2
