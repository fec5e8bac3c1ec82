"""POST /v1/classify, /v1/ner and /v1/qa answered without FastAPI's per-request machinery.

Under load the event loop's time per request is what limits one process on a small machine.
FastAPI spends much of it around the route function: matching the path against every route,
solving dependencies, building a Request, its exception and exit-stack middlewares. This
middleware calls the same route functions (service.routes.tasks) itself: the same request models
and the same parse (json.loads + model_validate, what FastAPI does), the same API-key check, the
same answers serialized the way FastAPI serializes a response model, and the same error answers
(service.asgi.api_error_response, the app's own ApiError handler).

Only the plain case takes this path: POST with `content-type: application/json`, an accepted API
key (or none configured), no or a valid X-Request-Timeout, and a body that validates. Anything else
goes on to FastAPI unchanged, which answers it exactly as before (401, 422 and their messages).
The routes stay declared in FastAPI, so /docs and /openapi.json do not change.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated

from pydantic import BaseModel, Field, TypeAdapter
from starlette.requests import Request
from starlette.responses import Response

from service.asgi import api_error_response, header, replaying
from service.deps import api_key_accepted
from service.errors import ApiError
from service.overload_gate import ENDPOINT_KEY
from service.routes import tasks
from service.schemas import ClassifyRequest, NerRequest, QaRequest
from service.state import AppState


@dataclass(frozen=True)
class FastRoute:
    endpoint: Callable  # the FastAPI route function: (body, request, state, timeout) -> its response model
    request_model: type[BaseModel]  # the route's body model
    exclude_none: bool = False  # the route's response_model_exclude_none


FAST_ROUTES = {
    "/v1/classify": FastRoute(tasks.classify, ClassifyRequest),
    "/v1/ner": FastRoute(tasks.ner, NerRequest, exclude_none=True),
    "/v1/qa": FastRoute(tasks.qa, QaRequest),
}
_TIMEOUT_HEADER = TypeAdapter(Annotated[int, Field(ge=1)])  # as service.deps.TimeoutHeader validates it


class TaskFastPathMiddleware:
    """Innermost of the app's own middlewares (after BodyGuard, which hands on the whole body in one
    message, and inside CORS, which still adds its headers)."""

    def __init__(self, app, state: AppState):
        self.app = app
        self.state = state

    def _accepted(self, route: FastRoute, scope, body: bytes) -> tuple[BaseModel, int | None] | None:
        """(request, timeout header) when this request is one the route would run, else None."""
        if header(scope, b"content-type") != b"application/json":
            return None
        if not api_key_accepted(self.state, header(scope, b"authorization", b"").decode("latin-1")):
            return None
        raw_timeout = header(scope, b"x-request-timeout")
        try:
            timeout = None if raw_timeout is None else _TIMEOUT_HEADER.validate_python(raw_timeout.decode("latin-1"))
            return route.request_model.model_validate(json.loads(body)), timeout
        except (ValueError, RecursionError):  # not JSON (or nested too deep), not valid: FastAPI says why
            return None

    async def __call__(self, scope, receive, send):
        route = FAST_ROUTES.get(scope.get("path", "")) if scope["type"] == "http" else None
        if route is None or scope.get("method") != "POST":
            return await self.app(scope, receive, send)
        message = await receive()  # BodyGuardMiddleware replays the whole body in one message
        accepted = self._accepted(route, scope, message.get("body", b"")) if message["type"] == "http.request" else None
        if accepted is None:
            return await self.app(scope, replaying(message, receive), send)
        request_body, timeout = accepted
        scope[ENDPOINT_KEY] = scope["path"]  # the metrics' endpoint label (no FastAPI route ran)
        try:
            answer = await route.endpoint(request_body, Request(scope, receive), self.state, timeout)
        except ApiError as err:
            response = api_error_response(err)
        else:
            response = Response(answer.model_dump_json(exclude_none=route.exclude_none), media_type="application/json")
        await response(scope, receive, send)
