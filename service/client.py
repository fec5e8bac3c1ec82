"""Python client of the bertkit service (sync and async, on httpx): one method per endpoint, typed results.

    from service.client import Client
    with Client("http://127.0.0.1:8000") as bert:
        bert.classify("a gripping, beautifully shot film")[0].label        # 'positive'
        [e.entity_group for e in bert.ner("Angela Merkel visited Paris.")]  # ['PER', 'LOC']
        bert.qa("Where is the tower?", "The tower is in Paris.").answer    # 'Paris'

`AsyncClient` has the same methods as coroutines. A single text (or pair, or question) gives a single
result; a list gives a list. 429 and 503 answers are retried after the server's `Retry-After`
(seconds or an HTTP date; exponential backoff when absent), at most `max_retries` times; other
errors raise `ServiceError` with the server's message.
"""

from __future__ import annotations

import asyncio
import email.utils
import os
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, fields
from typing import Any, TypeVar

import httpx

DEFAULT_URL = "http://127.0.0.1:8000"
RETRY_STATUSES = (429, 503)

T = TypeVar("T")


class ServiceError(Exception):
    """The service answered with an error status (after retries, for 429/503)."""

    def __init__(self, status: int, message: str, kind: str | None = None, request_id: str | None = None):
        super().__init__(f"HTTP {status}: {message}")
        self.status = status
        self.message = message
        self.kind = kind  # the error body's `type`, e.g. validation_error, queue_full, model_not_found
        self.request_id = request_id


# --- typed results -------------------------------------------------------------------------------


def _from_dict(cls: type[T], data: dict) -> T:
    """Build a dataclass from a JSON object, ignoring fields this client version does not know."""
    names = {f.name for f in fields(cls)}  # type: ignore[arg-type]
    return cls(**{k: v for k, v in data.items() if k in names})


@dataclass(frozen=True)
class LabelScore:
    label: str
    score: float


@dataclass(frozen=True)
class Entity:
    entity_group: str  # entity type (with aggregation "none", the full tag such as B-PER)
    score: float
    word: str  # the input's own text[start:end]
    start: int  # character offsets into the input string
    end: int
    index: int | None = None  # token position, aggregation "none" only


@dataclass(frozen=True)
class Answer:
    answer: str
    score: float
    start: int  # character offsets into the context
    end: int


@dataclass(frozen=True)
class MaskPrediction:
    token: int
    token_str: str
    score: float
    sequence: str


@dataclass(frozen=True)
class Tokenized:
    tokens: list[str]
    ids: list[int]
    type_ids: list[int]
    offsets: list[tuple[int, int]]
    sequence_ids: list[int | None]


@dataclass(frozen=True)
class ModelInfo:
    name: str
    task: str
    labels: list[str] | None
    max_seq_len: int
    precision: str
    provider: str = ""
    default: bool = False
    max_batch_tokens: int = 0
    max_batch_size: int = 0


@dataclass(frozen=True)
class Embeddings:
    model: str
    dim: int
    vectors: list[list[float]] = field(repr=False)


# --- requests: one description per endpoint, shared by both clients ------------------------------


@dataclass
class _Call:
    method: str
    path: str
    body: dict | None
    parse: Callable[[Any], Any]


def _body(**values: Any) -> dict:
    """The JSON body without the options left at None (the server's defaults apply)."""
    return {k: v for k, v in values.items() if v is not None}


def _single(inputs: Any, pair_ok: bool = False) -> bool:
    """Whether `inputs` is one input (a text, or a (text, text_pair) tuple) rather than a list of them."""
    return isinstance(inputs, str) or (pair_ok and isinstance(inputs, tuple))


def _as_json_inputs(inputs: Any) -> Any:
    if isinstance(inputs, tuple):
        return list(inputs)
    if isinstance(inputs, list):
        return [list(x) if isinstance(x, tuple) else x for x in inputs]
    return inputs


