"""Run the real service in a subprocess on 127.0.0.1 for end-to-end tests (client, browser, docker, demo)."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _tail(path: Path, chars: int = 3000) -> str:
    try:
        return path.read_text(errors="replace")[-chars:]
    except OSError:
        return ""


def wait_ready(url: str, proc: subprocess.Popen, log: Path, timeout: float = 120.0) -> None:
    """Poll `url`/ready until 200; fail with the process's log if it exits or the time runs out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"the service exited with {proc.returncode} before /ready:\n{_tail(log)}")
        try:
            if httpx.get(f"{url}/ready", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise AssertionError(f"{url}/ready did not answer 200 within {timeout:.0f} s:\n{_tail(log)}")


def stop(proc: subprocess.Popen, timeout: float = 20.0) -> int:
    """SIGTERM the process (the way Docker and Kubernetes stop it), then kill it if it hangs."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
    return proc.returncode


@dataclass
class Live:
    url: str  # http://127.0.0.1:PORT
    proc: subprocess.Popen  # after the `with` block: stopped, returncode set


@contextlib.contextmanager
def running(
    cmd: Sequence[str], log: Path, port: int, env: dict | None = None, cwd: Path | None = None, timeout: float = 120.0
) -> Iterator[Live]:
    """Start `cmd`, wait until http://127.0.0.1:PORT/ready answers, yield it, then SIGTERM it."""
    url = f"http://127.0.0.1:{port}"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            list(cmd), cwd=cwd or REPO, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        wait_ready(url, proc, log, timeout)
        yield Live(url, proc)
    finally:
        stop(proc)


@contextlib.contextmanager
def serve_bundles(bundles: Sequence[Path], log: Path, **env_overrides: str) -> Iterator[str]:
    """`bert serve --bundles ...` on a free port, with the test interpreter."""
    port = free_port()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "BERTKIT_INTRA_OP_THREADS": "1", **env_overrides}
    cmd = [sys.executable, "-m", "cli.main", "serve", "--bundles", *map(str, bundles), "--port", str(port)]
    with running(cmd, log, port, env=env) as live:
        yield live.url
