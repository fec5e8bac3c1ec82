"""GET /v1/models, POST /v1/models/{name}/reload, /health, /ready, /metrics."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from service.deps import StateDep, require_api_key
from service.schemas import (
    MODEL_NAME_PATTERN,
    ErrorResponse,
    ModelInfo,
    ModelsResponse,
    RefusedVersion,
    ReloadResponse,
    Status,
)

router = APIRouter(tags=["operations"])


@router.get(
    "/v1/models",
    response_model=ModelsResponse,
    dependencies=[Depends(require_api_key)],
    responses={401: {"model": ErrorResponse, "description": "Missing or wrong API key"}},
)
async def models(state: StateDep):
    """Bundles and model-store models: task, labels, limits, precision, provider, version, loaded or not."""
    s = state.settings
    infos = []
    for m in state.registry.models():
        e, manifest = m.engine, m.manifest  # the loaded engine, else the manifest of what would load
        infos.append(
            ModelInfo(
                name=m.name,
                task=m.task,
                labels=e.labels if e else (list(manifest.labels) if manifest.labels else None),
                max_seq_len=e.max_seq_len if e else manifest.max_seq_len,
                precision=e.bundle.precision if e else manifest.precision,
                batch_invariant=e.batch_invariant if e else manifest.batch_invariant,
                provider=e.provider if e else None,
                default=m.default,
                max_batch_tokens=s.max_batch_tokens,
                max_batch_size=s.max_batch_size,
                loaded=e is not None,
                version=m.version,
                versions=m.versions,
                refused=[RefusedVersion(version=v, reason=why) for v, why in m.refused],
            )
        )
    return ModelsResponse(models=infos)


ModelName = Annotated[str, Path(pattern=MODEL_NAME_PATTERN, description="The model's directory in the store.")]


@router.post(
    "/v1/models/{name}/reload",
    response_model=ReloadResponse,
    dependencies=[Depends(require_api_key)],
    responses={
        status: {"model": ErrorResponse, "description": description}
        for status, description in {
            401: "Missing or wrong API key",
            404: "No such model in the model store",
            409: "The newest version failed to load or verify (the message names it); the old one keeps serving",
            422: "The model comes from --bundles, not the model store",
        }.items()
    },
)
async def reload(name: ModelName, state: StateDep):
    """Swap in the model's newest store version now: requests in flight finish on the old one."""
    result = await state.registry.reload(name)
    return ReloadResponse(
        model=result.name, version=result.version, previous_version=result.previous_version, changed=result.changed
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