def _one_or_many(single: bool, items: list) -> Any:
    return items[0] if single else items


def _classify(inputs, top_k, model, truncate, timeout_ms) -> _Call:
    single = _single(inputs, pair_ok=True)
    body = _body(inputs=_as_json_inputs(inputs), top_k=top_k, model=model, truncate=truncate, timeout_ms=timeout_ms)

    def parse(data):
        return _one_or_many(single, [[_from_dict(LabelScore, s) for s in scores] for scores in data["results"]])

    return _Call("POST", "/v1/classify", body, parse)


def _ner(inputs, aggregation_strategy, ignore_labels, model, timeout_ms) -> _Call:
    single = _single(inputs)
    body = _body(
        inputs=inputs,
        aggregation_strategy=aggregation_strategy,
        ignore_labels=ignore_labels,
        model=model,
        timeout_ms=timeout_ms,
    )

    def parse(data):
        return _one_or_many(single, [[_from_dict(Entity, e) for e in ents] for ents in data["results"]])

    return _Call("POST", "/v1/ner", body, parse)


def _qa(pairs, single, top_k, max_answer_len, doc_stride, handle_impossible_answer, model, timeout_ms) -> _Call:
    inputs = [{"question": q, "context": c} for q, c in pairs]
    body = _body(
        inputs=inputs[0] if single else inputs,
        top_k=top_k,
        max_answer_len=max_answer_len,
        doc_stride=doc_stride,
        handle_impossible_answer=handle_impossible_answer,
        model=model,
        timeout_ms=timeout_ms,
    )

    def parse(data):
        results = [
            [_from_dict(Answer, a) for a in r] if isinstance(r, list) else _from_dict(Answer, r)
            for r in data["results"]
        ]
        return _one_or_many(single, results)

    return _Call("POST", "/v1/qa", body, parse)


def _qa_pairs(question: str | Sequence[tuple[str, str]], context: str | None) -> tuple[list[tuple[str, str]], bool]:
    if isinstance(question, str):
        if context is None:
            raise TypeError("qa(question, context): context is required with a single question")
        return [(question, context)], True
    if context is not None:
        raise TypeError("qa(pairs): pass a list of (question, context) pairs and no context")
    return [(q, c) for q, c in question], False


def _embed(inputs, normalize, truncate, model, timeout_ms) -> _Call:
    single = _single(inputs)
    body = _body(inputs=inputs, normalize=normalize, truncate=truncate, model=model, timeout_ms=timeout_ms)

    def parse(data):
        if single:
            return data["embeddings"][0]
        return Embeddings(data["model"], data["dim"], data["embeddings"])

    return _Call("POST", "/v1/embed", body, parse)


def _fill_mask(inputs, top_k, model, timeout_ms) -> _Call:
    single = _single(inputs)
    body = _body(inputs=inputs, top_k=top_k, model=model, timeout_ms=timeout_ms)

    def parse(data):
        return _one_or_many(
            single, [[[_from_dict(MaskPrediction, p) for p in mask] for mask in r] for r in data["results"]]
        )

    return _Call("POST", "/v1/fill-mask", body, parse)


def _tokenize(inputs, model) -> _Call:
    single = _single(inputs, pair_ok=True)
    body = _body(inputs=_as_json_inputs(inputs), model=model)

    def parse(data):
        results = [_from_dict(Tokenized, {**r, "offsets": [tuple(o) for o in r["offsets"]]}) for r in data["results"]]
        return _one_or_many(single, results)

    return _Call("POST", "/v1/tokenize", body, parse)


def _models() -> _Call:
    return _Call("GET", "/v1/models", None, lambda data: [_from_dict(ModelInfo, m) for m in data["models"]])


# --- transport: retries and errors ---------------------------------------------------------------


