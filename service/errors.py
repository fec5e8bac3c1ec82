"""Errors a client can cause or act on: each carries its HTTP status and a message saying what to fix."""

from __future__ import annotations


class ApiError(Exception):
    status = 400
    type = "bad_request"

    def __init__(self, message: str, details: list[dict] | None = None, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.message = message
        self.details = details
        self.headers = headers or {}


class InvalidInputError(ApiError):
    status = 422
    type = "validation_error"

    def __init__(self, field: str, reason: str):
        super().__init__(f"{field}: {reason}", details=[{"field": field, "reason": reason}])


class ModelNotFoundError(ApiError):
    status = 404
    type = "model_not_found"


class ModelUnavailableError(ApiError):
    """A model-store model none of whose versions loads."""

    status = 503
    type = "model_unavailable"


class VersionRefusedError(ApiError):
    """A new model-store version that failed verification; the old one keeps serving."""

    status = 409
    type = "version_refused"


class PayloadTooLargeError(ApiError):
    status = 413
    type = "payload_too_large"


class OverloadedError(ApiError):
    status = 429
    type = "queue_full"

    def __init__(self, message: str, retry_after_s: int):
        super().__init__(message, headers={"Retry-After": str(max(1, int(retry_after_s)))})


class ClientGoneError(ApiError):
    """The client closed the connection before its answer: 499, nginx's "client closed request"."""

    status = 499
    type = "client_closed_request"


class DeadlineError(ApiError):
    status = 504
    type = "deadline_exceeded"


class UnavailableError(ApiError):
    status = 503
    type = "unavailable"

    def __init__(self, message: str):
        super().__init__(message, headers={"Retry-After": "1"})


class UnauthorizedError(ApiError):
    status = 401
    type = "unauthorized"

    def __init__(self, message: str):
        super().__init__(message, headers={"WWW-Authenticate": "Bearer"})
