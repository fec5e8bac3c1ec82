"""The FastAPI app: `uvicorn service.main:app` (settings from BERTKIT_* variables) or `bert serve`.

Start-up loads and warms every bundle before /ready turns true; SIGTERM turns readiness off,
lets in-flight requests finish (uvicorn drains connections), then stops the batchers.
"""

from __future__ import annotations

import gc
import inspect
import logging
import random
import re
import signal
import threading
import time
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException

from service.asgi import api_error_response, error_json, header, replaying, request_id_var, send_json
from service.config import ServiceSettings
from service.errors import ApiError, ClientGoneError
from service.overload_gate import ENDPOINT_KEY, REFUSED_KEY, OverloadGateMiddleware, RefusalLog
from service.routes import ops, tasks
from service.state import AppState, BundleRefusedError
from service.task_fast_path import TaskFastPathMiddleware

log = logging.getLogger("service")
STATIC_DIR = Path(__file__).parent / "static"
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")


# --- logging: the request id on every line ------------------------------------------------------


class RequestIdFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = request_id_var.get()
        return True


def configure_logging(level: str) -> None:
    logger = logging.getLogger("service")
    logger.setLevel(level.upper())
    if not any(getattr(h, "_bertkit", False) for h in logger.handlers):
        handler = logging.StreamHandler()
        handler._bertkit = True
        handler.addFilter(RequestIdFilter())
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s [%(request_id)s] %(name)s: %(message)s"))
        logger.addHandler(handler)
        logger.propagate = False


# --- ASGI middleware -----------------------------------------------------------------------------


class RequestContextMiddleware:
    """Request id (X-Request-ID in, or a new one) on the response and in logs; metrics; access log
    (the overload gate's 429s summed per model and second, see RefusalLog).

    The status recorded is the one sent, except that a request whose client disconnected before the
    answer started is 499 (the answer, if any, went nowhere: uvicorn drops sends after a disconnect),
    also when the app gave up without answering (e.g. a body cut short). A request that ends with no
    answer and no disconnect seen is a 500, the one uvicorn sends.
    """

    def __init__(self, app, state: AppState):
        self.app = app
        self.state = state
        self.refusals = RefusalLog()
        self._counted: dict[tuple[str, int], tuple] = {}  # (endpoint, status) -> its labelled metrics

    def _metrics_of(self, endpoint: str, status: int) -> tuple:
        """The request counter and latency histogram of (endpoint, status), labelled once, not per request."""
        found = self._counted.get((endpoint, status))
        if found is None:
            m = self.state.metrics
            found = m.requests.labels(endpoint, str(status)), m.request_seconds.labels(endpoint)
            self._counted[(endpoint, status)] = found
        return found

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        incoming = header(scope, b"x-request-id", b"").decode("latin-1")
        # 64 random bits name a request well enough; uuid4 reads os.urandom, a system call per request
        request_id = incoming if _REQUEST_ID.match(incoming) else f"{random.getrandbits(64):016x}"
        token = request_id_var.set(request_id)
        start = time.perf_counter()
        status = None
        client_gone = False

        async def receive_watching():
            nonlocal client_gone
            message = await receive()
            if message["type"] == "http.disconnect" and status is None:
                client_gone = True
            return message

        async def send_with_id(message):
            nonlocal status
            if message["type"] == "http.response.start":
                status = ClientGoneError.status if client_gone else message["status"]
                message["headers"] = list(message.get("headers", [])) + [(b"x-request-id", request_id.encode())]
            await send(message)

        try:
            await self.app(scope, receive_watching, send_with_id)
        finally:
            if status is None:
                status = ClientGoneError.status if client_gone else 500
            route = scope.get("route")
            endpoint = getattr(route, "path", None) or scope.get(ENDPOINT_KEY) or "other"
            elapsed = time.perf_counter() - start
            requests, seconds = self._metrics_of(endpoint, status)
            requests.inc()
            seconds.observe(elapsed)
            if REFUSED_KEY in scope:
                self.refusals.note(scope[REFUSED_KEY])  # a line a second, not one per 429
            else:
                log.info("%s %s %d %.1fms", scope.get("method"), scope.get("path"), status, elapsed * 1000)
                self.refusals.flush_if_due()
            request_id_var.reset(token)