def retry_delay(response: httpx.Response, attempt: int, backoff: float, max_wait: float) -> float:
    """Seconds to wait before retrying `response`: its Retry-After if usable, else exponential backoff."""
    value = response.headers.get("Retry-After", "").strip()
    delay: float | None = None
    if value:
        try:
            delay = float(value)
        except ValueError:
            try:
                delay = email.utils.parsedate_to_datetime(value).timestamp() - time.time()
            except (TypeError, ValueError):
                delay = None
    if delay is None:
        delay = backoff * (2**attempt) * (1.0 + random.random() * 0.25)
    return min(max(delay, 0.0), max_wait)


def _raise_for(response: httpx.Response) -> None:
    if response.status_code < 400:
        return
    kind = request_id = None
    try:
        error = response.json().get("error") or {}
        message = error.get("message") or response.text
        kind, request_id = error.get("type"), error.get("request_id")
    except (ValueError, AttributeError):
        message = response.text.strip() or response.reason_phrase
    raise ServiceError(response.status_code, message, kind, request_id or response.headers.get("X-Request-ID"))


@dataclass
class _Settings:
    base_url: str
    api_key: str | None
    timeout: float
    max_retries: int
    backoff: float
    max_retry_wait: float

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}


def _settings(base_url, api_key, timeout, max_retries, backoff, max_retry_wait) -> _Settings:
    return _Settings(
        base_url=(base_url or os.environ.get("BERTKIT_URL") or DEFAULT_URL).rstrip("/"),
        api_key=api_key if api_key is not None else os.environ.get("BERTKIT_API_KEY"),
        timeout=timeout,
        max_retries=max_retries,
        backoff=backoff,
        max_retry_wait=max_retry_wait,
    )


class Client:
    """Synchronous client. `base_url` defaults to $BERTKIT_URL or http://127.0.0.1:8000."""

    def __init__(
        self,
        base_url: str | None = None,
        *,
        api_key: str | None = None,
        timeout: float = 60.0,
        max_retries: int = 5,
        backoff: float = 0.25,
        max_retry_wait: float = 30.0,
        transport: httpx.BaseTransport | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ):
        self.settings = _settings(base_url, api_key, timeout, max_retries, backoff, max_retry_wait)
        self._http = httpx.Client(
            base_url=self.settings.base_url, headers=self.settings.headers(), timeout=timeout, transport=transport
        )
        self._sleep = sleep

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def _send(self, method: str, path: str, body: dict | None) -> httpx.Response:
        for attempt in range(self.settings.max_retries + 1):
            response = self._http.request(method, path, json=body)
            if response.status_code not in RETRY_STATUSES or attempt == self.settings.max_retries:
                return response
            self._sleep(retry_delay(response, attempt, self.settings.backoff, self.settings.max_retry_wait))
        raise AssertionError("unreachable")

    def _call(self, call: _Call) -> Any:
        response = self._send(call.method, call.path, call.body)
        _raise_for(response)
        return call.parse(response.json())

    # --- endpoints -----------------------------------------------------------------------------

    def classify(self, inputs, *, top_k=None, model=None, truncate=None, timeout_ms=None):
        """POST /v1/classify: a text, (text, pair) or a list of them -> [LabelScore] best first (per input)."""
        return self._call(_classify(inputs, top_k, model, truncate, timeout_ms))

    def ner(self, inputs, *, aggregation_strategy=None, ignore_labels=None, model=None, timeout_ms=None):
        """POST /v1/ner: a text or a list of texts -> [Entity] with character offsets (per input)."""
        return self._call(_ner(inputs, aggregation_strategy, ignore_labels, model, timeout_ms))

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
        pairs, single = _qa_pairs(question, context)
        return self._call(
            _qa(pairs, single, top_k, max_answer_len, doc_stride, handle_impossible_answer, model, timeout_ms)
        )

    def embed(self, inputs, *, normalize=None, truncate=None, model=None, timeout_ms=None):
        """POST /v1/embed: a text -> its vector; a list -> Embeddings(model, dim, vectors)."""
        return self._call(_embed(inputs, normalize, truncate, model, timeout_ms))

    def fill_mask(self, inputs, *, top_k=None, model=None, timeout_ms=None):
        """POST /v1/fill-mask: per input, per [MASK], the top_k MaskPredictions."""
        return self._call(_fill_mask(inputs, top_k, model, timeout_ms))

    def tokenize(self, inputs, *, model=None):
        """POST /v1/tokenize: tokens, ids, type ids, offsets and sequence ids of a text or pair (per input)."""
        return self._call(_tokenize(inputs, model))

    def models(self) -> list[ModelInfo]:
        """GET /v1/models: the loaded bundles."""
        return self._call(_models())

    def health(self) -> bool:
        """GET /health: whether the process answers."""
        return self._http.get("/health").status_code == 200

    def ready(self) -> bool:
        """GET /ready: whether every bundle is loaded and warmed up."""
        return self._http.get("/ready").status_code == 200

    def metrics(self) -> str:
        """GET /metrics: the Prometheus text exposition."""
        response = self._http.get("/metrics")
        _raise_for(response)
        return response.text

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


