"""POST /v1/classify, /v1/ner, /v1/qa, /v1/embed, /v1/fill-mask, /v1/tokenize."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request

from service.deps import StateDep, TimeoutHeader, check_count, require_api_key, until_disconnect
from service.schemas import (
    ClassifyRequest,
    ClassifyResponse,
    EmbedRequest,
    EmbedResponse,
    ErrorResponse,
    FillMaskRequest,
    FillMaskResponse,
    NerRequest,
    NerResponse,
    QaPair,
    QaRequest,
    QaResponse,
    TokenizeRequest,
    TokenizeResponse,
)

ERRORS = {
    status: {"model": ErrorResponse, "description": description}
    for status, description in {
        401: "Missing or wrong API key",
        404: "Unknown model (the message lists the loaded ones)",
        413: "Body too large or too many inputs",
        422: "Invalid request: the message names the field and the reason",
        429: "Queue full: retry after Retry-After seconds",
        503: "Shutting down",
        504: "Deadline passed",
    }.items()
}

router = APIRouter(prefix="/v1", dependencies=[Depends(require_api_key)], responses=ERRORS, tags=["inference"])


def _as_list(inputs) -> list:
    return inputs if isinstance(inputs, list) else [inputs]


@router.post("/classify", response_model=ClassifyResponse)
async def classify(body: ClassifyRequest, request: Request, state: StateDep, timeout: TimeoutHeader = None):
    """Classify texts or text pairs; per input, labels with softmax (or sigmoid) scores, best first."""
    engine = state.registry.get("sequence-classification", body.model)
    inputs = _as_list(body.inputs)
    check_count(state, len(inputs))
    work = engine.classify(inputs, body.top_k, body.truncate, state.deadline(body.timeout_ms, timeout))
    return ClassifyResponse(model=engine.name, results=await until_disconnect(request, work))


@router.post("/ner", response_model=NerResponse, response_model_exclude_none=True)
async def ner(body: NerRequest, request: Request, state: StateDep, timeout: TimeoutHeader = None):
    """Named entities with character offsets; long inputs run in overlapping windows."""
    engine = state.registry.get("token-classification", body.model)
    texts = _as_list(body.inputs)
    check_count(state, len(texts))
    work = engine.ner(
        texts, body.aggregation_strategy, body.ignore_labels, body.stride, state.deadline(body.timeout_ms, timeout)
    )
    return NerResponse(model=engine.name, results=await until_disconnect(request, work))


@router.post("/qa", response_model=QaResponse)
async def qa(body: QaRequest, request: Request, state: StateDep, timeout: TimeoutHeader = None):
    """Extractive question answering; long contexts run in strided windows."""
    engine = state.registry.get("question-answering", body.model)
    pairs: list[QaPair] = _as_list(body.inputs)
    check_count(state, len(pairs))
    work = engine.qa(
        [(p.question, p.context) for p in pairs],
        body.top_k,
        body.max_answer_len,
        body.doc_stride,
        body.handle_impossible_answer,
        state.deadline(body.timeout_ms, timeout),
    )
    return QaResponse(model=engine.name, results=await until_disconnect(request, work))


@router.post("/embed", response_model=EmbedResponse)
async def embed(body: EmbedRequest, request: Request, state: StateDep, timeout: TimeoutHeader = None):
    """Mean-pooled sentence embeddings, unit length unless normalize is false."""
    engine = state.registry.get("embedding", body.model)
    texts = _as_list(body.inputs)
    check_count(state, len(texts))
    work = engine.embed(texts, body.normalize, body.truncate, state.deadline(body.timeout_ms, timeout))
    vectors = await until_disconnect(request, work)
    return EmbedResponse(model=engine.name, dim=len(vectors[0]) if vectors else 0, embeddings=vectors)


@router.post("/fill-mask", response_model=FillMaskResponse)
async def fill_mask(body: FillMaskRequest, request: Request, state: StateDep, timeout: TimeoutHeader = None):
    """The top_k tokens for every [MASK] in each input."""
    engine = state.registry.get("fill-mask", body.model)
    texts = _as_list(body.inputs)
    check_count(state, len(texts))
    work = engine.fill_mask(texts, body.top_k, state.deadline(body.timeout_ms, timeout))
    return FillMaskResponse(model=engine.name, results=await until_disconnect(request, work))


@router.post("/tokenize", response_model=TokenizeResponse)
async def tokenize(body: TokenizeRequest, state: StateDep):
    """Tokens, ids and character offsets as a model sees its input (no truncation)."""
    engine = state.registry.get_any(body.model)
    inputs = _as_list(body.inputs)
    check_count(state, len(inputs))
    return TokenizeResponse(model=engine.name, results=await engine.tokenize(inputs))
