"""The public methods, written once for both clients: each builds its `Call` and hands it to `_call`.

`Client._call` sends it and returns the result; `AsyncClient._call` is a coroutine, so there the
same methods return awaitables.
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import httpx

from service.client import calls
from service.client.retry import RETRY_STATUSES, retry_delay

DEFAULT_URL = "http://127.0.0.1:8000"


@dataclass
class Settings:
    base_url: str
    api_key: str | None
    timeout: float
    max_retries: int  # retries of a 429/503 answer before it raises ServiceError
    backoff: float  # first wait in seconds when the answer has no usable Retry-After; doubles each time
    max_retry_wait: float  # cap on any single wait, Retry-After included

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}

    def wait_before_retry(self, call: calls.Call, response: httpx.Response, attempt: int) -> float | None:
        """Seconds to wait before sending `call` again, or None when `response` is its answer."""
        if not call.retry or response.status_code not in RETRY_STATUSES or attempt >= self.max_retries:
            return None
        return retry_delay(response, attempt, self.backoff, self.max_retry_wait)


class Endpoints(ABC):
    """What `Client` and `AsyncClient` share. `base_url` defaults to $BERTKIT_URL or http://127.0.0.1:8000."""

    _http_class: ClassVar[type[httpx.Client] | type[httpx.AsyncClient]]
    _default_sleep: ClassVar[Callable[[float], Any]]

    def __init__(
        self,
        base_url: str | None = None,
        *,
        api_key: str | None = None,
        timeout: float = 60.0,
        max_retries: int = 5,
        backoff: float = 0.25,
        max_retry_wait: float = 30.0,
        transport: httpx.BaseTransport | httpx.AsyncBaseTransport | None = None,
        sleep: Callable[[float], Any] | None = None,  # how to wait between retries (tests pass a recorder)
    ):
        self.settings = Settings(
            base_url=(base_url or os.environ.get("BERTKIT_URL") or DEFAULT_URL).rstrip("/"),
            api_key=api_key if api_key is not None else os.environ.get("BERTKIT_API_KEY"),
            timeout=timeout,
            max_retries=max_retries,
            backoff=backoff,
            max_retry_wait=max_retry_wait,
        )
        self._http = self._http_class(
            base_url=self.settings.base_url, headers=self.settings.headers(), timeout=timeout, transport=transport
        )
        self._sleep = sleep or self._default_sleep

    @abstractmethod
    def _call(self, call: calls.Call) -> Any:
        """Send `call` and read its answer: blocking in Client, a coroutine in AsyncClient."""

    def classify(self, inputs, *, top_k=None, model=None, truncate=None, timeout_ms=None):
        """POST /v1/classify: a text, (text, pair) or a list of them -> [LabelScore] best first (per input)."""
        return self._call(calls.classify(inputs, top_k, model, truncate, timeout_ms))

    def ner(self, inputs, *, aggregation_strategy=None, ignore_labels=None, model=None, timeout_ms=None):
        """POST /v1/ner: a text or a list of texts -> [Entity] with character offsets (per input)."""
        return self._call(calls.ner(inputs, aggregation_strategy, ignore_labels, model, timeout_ms))

    def qa(
        self,
        question,
        context=None,
        *,
        top_k=None,
        max_answer_len=None,
        doc_stride=None,
        handle_impossible_answer=None,
        model=None,
        timeout_ms=None,
    ):
        """POST /v1/qa: (question, context) -> Answer, or [(question, context), ...] -> [Answer].

        With top_k > 1 each answer becomes a list of Answers, best first.
        """
        call = calls.qa(
            question, context, top_k, max_answer_len, doc_stride, handle_impossible_answer, model, timeout_ms
        )
        return self._call(call)

    def embed(self, inputs, *, normalize=None, truncate=None, model=None, timeout_ms=None):
        """POST /v1/embed: a text -> its vector; a list -> EmbedResponse(model, dim, embeddings)."""
        return self._call(calls.embed(inputs, normalize, truncate, model, timeout_ms))

    def fill_mask(self, inputs, *, top_k=None, model=None, timeout_ms=None):
        """POST /v1/fill-mask: per input, per [MASK], the top_k MaskPredictions."""
        return self._call(calls.fill_mask(inputs, top_k, model, timeout_ms))

    def tokenize(self, inputs, *, model=None):
        """POST /v1/tokenize: a TokenizedText (tokens, ids, type ids, offsets, sequence ids) per input."""
        return self._call(calls.tokenize(inputs, model))

    def models(self):
        """GET /v1/models: the loaded bundles, as [ModelInfo]."""
        return self._call(calls.models())

    def health(self):
        """GET /health: whether the process answers."""
        return self._call(calls.health())

    def ready(self):
        """GET /ready: whether every bundle is loaded and warmed up."""
        return self._call(calls.ready())

    def metrics(self):
        """GET /metrics: the Prometheus text exposition."""
        return self._call(calls.metrics())
