"""One `Call` per endpoint: the request to send and how its answer becomes the result, shared by both clients.

Answers are read into the response models of `service/schemas.py`, the same classes the service
answers with; fields this client version does not know are ignored.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import httpx
from pydantic import BaseModel

from service.client.retry import checked
from service.schemas import (
    ClassifyResponse,
    EmbedResponse,
    FillMaskResponse,
    ModelsResponse,
    NerResponse,
    QaResponse,
    TokenizeResponse,
)


@dataclass(frozen=True)
class Call:
    method: str
    path: str
    read: Callable[[httpx.Response], Any]  # the final answer -> the method's result (raises ServiceError)
    body: dict | None = None
    retry: bool = True  # /health and /ready: a 503 is the answer, not a reason to wait


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


def _results(schema: type[BaseModel], single: bool) -> Callable[[httpx.Response], Any]:
    """Read `schema` from the answer; its `results`, or the only one of them for a single input."""

    def read(response: httpx.Response) -> Any:
        results = schema.model_validate(checked(response).json()).results
        return results[0] if single else results

    return read


def classify(inputs, top_k, model, truncate, timeout_ms) -> Call:
    body = _body(inputs=_as_json_inputs(inputs), top_k=top_k, model=model, truncate=truncate, timeout_ms=timeout_ms)
    return Call("POST", "/v1/classify", _results(ClassifyResponse, _single(inputs, pair_ok=True)), body)


def ner(inputs, aggregation_strategy, ignore_labels, model, timeout_ms) -> Call:
    body = _body(
        inputs=inputs,
        aggregation_strategy=aggregation_strategy,
        ignore_labels=ignore_labels,
        model=model,
        timeout_ms=timeout_ms,
    )
    return Call("POST", "/v1/ner", _results(NerResponse, _single(inputs)), body)


def qa(question, context, top_k, max_answer_len, doc_stride, handle_impossible_answer, model, timeout_ms) -> Call:
    pairs, single = _qa_pairs(question, context)
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
    return Call("POST", "/v1/qa", _results(QaResponse, single), body)


def _qa_pairs(question: str | Sequence[tuple[str, str]], context: str | None) -> tuple[list[tuple[str, str]], bool]:
    if isinstance(question, str):
        if context is None:
            raise TypeError("qa(question, context): context is required with a single question")
        return [(question, context)], True
    if context is not None:
        raise TypeError("qa(pairs): pass a list of (question, context) pairs and no context")
    return [(q, c) for q, c in question], False


def embed(inputs, normalize, truncate, model, timeout_ms) -> Call:
    single = _single(inputs)
    body = _body(inputs=inputs, normalize=normalize, truncate=truncate, model=model, timeout_ms=timeout_ms)

    def read(response: httpx.Response) -> list[float] | EmbedResponse:
        answer = EmbedResponse.model_validate(checked(response).json())
        return answer.embeddings[0] if single else answer

    return Call("POST", "/v1/embed", read, body)


def fill_mask(inputs, top_k, model, timeout_ms) -> Call:
    body = _body(inputs=inputs, top_k=top_k, model=model, timeout_ms=timeout_ms)
    return Call("POST", "/v1/fill-mask", _results(FillMaskResponse, _single(inputs)), body)


def tokenize(inputs, model) -> Call:
    body = _body(inputs=_as_json_inputs(inputs), model=model)
    return Call("POST", "/v1/tokenize", _results(TokenizeResponse, _single(inputs, pair_ok=True)), body)


def models() -> Call:
    return Call("GET", "/v1/models", lambda response: ModelsResponse.model_validate(checked(response).json()).models)


def health() -> Call:
    return Call("GET", "/health", lambda response: response.status_code == 200, retry=False)


def ready() -> Call:
    return Call("GET", "/ready", lambda response: response.status_code == 200, retry=False)


def metrics() -> Call:
    return Call("GET", "/metrics", lambda response: checked(response).text, retry=False)