class BodyGuardMiddleware:
    """Refuse bodies over `limit` bytes (413) and JSON bodies that are not UTF-8 (422) before parsing."""

    def __init__(self, app, limit: int):
        self.app = app
        self.limit = limit

    async def _refuse(self, send, size: str) -> None:
        message = f"the body is {size} bytes; the limit is {self.limit} bytes"
        await send_json(send, 413, error_json("payload_too_large", message))

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope.get("method") not in ("POST", "PUT", "PATCH"):
            return await self.app(scope, receive, send)
        declared = header(scope, b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            return await self._refuse(send, declared.decode())
        chunks, size, more = [], 0, True
        while more:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client left while sending
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            more = message.get("more_body", False)
            if size > self.limit:
                return await self._refuse(send, f"over {size}")
        body = b"".join(chunks)
        try:
            body.decode("utf-8")
        except UnicodeDecodeError as err:
            reason = f"the body is not valid UTF-8 (byte {body[err.start]:#04x} at position {err.start})"
            error = error_json("validation_error", reason, [{"field": "body", "reason": reason}])
            return await send_json(send, 422, error)
        await self.app(scope, replaying({"type": "http.request", "body": body, "more_body": False}, receive), send)


# --- errors --------------------------------------------------------------------------------------


def _field_name(loc) -> str:
    parts = [str(p) for p in loc]
    out = ""
    for p in parts:
        out += f"[{p}]" if p.isdigit() else (f".{p}" if out else p)
    return out


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def api_error(request: Request, err: ApiError):
        return api_error_response(err)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, err: RequestValidationError):
        details = []
        for e in err.errors():
            loc = e.get("loc", ())
            if e.get("type") == "json_invalid":
                reason = f"the body is not valid JSON ({e.get('ctx', {}).get('error', 'parse error')})"
                details.append({"field": "body", "reason": reason})
                continue
            # pydantic reports each member of a union; the tag it adds ("str", "list[...]") is noise here
            loc = [p for p in loc if not (isinstance(p, str) and ("[" in p or p in ("str", "int", "float", "bool")))]
            details.append({"field": _field_name(loc) or "body", "reason": e.get("msg", "invalid")})
        seen, unique = set(), []
        for d in details:
            if (d["field"], d["reason"]) not in seen:
                seen.add((d["field"], d["reason"]))
                unique.append(d)
        message = "; ".join(f"{d['field']}: {d['reason']}" for d in unique[:5])
        return JSONResponse(error_json("validation_error", message, unique), 422)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, err: StarletteHTTPException):
        kinds = {404: "not_found", 405: "method_not_allowed"}
        message = {404: f"no route {request.url.path}; see /docs"}.get(err.status_code, str(err.detail))
        return JSONResponse(
            error_json(kinds.get(err.status_code, "http_error"), message),
            err.status_code,
            getattr(err, "headers", None),
        )

    @app.exception_handler(Exception)
    async def server_fault(request: Request, err: Exception):
        log.exception("internal error on %s %s", request.method, request.url.path)
        return JSONResponse(
            error_json("internal_error", "internal server error; the request id is in the server log"), 500
        )


# --- lifespan ------------------------------------------------------------------------------------


def _hook_shutdown_signals(state: AppState) -> None:
    """On SIGTERM/SIGINT turn readiness off first, then let uvicorn's own handler drain and exit."""
    if threading.current_thread() is not threading.main_thread():
        return  # test clients run the lifespan off the main thread; signals are not theirs
    for sig in (signal.SIGTERM, signal.SIGINT):
        previous = signal.getsignal(sig)

        def handler(signum, frame, previous=previous):
            if not state.draining:
                state.draining = True
                log.info("signal %d: readiness off, finishing in-flight requests", signum)
            if callable(previous):
                previous(signum, frame)

        signal.signal(sig, handler)


def _telemetry_option(enabled: bool) -> dict:
    """FastAPI >= 0.165 checks for OpenTelemetry providers on every request (environment lookups:
    ~15% of the event loop's CPU under load); switched off unless the settings ask for it."""
    if enabled or "telemetry" not in inspect.signature(FastAPI.__init__).parameters:
        return {}
    return {"telemetry": {"tracing": False, "metrics": False, "logs": False}}


def create_app(settings: ServiceSettings | None = None, loader=None) -> FastAPI:
    """Build the app; `loader` replaces `core.bundle.load_bundle` (tests)."""
    settings = settings or ServiceSettings()
    configure_logging(settings.log_level)
    state = AppState(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        # Re-entrant: a second server (or test client) over the same app shares the loaded models;
        # the last one to stop closes them.
        if state.lifespans == 0:
            try:
                await state.start(loader)
            except BundleRefusedError as err:
                log.error("%s", err)
                state.close(timeout=5)
                raise
            _hook_shutdown_signals(state)
            # Start-up's objects (vocabularies, sessions, routes, schemas) live as long as the process:
            # out of the collector's generations, the full collections that per-request garbage
            # triggers no longer walk them all again.
            gc.collect()
            gc.freeze()
        state.lifespans += 1
        try:
            yield
        finally:
            state.lifespans -= 1
            if state.lifespans == 0:
                state.draining = True
                await state.stop(settings.drain_timeout_s)
                log.info("stopped")

    app = FastAPI(
        title="bertkit inference service",
        version="1",
        description="Classification, NER, QA, embeddings and fill-mask over ONNX bundles, with dynamic batching.",
        lifespan=lifespan,
        **_telemetry_option(settings.opentelemetry),
    )
    app.state.bertkit = state
    install_error_handlers(app)
    app.include_router(tasks.router)
    app.include_router(ops.router)
    if (STATIC_DIR / "index.html").is_file():

        @app.get("/", include_in_schema=False)
        async def playground():
            return FileResponse(STATIC_DIR / "index.html")

        app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    if not settings.opentelemetry:  # with OpenTelemetry on, every request goes through FastAPI (its spans)
        app.add_middleware(TaskFastPathMiddleware, state=state)  # inside CORS, which adds its headers
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["GET", "POST", "OPTIONS"],
            allow_headers=["Authorization", "Content-Type", "X-Request-ID", "X-Request-Timeout"],
            expose_headers=["X-Request-ID", "Retry-After"],
        )
    app.add_middleware(OverloadGateMiddleware, state=state)  # inside BodyGuard: sees a whole, bounded body
    app.add_middleware(BodyGuardMiddleware, limit=settings.max_body_bytes)
    app.add_middleware(RequestContextMiddleware, state=state)
    return app


app = create_app()
