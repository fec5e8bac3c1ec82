"""What the raw ASGI middlewares share: the request id of the running request and JSON answers."""

from __future__ import annotations

import contextvars
import json

from starlette.responses import JSONResponse

from service.errors import ApiError

request_id_var: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="-")


def error_json(type_: str, message: str, details=None) -> dict:
    """The body of every error answer: {"error": {type, message, details, request_id}}."""
    return {"error": {"type": type_, "message": message, "details": details, "request_id": request_id_var.get()}}


def api_error_response(err: ApiError) -> JSONResponse:
    """The answer to an ApiError: its status, headers and error body (the app's handler and the fast path)."""
    return JSONResponse(error_json(err.type, err.message, err.details), err.status, err.headers)


async def send_json(send, status: int, payload: dict, headers: tuple[tuple[bytes, bytes], ...] = ()) -> None:
    body = json.dumps(payload).encode()
    head = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()), *headers]
    await send({"type": "http.response.start", "status": status, "headers": head})
    await send({"type": "http.response.body", "body": body})


def header(scope, name: bytes, default: bytes | None = None) -> bytes | None:
    """The first value of header `name` (lower case) in an ASGI scope, without building a dict."""
    for key, value in scope.get("headers") or ():  # a plain loop: a third of next(generator)'s time
        if key == name:
            return value
    return default


def replaying(message: dict, receive):
    """A `receive` that returns `message` (a body already read) first, then defers to `receive`."""
    replayed = False

    async def replay():
        nonlocal replayed
        if not replayed:
            replayed = True
            return message
        return await receive()

    return replay