class AsyncClient:
    """Asynchronous client: the methods of `Client` as coroutines."""

    def __init__(
        self,
        base_url: str | None = None,
        *,
        api_key: str | None = None,
        timeout: float = 60.0,
        max_retries: int = 5,
        backoff: float = 0.25,
        max_retry_wait: float = 30.0,
        transport: httpx.AsyncBaseTransport | None = None,
        sleep: Callable[[float], Any] = asyncio.sleep,
    ):
        self.settings = _settings(base_url, api_key, timeout, max_retries, backoff, max_retry_wait)
        self._http = httpx.AsyncClient(
            base_url=self.settings.base_url, headers=self.settings.headers(), timeout=timeout, transport=transport
        )
        self._sleep = sleep

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def _send(self, method: str, path: str, body: dict | None) -> httpx.Response:
        for attempt in range(self.settings.max_retries + 1):
            response = await self._http.request(method, path, json=body)
            if response.status_code not in RETRY_STATUSES or attempt == self.settings.max_retries:
                return response
            await self._sleep(retry_delay(response, attempt, self.settings.backoff, self.settings.max_retry_wait))
        raise AssertionError("unreachable")

    async def _call(self, call: _Call) -> Any:
        response = await self._send(call.method, call.path, call.body)
        _raise_for(response)
        return call.parse(response.json())

    async def classify(self, inputs, *, top_k=None, model=None, truncate=None, timeout_ms=None):
        return await self._call(_classify(inputs, top_k, model, truncate, timeout_ms))

    async def ner(self, inputs, *, aggregation_strategy=None, ignore_labels=None, model=None, timeout_ms=None):
        return await self._call(_ner(inputs, aggregation_strategy, ignore_labels, model, timeout_ms))

    async def qa(
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
        pairs, single = _qa_pairs(question, context)
        return await self._call(
            _qa(pairs, single, top_k, max_answer_len, doc_stride, handle_impossible_answer, model, timeout_ms)
        )

    async def embed(self, inputs, *, normalize=None, truncate=None, model=None, timeout_ms=None):
        return await self._call(_embed(inputs, normalize, truncate, model, timeout_ms))

    async def fill_mask(self, inputs, *, top_k=None, model=None, timeout_ms=None):
        return await self._call(_fill_mask(inputs, top_k, model, timeout_ms))

    async def tokenize(self, inputs, *, model=None):
        return await self._call(_tokenize(inputs, model))

    async def models(self) -> list[ModelInfo]:
        return await self._call(_models())

    async def health(self) -> bool:
        return (await self._http.get("/health")).status_code == 200

    async def ready(self) -> bool:
        return (await self._http.get("/ready")).status_code == 200

    async def metrics(self) -> str:
        response = await self._http.get("/metrics")
        _raise_for(response)
        return response.text
