"""GET /v1/models, /health, /ready, /metrics."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from service.deps import StateDep, require_api_key
from service.schemas import ErrorResponse, ModelInfo, ModelsResponse, Status

router = APIRouter(tags=["operations"])


@router.get(
    "/v1/models",
    response_model=ModelsResponse,
    dependencies=[Depends(require_api_key)],
    responses={401: {"model": ErrorResponse, "description": "Missing or wrong API key"}},
)
async def models(state: StateDep):
    """Loaded bundles: task, labels, limits, precision and execution provider."""
    s = state.settings
    return ModelsResponse(
        models=[
            ModelInfo(
                name=e.name,
                task=e.task,
                labels=e.labels,
                max_seq_len=e.max_seq_len,
                precision=e.bundle.precision,
                batch_invariant=e.batch_invariant,
                provider=e.provider,
                default=state.registry.defaults.get(e.task) == e.name,
                max_batch_tokens=s.max_batch_tokens,
                max_batch_size=s.max_batch_size,
            )
            for e in state.registry.engines.values()
        ]
    )


@router.get("/health", response_model=Status)
async def health():
    """The process is alive (it may still be loading models)."""
    return Status(status="ok")


@router.get("/ready", response_model=Status, responses={503: {"model": Status, "description": "Not ready"}})
async def ready(state: StateDep):
    """Every bundle is loaded and warmed up, and the process is not shutting down."""
    if state.draining:
        return JSONResponse(Status(status="draining", detail="shutting down").model_dump(), status_code=503)
    if not state.ready:
        return JSONResponse(Status(status="loading", detail="models are loading").model_dump(), status_code=503)
    return Status(status="ready")


@router.get("/metrics", response_class=Response, responses={200: {"content": {"text/plain": {}}}})
async def metrics(state: StateDep):
    """Prometheus metrics."""
    return Response(generate_latest(state.metrics.registry), media_type=CONTENT_TYPE_LATEST)
