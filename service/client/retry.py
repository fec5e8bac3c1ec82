"""When to send a request again (429/503: Retry-After, else backoff) and the `ServiceError` of an error answer."""

from __future__ import annotations

import email.utils
import random
import time

import httpx

RETRY_STATUSES = (429, 503)  # queue full / not ready or shutting down: worth asking again


class ServiceError(Exception):
    """The service answered with an error status (after retries, for 429/503)."""

    def __init__(self, status: int, message: str, kind: str | None = None, request_id: str | None = None):
        super().__init__(f"HTTP {status}: {message}")
        self.status = status
        self.message = message
        self.kind = kind  # the error body's `type`, e.g. validation_error, queue_full, model_not_found
        self.request_id = request_id


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
        delay = backoff * (2**attempt) * (1.0 + random.random() * 0.25)  # jitter spreads the clients' retries
    return min(max(delay, 0.0), max_wait)


def checked(response: httpx.Response) -> httpx.Response:
    """`response` itself if it is a success; else raise `ServiceError` with the server's message and error type."""
    if response.status_code < 400:
        return response
    kind = request_id = None
    try:
        error = response.json().get("error") or {}
        message = error.get("message") or response.text
        kind, request_id = error.get("type"), error.get("request_id")
    except (ValueError, AttributeError):
        message = response.text.strip() or response.reason_phrase
    raise ServiceError(response.status_code, message, kind, request_id or response.headers.get("X-Request-ID"))
