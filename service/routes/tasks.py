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
        404: "Unknown model (the message lists the models served)",
        413: "Body too large or too many inputs",
        422: "Invalid request: the message names the field and the reason",
        429: "Queue full: retry after Retry-After seconds",
        503: "Shutting down, or a model-store model that has no version that loads",
        504: "Deadline passed",
    }.items()
}

router = APIRouter(prefix="/v1", dependencies=[Depends(require_api_key)], responses=ERRORS, tags=["inference"])


def _as_list(inputs) -> list:
    return inputs if isinstance(inputs, list) else [inputs]


@router.post("/classify", response_model=ClassifyResponse)
async def classify(body: ClassifyRequest, request: Request, state: StateDep, timeout: TimeoutHeader = None):
    """Classify texts or text pairs; per input, labels with softmax (or sigmoid) scores, best first."""
    inputs = _as_list(body.inputs)
    check_count(state, len(inputs))
    async with state.registry.use("sequence-classification", body.model) as engine:
        work = engine.classify(inputs, body.top_k, body.truncate, state.deadline(body.timeout_ms, timeout))
        results = await until_disconnect(request, work)
    return ClassifyResponse(model=engine.name, model_version=engine.version, results=results)


@router.post("/ner", response_model=NerResponse, response_model_exclude_none=True)
async def ner(body: NerRequest, request: Request, state: StateDep, timeout: TimeoutHeader = None):
    """Named entities with character offsets; long inputs run in overlapping windows."""
    texts = _as_list(body.inputs)
    check_count(state, len(texts))
    async with state.registry.use("token-classification", body.model) as engine:
        work = engine.ner(
            texts, body.aggregation_strategy, body.ignore_labels, body.stride, state.deadline(body.timeout_ms, timeout)
        )
        results = await until_disconnect(request, work)
    return NerResponse(model=engine.name, model_version=engine.version, results=results)


@router.post("/qa", response_model=QaResponse)
async def qa(body: QaRequest, request: Request, state: StateDep, timeout: TimeoutHeader = None):
    """Extractive question answering; long contexts run in strided windows."""
    pairs: list[QaPair] = _as_list(body.inputs)
    check_count(state, len(pairs))
    async with state.registry.use("question-answering", body.model) as engine:
        work = engine.qa(
            [(p.question, p.context) for p in pairs],
            body.top_k,
            body.max_answer_len,
            body.doc_stride,
            body.handle_impossible_answer,
            state.deadline(body.timeout_ms, timeout),
        )
        results = await until_disconnect(request, work)  # per pair: an answer, a list when top_k > 1
    return QaResponse(model=engine.name, model_version=engine.version, results=results)


@router.post("/embed", response_model=EmbedResponse)
async def embed(body: EmbedRequest, request: Request, state: StateDep, timeout: TimeoutHeader = None):
    """Mean-pooled sentence embeddings, unit length unless normalize is false."""
    texts = _as_list(body.inputs)
    check_count(state, len(texts))
    async with state.registry.use("embedding", body.model) as engine:
        work = engine.embed(texts, body.normalize, body.truncate, state.deadline(body.timeout_ms, timeout))
        vectors = await until_disconnect(request, work)
    dim = len(vectors[0]) if vectors else 0
    return EmbedResponse(model=engine.name, model_version=engine.version, dim=dim, embeddings=vectors)


@router.post("/fill-mask", response_model=FillMaskResponse)
async def fill_mask(body: FillMaskRequest, request: Request, state: StateDep, timeout: TimeoutHeader = None):
    """The top_k tokens for every [MASK] in each input."""
    texts = _as_list(body.inputs)
    check_count(state, len(texts))
    async with state.registry.use("fill-mask", body.model) as engine:
        work = engine.fill_mask(texts, body.top_k, state.deadline(body.timeout_ms, timeout))
        results = await until_disconnect(request, work)
    return FillMaskResponse(model=engine.name, model_version=engine.version, results=results)


@router.post("/tokenize", response_model=TokenizeResponse)
async def tokenize(body: TokenizeRequest, state: StateDep):
    """Tokens, ids and character offsets as a model sees its input (no truncation)."""
    inputs = _as_list(body.inputs)
    check_count(state, len(inputs))
    async with state.registry.use(None, body.model) as engine:
        results = await engine.tokenize(inputs)
    return TokenizeResponse(model=engine.name, model_version=engine.version, results=results)
