"""Origins of web-only keys: exact origins or `https://*.example.com`, parsed once, matched per join.

An origin is scheme + host + port (RFC 6454 section 4); default ports are dropped and hosts lower-cased so
that `https://Example.com:443` and `https://example.com` are the same origin. A wildcard matches one or
more labels in front of its suffix, never the bare suffix and never a look-alike (`evil-example.com`).
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import urlsplit

from sfu.errors import BadRequest

SCHEMES = ("http", "https")
DEFAULT_PORTS = {"http": 80, "https": 443}
_LABEL_RE = re.compile(r"[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?")
MAX_ORIGINS = 32


@dataclass(frozen=True, slots=True)
class Origin:
    """A normalized origin; `port` is always explicit (default ports filled in)."""

    scheme: str
    host: str
    port: int

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        if self.port == DEFAULT_PORTS[self.scheme]:
            return f"{self.scheme}://{host}"
        return f"{self.scheme}://{host}:{self.port}"


@dataclass(frozen=True, slots=True)
class OriginPattern:
    """An exact origin, or with `wildcard` any origin whose host ends in `.<host>` (one label or more)."""

    origin: Origin
    wildcard: bool = False

    def __str__(self) -> str:
        text = str(self.origin)
        if not self.wildcard:
            return text
        scheme, rest = text.split("://", 1)
        return f"{scheme}://*.{rest}"

    def matches(self, origin: Origin) -> bool:
        mine = self.origin
        if origin.scheme != mine.scheme or origin.port != mine.port:
            return False
        if not self.wildcard:
            return origin.host == mine.host
        prefix, dot, suffix = origin.host.rpartition("." + mine.host)
        return bool(dot) and not suffix and bool(prefix)


def _split(text: str, what: str) -> tuple[str, str, int]:
    """(scheme, raw host, port) of `scheme://host[:port]`; anything more is a BadRequest."""
    if not isinstance(text, str) or not text or text != text.strip():
        raise BadRequest(f"{what} must be a string like https://example.com")
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError:
        raise BadRequest(f"{what} {text!r} has an invalid port") from None
    scheme = parts.scheme.lower()
    if scheme not in SCHEMES or "://" not in text:
        raise BadRequest(f"{what} {text!r} must start with http:// or https://")
    if parts.path not in ("", "/") or parts.query or parts.fragment or "?" in text or "#" in text:
        raise BadRequest(f"{what} {text!r} must not have a path, query or fragment")
    if parts.username is not None or parts.password is not None:
        raise BadRequest(f"{what} {text!r} must not have user info")
    host = (parts.hostname or "").lower()
    if not host:
        raise BadRequest(f"{what} {text!r} has no host")
    if port == 0:
        raise BadRequest(f"{what} {text!r} has an invalid port")
    return scheme, host, port if port is not None else DEFAULT_PORTS[scheme]


def _check_host(host: str, text: str, what: str) -> None:
    try:
        ipaddress.ip_address(host)
        return
    except ValueError:
        pass
    labels = host.split(".")
    if not all(_LABEL_RE.fullmatch(label) for label in labels):
        raise BadRequest(f"{what} {text!r} has an invalid host")
    if labels[-1].isdigit():
        raise BadRequest(f"{what} {text!r} has an invalid host")


def parse_origin(text: str) -> Origin:
    """An exact origin, normalized; BadRequest on anything else (paths, wildcards, other schemes)."""
    scheme, host, port = _split(text, "origin")
    if "*" in host:
        raise BadRequest(f"origin {text!r} must not contain a wildcard")
    _check_host(host, text, "origin")
    return Origin(scheme, host, port)


def parse_origin_pattern(text: str) -> OriginPattern:
    """An exact origin or `scheme://*.suffix[:port]` with a suffix of at least two labels."""
    if not isinstance(text, str) or "*" not in text:
        return OriginPattern(parse_origin(text))
    scheme, host, port = _split(text.replace("*.", "wildcard-label.", 1), "origin")
    if not host.startswith("wildcard-label.") or "*" in host:
        raise BadRequest(f"origin {text!r}: a wildcard must be the whole first label, as in https://*.example.com")
    suffix = host.removeprefix("wildcard-label.")
    if suffix.count(".") < 1:
        raise BadRequest(f"origin {text!r}: a wildcard needs a domain of at least two labels")
    _check_host(suffix, text, "origin")
    try:
        ipaddress.ip_address(suffix)
    except ValueError:
        return OriginPattern(Origin(scheme, suffix, port), wildcard=True)
    raise BadRequest(f"origin {text!r}: a wildcard cannot apply to an ip address")


def normalize_origin_patterns(patterns: Iterable[str]) -> tuple[str, ...]:
    """Validated, normalized and deduplicated patterns for storage; at least one is required."""
    if isinstance(patterns, str):
        raise BadRequest("origins must be a list of strings")
    out: list[str] = []
    for text in patterns:
        canonical = str(parse_origin_pattern(text))
        if canonical not in out:
            out.append(canonical)
    if not out:
        raise BadRequest("a web-only key needs at least one origin")
    if len(out) > MAX_ORIGINS:
        raise BadRequest(f"a web-only key has at most {MAX_ORIGINS} origins")
    return tuple(out)


def origin_allowed(patterns: Iterable[str], origin: str | None) -> bool:
    """Whether a request's `Origin` header matches one of the stored patterns; a missing one never does."""
    if origin is None or origin == "null":
        return False
    try:
        parsed = parse_origin(origin)
    except BadRequest:
        return False
    for text in patterns:
        try:
            if parse_origin_pattern(text).matches(parsed):
                return True
        except BadRequest:
            continue
    return False
