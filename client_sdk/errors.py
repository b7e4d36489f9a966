"""Typed exceptions for the wire `code`s of PROTOCOL.md, so callers can `except Forbidden` instead of
comparing strings; the SDK keeps its own copy and never imports the server."""

from __future__ import annotations

from typing import ClassVar


class SfuError(Exception):
    """Base of every error the SDK raises for a server reply or a lost connection."""

    default_code: ClassVar[str] = "internal"

    def __init__(self, message: str, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.code = code if code is not None else self.default_code

    def __repr__(self) -> str:
        return f"{type(self).__name__}(code={self.code!r}, message={self.message!r})"


class BadRequest(SfuError):
    default_code = "bad_request"


class Unauthorized(SfuError):
    default_code = "unauthorized"


class Forbidden(SfuError):
    default_code = "forbidden"


class NotFound(SfuError):
    default_code = "not_found"


class Conflict(SfuError):
    default_code = "conflict"


class TooLarge(SfuError):
    default_code = "too_large"


class RateLimited(SfuError):
    default_code = "rate_limited"


class Unavailable(SfuError):
    """The server is at capacity for a new session; try again later (an addition to PROTOCOL.md)."""

    default_code = "unavailable"


class InternalError(SfuError):
    default_code = "internal"


class UnsupportedCodec(SfuError):
    """A decoded subscription (`decode=True`) of a feed whose codec this machine cannot decode (not a wire
    code: raised by the SDK itself). `subscribe(feed_id, decode=False)` still gives its RTP packets."""

    default_code = "unsupported_codec"

    def __init__(self, message: str, codec: str | None = None) -> None:
        super().__init__(message)
        self.codec = codec


class ConnectionClosed(SfuError):
    """The socket closed before a reply came (not a wire code: raised by the SDK itself)."""

    default_code = "closed"


class RequestTimeout(SfuError):
    """No reply within the request timeout (not a wire code: raised by the SDK itself)."""

    default_code = "timeout"


class TooManyRedirects(SfuError):
    """Nodes kept redirecting the join (`closed {reason:"redirect"}`, close 4014) past the SDK's bound."""

    default_code = "redirect_loop"


ERRORS_BY_CODE: dict[str, type[SfuError]] = {
    cls.default_code: cls
    for cls in (BadRequest, Unauthorized, Forbidden, NotFound, Conflict, TooLarge, RateLimited, Unavailable,
                InternalError)
}

ERRORS_BY_CLOSE_CODE: dict[int, type[SfuError]] = {
    4001: Unauthorized,
    4003: Forbidden,
    4009: RateLimited,
    4013: Unauthorized,
}


def error_from_wire(code: object, message: object) -> SfuError:
    """The typed exception for a wire `code`; an unknown code keeps its text on a plain SfuError."""
    text = message if isinstance(message, str) else ""
    if not isinstance(code, str):
        return InternalError(text or "error reply without a code")
    cls = ERRORS_BY_CODE.get(code)
    if cls is None:
        return SfuError(text, code)
    return cls(text)
