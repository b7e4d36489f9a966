"""One flat list of errors, each with the wire `code` of PROTOCOL.md, its HTTP status and its close code."""

from __future__ import annotations

from typing import ClassVar


class SfuError(Exception):
    """Base of every error a client may see; `dispatch` turns it into an `error` reply."""

    code: ClassVar[str] = "internal"
    http_status: ClassVar[int] = 500
    close_code: ClassVar[int | None] = None

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def to_wire(self) -> dict[str, str]:
        return {"code": self.code, "message": self.message}


class BadRequest(SfuError):
    code = "bad_request"
    http_status = 400


class Unauthorized(SfuError):
    code = "unauthorized"
    http_status = 401
    close_code = 4001


class Forbidden(SfuError):
    code = "forbidden"
    http_status = 403
    close_code = 4003


class NotFound(SfuError):
    code = "not_found"
    http_status = 404


class Conflict(SfuError):
    code = "conflict"
    http_status = 409


class TooLarge(SfuError):
    code = "too_large"
    http_status = 413
    close_code = 4009


class RateLimited(SfuError):
    code = "rate_limited"
    http_status = 429
    close_code = 4009


class Unavailable(SfuError):
    """An addition to PROTOCOL.md: the server is at capacity for a new session (`max_worker_cpu`)."""

    code = "unavailable"
    http_status = 503
    close_code = 1013  # RFC 6455 section 7.4.1 registry: Try Again Later


class Internal(SfuError):
    code = "internal"
    http_status = 500


ERRORS_BY_CODE: dict[str, type[SfuError]] = {
    cls.code: cls
    for cls in (BadRequest, Unauthorized, Forbidden, NotFound, Conflict, TooLarge, RateLimited, Unavailable,
                Internal)
}
