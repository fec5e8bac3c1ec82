"""`AsyncClient`: the endpoints of `Client` as coroutines, over httpx.AsyncClient."""

from __future__ import annotations

import asyncio
import itertools
from typing import Any

import httpx

from service.client.calls import Call
from service.client.endpoints import Endpoints


class AsyncClient(Endpoints):
    """Asynchronous client: the methods of `Client` as coroutines (`aclose` instead of `close`)."""

    _http_class = httpx.AsyncClient
    _default_sleep = staticmethod(asyncio.sleep)

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def _call(self, call: Call) -> Any:
        for attempt in itertools.count():
            response = await self._http.request(call.method, call.path, json=call.body)
            if (wait := self.settings.wait_before_retry(call, response, attempt)) is None:
                return call.read(response)
            await self._sleep(wait)
