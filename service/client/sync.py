"""`Client`: the endpoints over a blocking httpx.Client."""

from __future__ import annotations

import itertools
import time
from typing import Any

import httpx

from service.client.calls import Call
from service.client.endpoints import Endpoints


class Client(Endpoints):
    """Synchronous client. `base_url` defaults to $BERTKIT_URL or http://127.0.0.1:8000."""

    _http_class = httpx.Client
    _default_sleep = staticmethod(time.sleep)

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def _call(self, call: Call) -> Any:
        for attempt in itertools.count():
            response = self._http.request(call.method, call.path, json=call.body)
            if (wait := self.settings.wait_before_retry(call, response, attempt)) is None:
                return call.read(response)
            self._sleep(wait)

    def wait_ready(self, timeout: float = 60.0, interval: float = 0.25) -> None:
        """Block until /ready answers 200; TimeoutError after `timeout` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                if self.ready():
                    return
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.settings.base_url} was not ready within {timeout:.0f} s")
            time.sleep(interval)
