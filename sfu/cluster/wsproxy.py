"""Relays one client signaling socket to the process or node that owns its session.

The front has read the client's first frame (the `join`) to place the session; `relay()` opens a socket to
the owner, forwards that frame, then pipes frames both ways until either side ends:

- the client closes with a code: the owner's socket is closed with the same code and reason, so the owner
  sees exactly what it would see without the relay (1000 after `leave`, any other code: a resumable drop);
- the client vanishes (no close frame): the owner's TCP connection is aborted, again what it would see;
- the owner closes with a code: the client gets the same code and reason;
- the owner vanishes (a worker killed, a node gone): the client's socket is closed 1012 (service restart),
  a code that no SDK treats as final (PROTOCOL.md: any close but the listed final ones may be resumed), so
  it joins again with its resume token and lands on a live owner. No `closed` frame is sent: the Python
  SDK takes any `closed` frame as the end of the session, even one with `reconnect: true`.

If the owner cannot be reached at all, `relay()` raises `UpstreamUnavailable` before anything was sent to
the client, so the caller may place the session elsewhere (and call `relay()` again with the same frame) or
give up with `close_for_reconnect(client_ws)`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Mapping

import aiohttp
from aiohttp import ClientWebSocketResponse, WSCloseCode, WSMsgType, web

log = logging.getLogger("sfu.cluster.wsproxy")

RECONNECT_CLOSE = 1012
"""Service restart: the client should join again (with `resume`); not final for any SDK."""
CONNECT_TIMEOUT_S = 5.0
UPSTREAM_MAX_MSG = 4 * 1024 * 1024
"""The owner enforces the protocol's frame limit; this only bounds what the relay buffers."""


class UpstreamUnavailable(Exception):
    """The owner did not accept the socket (refused, timed out, not a WebSocket); nothing was relayed."""


def forward_headers(request: web.Request, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """Headers for the upstream socket: the client's real address and scheme (`request.remote` is already
    the client's when the front itself sits behind a trusted proxy), its Origin and User-Agent."""
    headers = {"X-Forwarded-For": request.remote or "", "X-Forwarded-Proto": request.scheme}
    for name in ("Origin", "User-Agent"):
        value = request.headers.get(name)
        if value is not None:
            headers[name] = value
    if extra:
        headers.update(extra)
    return headers


async def close_for_reconnect(client_ws: web.WebSocketResponse) -> None:
    """Closes the client's socket 1012: the client joins again (with `resume`) and is placed anew."""
    if client_ws.closed:
        return
    with contextlib.suppress(Exception):
        await client_ws.close(code=RECONNECT_CLOSE, message=b"reconnect")


async def relay(
    client_ws: web.WebSocketResponse,
    first_frame: str,
    target_url: str,
    headers: Mapping[str, str],
    *,
    http: aiohttp.ClientSession | None = None,
) -> None:
    """Pipes `client_ws` to `target_url` (a `ws://.../v1/rtc`), starting with `first_frame`; returns when
    both sockets are closed. Raises `UpstreamUnavailable` if the owner cannot be reached."""
    own_http = http is None
    session = aiohttp.ClientSession() if http is None else http
    try:
        try:
            upstream = await session.ws_connect(
                target_url, headers=dict(headers), autoping=True, heartbeat=None, autoclose=False,
                max_msg_size=UPSTREAM_MAX_MSG, timeout=aiohttp.ClientWSTimeout(ws_close=3.0),
            )
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            raise UpstreamUnavailable(f"{target_url}: {exc.__class__.__name__}: {exc}") from None
        try:
            await upstream.send_str(first_frame)
        except (aiohttp.ClientError, OSError, ConnectionResetError) as exc:
            await upstream.close()
            raise UpstreamUnavailable(f"{target_url}: {exc}") from None
        await _pipe(client_ws, upstream)
    finally:
        if own_http:
            await session.close()


async def _pipe(client_ws: web.WebSocketResponse, upstream: ClientWebSocketResponse) -> None:
    loop = asyncio.get_running_loop()
    up = loop.create_task(_client_to_upstream(client_ws, upstream), name="wsproxy-up")
    down = loop.create_task(_upstream_to_client(upstream, client_ws), name="wsproxy-down")
    try:
        await asyncio.wait((up, down), return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in (up, down):
            if not task.done():
                task.cancel()
        for task in (up, down):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if not upstream.closed:
            with contextlib.suppress(Exception):
                await upstream.close()
        if not client_ws.closed:
            with contextlib.suppress(Exception):
                await client_ws.close()


async def _client_to_upstream(client_ws: web.WebSocketResponse, upstream: ClientWebSocketResponse) -> None:
    while True:
        msg = await client_ws.receive()
        if msg.type == WSMsgType.TEXT:
            await upstream.send_str(msg.data)
        elif msg.type == WSMsgType.BINARY:
            await upstream.send_bytes(msg.data)
        elif msg.type == WSMsgType.CLOSE:
            code = msg.data if isinstance(msg.data, int) else WSCloseCode.OK
            await upstream.close(code=code, message=(msg.extra or "").encode()[:120])
            return
        else:  # CLOSED / ERROR: the client vanished; the owner must see a vanished peer too
            _abort(upstream)
            return


async def _upstream_to_client(upstream: ClientWebSocketResponse, client_ws: web.WebSocketResponse) -> None:
    while True:
        msg = await upstream.receive()
        if msg.type == WSMsgType.TEXT:
            await client_ws.send_str(msg.data)
        elif msg.type == WSMsgType.BINARY:
            await client_ws.send_bytes(msg.data)
        elif msg.type == WSMsgType.CLOSE:
            code = msg.data if isinstance(msg.data, int) else WSCloseCode.OK
            with contextlib.suppress(Exception):
                await upstream.close()
            await client_ws.close(code=code, message=(msg.extra or "").encode()[:120])
            return
        elif msg.type == WSMsgType.CLOSING:
            continue
        else:  # CLOSED / ERROR: the owner vanished (process killed, node gone)
            log.info("owner connection lost: telling the client to reconnect")
            await close_for_reconnect(client_ws)
            return


def _abort(upstream: ClientWebSocketResponse) -> None:
    conn = upstream._response.connection  # NOTE: aiohttp has no public abort for a client WebSocket
    if conn is not None and conn.transport is not None:
        conn.transport.abort()  # otherwise `_pipe` closes it normally
