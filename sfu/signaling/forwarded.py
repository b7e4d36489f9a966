"""Client address and scheme behind a reverse proxy (nginx, Caddy): `X-Forwarded-For` and
`X-Forwarded-Proto` are believed only when the TCP peer is one of `--trusted-proxy`, since anyone can
send those headers."""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence

from aiohttp import web
from aiohttp.typedefs import Middleware

from sfu.signaling.http_util import Handler

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def _trusted(address: str | None, networks: Sequence[Network]) -> bool:
    if not address:
        return False
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return False
    return any(ip in network for network in networks)


def client_address(peer: str | None, forwarded_for: str | None, networks: Sequence[Network]) -> str | None:
    """The rightmost X-Forwarded-For hop that is not a trusted proxy (RFC 7239 section 7.4 reasoning)."""
    if not _trusted(peer, networks) or not forwarded_for:
        return peer
    hops = [hop.strip() for hop in forwarded_for.split(",") if hop.strip()]
    for hop in reversed(hops):
        if not _trusted(hop, networks):
            return hop
    return hops[0] if hops else peer


def forwarded_middleware(proxies: Sequence[str]) -> Middleware:
    """Rewrites `request.remote` and `request.scheme` for requests that came through a trusted proxy."""
    networks = [ipaddress.ip_network(p, strict=False) for p in proxies]

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        peer = request.remote
        if not _trusted(peer, networks):
            return await handler(request)
        remote = client_address(peer, request.headers.get("X-Forwarded-For"), networks) or ""
        proto = request.headers.get("X-Forwarded-Proto", "").split(",")[0].strip().lower()
        scheme = proto if proto in ("http", "https") else request.scheme
        return await handler(request.clone(remote=remote, scheme=scheme))

    return middleware
