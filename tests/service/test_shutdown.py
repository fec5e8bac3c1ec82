"""SIGTERM during a burst against a real uvicorn process: every accepted request gets a 200."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_ready(url: str, proc: subprocess.Popen, timeout: float = 60) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise AssertionError(f"server exited early: {proc.stderr.read().decode()[-2000:]}")
        try:
            if httpx.get(url + "/ready", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise AssertionError("server did not become ready")


def test_sigterm_drains_in_flight_requests(tiny_bundles):
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    env = dict(os.environ, BERTKIT_BUNDLES=str(tiny_bundles["sequence-classification"]), BERTKIT_LOG_LEVEL="info",
               BERTKIT_MAX_BATCH_SIZE="4")  # fmt: skip
    proc = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "service.main:app", "--host", "127.0.0.1", "--port", str(port),
         "--no-access-log", "--timeout-graceful-shutdown", "20"],
        cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        _wait_ready(url, proc)
        body = {"inputs": [" ".join(["the movie was really great fun"] * 8)] * 16}
        statuses: list[int] = []
        finished_after_signal = 0
        signalled_at: list[float] = []

        async def client_loop(client: httpx.AsyncClient) -> None:
            nonlocal finished_after_signal
            while True:
                try:
                    r = await client.post(url + "/v1/classify", json=body)
                except httpx.TransportError:
                    return  # refused or closed before the request was accepted
                statuses.append(r.status_code)
                if signalled_at and time.monotonic() > signalled_at[0]:
                    finished_after_signal += 1

        async def burst() -> None:
            async with httpx.AsyncClient(timeout=30, limits=httpx.Limits(max_connections=32)) as client:
                loops = [asyncio.create_task(client_loop(client)) for _ in range(24)]
                await asyncio.sleep(1.0)
                signalled_at.append(time.monotonic())
                proc.send_signal(signal.SIGTERM)
                await asyncio.wait_for(asyncio.gather(*loops), 60)

        asyncio.run(burst())
        proc.wait(timeout=30)
        log = proc.stderr.read().decode()
    finally:
        if proc.poll() is None:
            proc.kill()
    assert statuses and set(statuses) == {200}, sorted(set(statuses))
    assert finished_after_signal > 0  # requests in flight at SIGTERM were answered
    assert "readiness off" in log and "stopped" in log
    assert proc.returncode in (0, -signal.SIGTERM)
