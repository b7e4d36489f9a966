"""A node of a Redis cluster (`sfu serve --redis URL`): the front process's part in it.

`RedisNode` opens the shared store, registers the node (sfu/cluster/redis_nodes.py), puts the Redis
placement (sfu/cluster/redis_placement.py) in front of the local worker placement, and adds a middleware
to the front app:

- `GET /v1/sessions` lists the caller's sessions on every node: this node's workers, plus each other
  node that holds a placement of the caller's (asked over HTTP with the same admin token);
- `/v1/sessions/{sid}...` is forwarded to the node owning the session;
- with `--redirect`, a join for a session owned elsewhere is answered with
  `closed {reason:"redirect", reconnect:true, url}` and close 4014 instead of being relayed.

Requests and sockets relayed from another node carry `X-Sfu-Relayed-By` and are served here (one hop).
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import aiohttp
import orjson
from aiohttp import WSMsgType, web
from redis.exceptions import RedisError

from sfu.cluster.front import Front, refuse
from sfu.cluster.placement import AtCapacity, LocalPlacement, NoTarget, Target
from sfu.cluster.redis_nodes import NodeLoad, NodeRegistry, new_node_id
from sfu.cluster.redis_placement import RELAYED_HEADER, RedisPlacement
from sfu.cluster.wsproxy import UpstreamUnavailable, close_for_reconnect, forward_headers, relay
from sfu.config import Config
from sfu.errors import SfuError, Unavailable
from sfu.signaling.http_util import json_response
from sfu.signaling.ws import CLOSE_TIMEOUT_S, OVERSIZE_FACTOR
from sfu.store.redis import RedisStore

log = logging.getLogger("sfu.cluster.redis")

REDIRECT_CLOSE = 4014
"""Close code after `closed {reason:"redirect", url}`: join again at `url` (PROTOCOL.md addition)."""
RELAY_ATTEMPTS = 3

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def open_store(config: Config) -> RedisStore:
    assert config.redis_url is not None
    return RedisStore(config.redis_url, config.data_dir, retention_days=config.message_retention_days)


class WorkerRedisStore(RedisStore):
    """The shared store as a worker process uses it: recordings cut short are marked by the front."""

    async def interrupt_recordings(self) -> int:
        return 0


def advertised_url(config: Config) -> str:
    """`--node-url`, else the listening address (loopback for a wildcard bind: set --node-url then)."""
    if config.node_url:
        return config.node_url.rstrip("/")
    host = config.host
    with contextlib.suppress(ValueError):
        address = ipaddress.ip_address(host)
        if address.is_unspecified:
            host = "127.0.0.1" if address.version == 4 else "::1"
        if address.version == 6:
            host = f"[{host}]" if not host.startswith("[") else host
    scheme = "https" if config.tls_cert is not None else "http"
    return f"{scheme}://{host}:{config.port}"


def _without_password(url: str) -> str:
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    netloc = f"{parts.username or ''}:***@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


class RedisNode:
    """This node in the cluster: `attach()` once the front listens, `close()` at shutdown."""

    def __init__(self, config: Config, store: RedisStore) -> None:
        self.config = config
        self.store = store
        self.node_id = new_node_id()
        self.redirect = config.redirect
        self.nodes: NodeRegistry | None = None
        self.placement: RedisPlacement | None = None
        self.front: Front | None = None

    def placement_factory(self, local: LocalPlacement) -> RedisPlacement:
        """The front's `PlacementFactory`: the Redis placement around this node's worker placement."""
        pool = local.pool

        def live_sessions() -> list[tuple[str, str]]:
            return [key for w in pool.workers if w.alive for key in w.load.sessions]

        redis = self.store.redis
        self.nodes = NodeRegistry(redis, node_id=self.node_id, url=advertised_url(self.config),
                                  region=self.config.region, prefix=self.store.prefix, load=self._load)
        self.placement = RedisPlacement(redis, self.nodes, local, live_sessions=live_sessions,
                                        prefix=self.store.prefix, full=local.at_capacity)
        return self.placement

    def install(self, app: web.Application, front: Front) -> None:
        """Adds the middleware to the front app; call before the app starts (middlewares freeze then)."""
        self.front = front
        if self.placement is not None:
            self.placement.draining = lambda: front.draining
        app.middlewares.append(self._middleware)

    async def start(self, config: Config) -> None:
        """Registers the node with the port it now listens on; keeps heartbeat and placements fresh."""
        assert self.nodes is not None and self.placement is not None
        self.nodes.url = advertised_url(config)
        await self.nodes.start()
        self.placement.start()
        print(f"cluster node   {self.node_id} at {self.nodes.url} (region {config.region or '-'}, "
              f"redis {_without_password(config.redis_url or '')}{', redirect' if self.redirect else ''})",
              flush=True)

    def _load(self) -> NodeLoad:
        front = self.front
        if front is None:
            return NodeLoad()
        workers = [w for w in front.pool.workers if w.alive]
        return NodeLoad(sessions=sum(len(w.load.sessions) for w in workers),
                        participants=sum(w.load.participants for w in workers),
                        cpu=sum(w.load.cpu for w in workers), draining=front.draining,
                        full=front.local.at_capacity())

    async def close(self) -> None:
        if self.placement is not None:
            await self.placement.close()
        if self.nodes is not None:
            await self.nodes.close()

    # -- middleware --------------------------------------------------------------------------------------

    @web.middleware
    async def _middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if self.placement is None or self.front is None or RELAYED_HEADER in request.headers:
            return await handler(request)
        path = request.path
        if path == "/v1/rtc" and self.redirect:
            return await self._rtc_with_redirect(request)
        if path == "/v1/sessions" and request.method == "GET":
            return await self._list_sessions(request, handler)
        if path.startswith("/v1/sessions/"):
            return await self._session_route(request, handler)
        return await handler(request)

    async def _caller_cid(self, request: web.Request) -> str | None:
        assert self.front is not None
        try:
            identity = await self.front.auth.verify_admin(request.headers.get("Authorization"))
        except SfuError:
            return None  # the local handler answers with the protocol's error
        return identity.cid

    async def _remote(self, cid: str, sid: str) -> Target | None:
        """The owning node's target if the session lives on another live node."""
        assert self.placement is not None and self.nodes is not None
        owner = await self.placement.owner(cid, sid)
        if owner is None or owner == self.node_id:
            return None
        info = await self.nodes.get(owner)
        if info is None:
            return None
        return Target(ws_url=info.ws_url, http_url=info.url, name=info.node_id,
                      headers={RELAYED_HEADER: self.node_id})

    async def _session_route(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        assert self.front is not None
        parts = request.path.split("/")  # "", "v1", "sessions", sid, ...
        cid = await self._caller_cid(request)
        target = await self._remote(cid, parts[3]) if cid is not None and len(parts) > 3 else None
        if target is None:
            return await handler(request)
        return await self.front._forward(request, target)

    async def _list_sessions(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        assert self.placement is not None and self.nodes is not None and self.front is not None
        cid = await self._caller_cid(request)
        local = await handler(request)
        if cid is None or local.status != 200 or not isinstance(local, web.Response):
            return local
        assert isinstance(local.body, bytes)
        sessions: list[dict[str, Any]] = list(orjson.loads(local.body).get("sessions", ()))
        seen = {s.get("sid") for s in sessions}
        placed = await self.placement.sessions_of(cid)
        owners = {p.node_id for p in placed if p.node_id != self.node_id and p.sid not in seen}
        wanted = {(p.node_id, p.sid) for p in placed}
        headers = {"Authorization": request.headers.get("Authorization", ""), RELAYED_HEADER: self.node_id}
        bodies = await asyncio.gather(*(self._fetch_sessions(node_id, headers) for node_id in sorted(owners)))
        for node_id, body in zip(sorted(owners), bodies, strict=True):
            sessions += [s for s in body if (node_id, s.get("sid")) in wanted and s.get("sid") not in seen]
        return json_response({"sessions": sorted(sessions, key=lambda s: str(s.get("sid", "")))})

    async def _fetch_sessions(self, node_id: str, headers: dict[str, str]) -> list[dict[str, Any]]:
        assert self.nodes is not None and self.front is not None
        info = await self.nodes.get(node_id)
        if info is None:
            return []
        try:
            async with self.front.http.get(info.url + "/v1/sessions", headers=headers) as response:
                if response.status != 200:
                    log.warning("node %s answered %d to list sessions", node_id, response.status)
                    return []
                body = await response.json()
        except (aiohttp.ClientError, OSError, TimeoutError, ValueError) as exc:
            log.warning("node %s did not list its sessions: %s", node_id, exc)
            return []
        sessions = body.get("sessions") if isinstance(body, dict) else None
        return [s for s in sessions if isinstance(s, dict)] if isinstance(sessions, list) else []

    # -- --redirect --------------------------------------------------------------------------------------

    async def _rtc_with_redirect(self, request: web.Request) -> web.StreamResponse:
        """Like the front's relay, except that a session owned elsewhere gets a redirect to its node."""
        front = self.front
        assert front is not None and self.placement is not None
        ws = web.WebSocketResponse(max_msg_size=self.config.max_frame_bytes * OVERSIZE_FACTOR,
                                   timeout=CLOSE_TIMEOUT_S, autoping=True, heartbeat=None)
        await ws.prepare(request)
        front.sockets.add(ws)
        try:
            try:
                msg = await ws.receive(timeout=self.config.join_timeout_s)
            except TimeoutError:
                await ws.close(code=4008, message=b"join_timeout")
                return ws
            if msg.type not in (WSMsgType.TEXT, WSMsgType.BINARY):
                return ws
            first = msg.data if isinstance(msg.data, str) else bytes(msg.data).decode(errors="replace")
            try:
                key = await front._session_key(first, request)
            except (RedisError, OSError) as exc:
                log.warning("cannot verify a join: Redis: %s", exc)
                await close_for_reconnect(ws)
                return ws
            headers = forward_headers(request)
            for _ in range(RELAY_ATTEMPTS):
                try:
                    target = await self.placement.locate(*key) if key is not None else front._any_target()
                except NoTarget:
                    break
                except AtCapacity as exc:
                    await refuse(ws, first, Unavailable(str(exc)))
                    return ws
                if target.name.startswith("n_"):  # another node's (local ones are worker-N)
                    await self._send_redirect(ws, target)
                    return ws
                try:
                    await relay(ws, first, target.ws_url, {**headers, **target.headers}, http=front.http)
                    return ws
                except UpstreamUnavailable as exc:
                    log.warning("relay to %s failed: %s", target.name, exc)
                    await self.placement.lost(target)
                    await asyncio.sleep(0.2)
            await close_for_reconnect(ws)
        finally:
            front.sockets.discard(ws)
        return ws

    async def _send_redirect(self, ws: web.WebSocketResponse, target: Target) -> None:
        body = {"type": "closed", "reason": "redirect", "reconnect": True, "url": target.ws_url}
        with contextlib.suppress(Exception):
            await ws.send_str(orjson.dumps(body).decode())
        with contextlib.suppress(Exception):
            await ws.close(code=REDIRECT_CLOSE, message=b"redirect")
