"""The front process of `sfu serve --workers N`: HTTP, the WebSocket endpoint, placement and relays.

- `GET /v1/rtc`: reads the `join`, resolves (cid, sid) by verifying the credential like a worker would,
  asks the Placement for the owner and relays the socket there (sfu/cluster/wsproxy.py). A join the front
  cannot verify goes to the least loaded worker unplaced, which answers it with the protocol's error.
- `/v1/...` REST: `GET /v1/sessions` and `/v1/stats` are the sum over workers; `/v1/sessions/{sid}/...`
  goes to the worker that has the session (the placed one first, then the others until one does not
  answer 404); everything else lives in the shared store, so any worker answers it.
- `/metrics`: every worker's metrics summed, plus per-worker load gauges. `/healthz`, `/`, `/demo/`,
  `/sdk/` are served by the front itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
from collections.abc import Callable
from pathlib import Path

import aiohttp
import orjson
from aiohttp import WSMsgType, web
from aiohttp.typedefs import Middleware

from sfu.auth.authenticator import Authenticator
from sfu.auth.identity import Identity
from sfu.cluster.merge import merge_prometheus, merge_stats
from sfu.cluster.placement import AtCapacity, LocalPlacement, NoTarget, Placement, Target
from sfu.cluster.supervisor import WorkerPool
from sfu.cluster.wsproxy import UpstreamUnavailable, close_for_reconnect, forward_headers, relay
from sfu.config import Config
from sfu.errors import BadRequest, SfuError, Unavailable
from sfu.metrics import process_rss_bytes
from sfu.session.admission import max_cpu_fraction
from sfu.signaling import messages
from sfu.signaling.dispatch import error_frame
from sfu.signaling.forwarded import forwarded_middleware
from sfu.signaling.http_util import error_middleware, json_response
from sfu.signaling.ws import CLOSE_TIMEOUT_S, OVERSIZE_FACTOR
from sfu.store.base import Store

log = logging.getLogger("sfu.cluster.front")

HOP_HEADERS = frozenset({"connection", "keep-alive", "transfer-encoding", "upgrade", "content-length", "host",
                         "x-forwarded-for", "x-forwarded-proto", "te", "trailer", "proxy-authorization"})
RELAY_ATTEMPTS = 3
STREAM_CHUNK = 256 * 1024

_FRONT_PROCESS = """# HELP process_cpu_seconds_total CPU time of the server processes
# TYPE process_cpu_seconds_total counter
process_cpu_seconds_total {cpu}
# HELP process_resident_memory_bytes resident memory of the server processes
# TYPE process_resident_memory_bytes gauge
process_resident_memory_bytes {rss}
"""

PlacementFactory = Callable[[LocalPlacement], Placement]
"""Builds the front's Placement around this node's LocalPlacement (a Redis placement across nodes)."""


class Front:
    def __init__(self, config: Config, store: Store, pool: WorkerPool,
                 placement_factory: PlacementFactory | None = None) -> None:
        self.config = config
        self.store = store
        self.auth = Authenticator(store)
        self.pool = pool
        self.local = LocalPlacement(pool, max_cpu=max_cpu_fraction(config.max_worker_cpu))
        self.placement: Placement = placement_factory(self.local) if placement_factory else self.local
        self.draining = False
        self.closing = False
        self.sockets: set[web.WebSocketResponse] = set()
        self._round_robin = itertools.count()
        self._http: aiohttp.ClientSession | None = None

    @property
    def http(self) -> aiohttp.ClientSession:
        if self._http is None:
            timeout = aiohttp.ClientTimeout(total=30.0)
            # NOTE: no pool limit: every relayed socket holds one connection for its whole life
            # (aiohttp's default of 100 would make the 101st participant wait, then time out)
            self._http = aiohttp.ClientSession(timeout=timeout, auto_decompress=False,
                                               connector=aiohttp.TCPConnector(limit=0))
        return self._http

    async def close(self) -> None:
        if self._http is not None:
            await self._http.close()
            self._http = None

    # -- WebSocket ---------------------------------------------------------------------------------------

    async def handle_rtc(self, request: web.Request) -> web.StreamResponse:
        ws = web.WebSocketResponse(max_msg_size=self.config.max_frame_bytes * OVERSIZE_FACTOR,
                                   timeout=CLOSE_TIMEOUT_S, autoping=True, heartbeat=None)
        await ws.prepare(request)
        self.sockets.add(ws)
        try:
            await self._serve_socket(ws, request)
        finally:
            self.sockets.discard(ws)
        return ws

    async def _first_frame(self, ws: web.WebSocketResponse) -> str | None:
        """The first text frame (binary ones are refused as a worker refuses them), or None."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.config.join_timeout_s
        for _ in range(self.config.frame_burst):
            try:
                msg = await ws.receive(timeout=max(deadline - loop.time(), 0.0))
            except TimeoutError:  # as a worker would answer (sfu/signaling/ws.py)
                with contextlib.suppress(Exception):
                    await ws.send_str(orjson.dumps({"type": "closed", "reason": "join_timeout"}).decode())
                await ws.close(code=4008, message=b"join_timeout")
                return None
            if msg.type == WSMsgType.TEXT:
                return str(msg.data)
            if msg.type != WSMsgType.BINARY:
                return None
            await ws.send_str(orjson.dumps(error_frame(BadRequest("frames must be text"), None)).decode())
        await ws.close(code=4009, message=b"rate_limited")  # a burst of frames and never a join
        return None

    async def _serve_socket(self, ws: web.WebSocketResponse, request: web.Request) -> None:
        first = await self._first_frame(ws)
        if first is None:
            return
        try:
            key = await self._session_key(first, request)
        except Exception as exc:  # the store is unreachable (e.g. Redis down): not the client's fault
            log.warning("cannot verify a join (%s: %s): asking the client to reconnect", type(exc).__name__,
                        exc)
            await close_for_reconnect(ws)
            return
        headers = forward_headers(request)
        for _ in range(RELAY_ATTEMPTS):
            try:
                target = await self.placement.locate(*key) if key is not None else self._any_target()
            except NoTarget:
                break
            except AtCapacity as exc:
                await refuse(ws, first, Unavailable(str(exc)))
                return
            try:
                await relay(ws, first, target.ws_url, {**headers, **target.headers}, http=self.http)
                return
            except UpstreamUnavailable as exc:
                log.warning("relay to %s failed: %s", target.name, exc)
                await self.placement.lost(target)
                await asyncio.sleep(0.2)
        await close_for_reconnect(ws)

    async def _session_key(self, text: str, request: web.Request) -> tuple[str, str] | None:
        """(cid, sid) of a join the front can verify; None for anything else (a worker will refuse it)."""
        try:
            frame = messages.decode_frame(text)
            if frame.get("type") != "join":
                return None
            join = messages.parse_join(frame)
            identity: Identity
            if join.token is not None:
                identity = await self.auth.verify_token(join.token)
            else:
                assert join.key is not None and join.session is not None and join.uid is not None
                identity = await self.auth.verify_web_key(join.key, request.headers.get("Origin"),
                                                          sid=join.session, uid=join.uid, name=join.name)
        except SfuError:
            return None
        return identity.cid, identity.sid

    def _any_target(self) -> Target:
        worker = self.local.least_loaded()
        return next(t for t in self.local.targets() if t.name == worker.name)

    # -- HTTP --------------------------------------------------------------------------------------------

    async def healthz(self, _: web.Request) -> web.Response:
        alive = sum(1 for w in self.pool.workers if w.alive)
        if self.closing or self.draining:
            status = "shutting_down" if self.closing else "draining"
            sessions, participants = await self._count_live()
            return json_response({"status": status, "sessions": sessions, "participants": participants}, 503)
        if alive == 0:
            return json_response({"status": "no_workers", "sessions": 0, "participants": 0}, 503)
        return json_response({"status": "ok"})

    async def _count_live(self) -> tuple[int, int]:
        """Sessions and participants right now (asked of each worker), not as of the last poll."""
        fetches = (self._fetch_text(t, "/cluster/load?peek=1") for t in self.local.targets())
        texts = await asyncio.gather(*fetches)
        sessions = participants = 0
        for text in texts:
            try:
                body = orjson.loads(text) if text else {}
            except orjson.JSONDecodeError:
                continue
            if isinstance(body, dict):
                sessions += len(body.get("sessions", ()))
                participants += int(body.get("participants", 0))
        return sessions, participants

    async def metrics(self, _: web.Request) -> web.Response:
        texts = await asyncio.gather(*(self._fetch_text(t, "/metrics") for t in self.local.targets()))
        own = _FRONT_PROCESS.format(cpu=time.process_time(), rss=process_rss_bytes())  # summed in
        body = merge_prometheus([t for t in texts if t is not None] + [own], self._own_metrics())
        return web.Response(body=body, headers={"Content-Type": "text/plain; version=0.0.4; charset=utf-8"})

    def _own_metrics(self) -> list[str]:
        workers = self.pool.workers
        lines = [
            "# HELP sfu_cluster_workers worker processes running",
            "# TYPE sfu_cluster_workers gauge",
            f"sfu_cluster_workers {sum(1 for w in workers if w.alive)}",
            "# HELP sfu_cluster_worker_restarts_total workers restarted after they exited",
            "# TYPE sfu_cluster_worker_restarts_total counter",
            f"sfu_cluster_worker_restarts_total {self.pool.restarts_total}",
        ]
        for name, help_text, attr in (("cpu", "CPU of the worker (cores)", "cpu"),
                                      ("forwarded_pps", "RTP packets/s the worker forwards", "pps"),
                                      ("participants", "participants on the worker", "participants")):
            metric = f"sfu_cluster_worker_{name}"
            lines += [f"# HELP {metric} {help_text}", f"# TYPE {metric} gauge"]
            lines += [f'sfu_cluster_worker_{name}{{worker="{w.index}"}} {float(getattr(w.load, attr))}'
                      for w in workers if w.alive]
        return lines

    async def _fetch_text(self, target: Target, path: str) -> str | None:
        try:
            async with self.http.get(target.http_url + path, headers=dict(target.headers)) as response:
                return await response.text() if response.status == 200 else None
        except (aiohttp.ClientError, OSError, TimeoutError):
            return None

    async def stats(self, request: web.Request) -> web.StreamResponse:
        return await self._fan_in(request, merge_stats)

    async def list_sessions(self, request: web.Request) -> web.StreamResponse:
        def merge(bodies: list[object]) -> object:
            sessions = [s for b in bodies if isinstance(b, dict) for s in b.get("sessions", ())]
            return {"sessions": sorted(sessions, key=lambda s: str(s.get("sid", "")))}

        return await self._fan_in(request, merge)

    async def _fan_in(self, request: web.Request, merge: object) -> web.StreamResponse:
        """Asks every worker; the first error answers for all, else the merged bodies."""
        targets = self.local.targets()
        if not targets:
            return _unavailable()
        responses = await asyncio.gather(*(self._forward(request, t) for t in targets))
        bodies = []
        for response in responses:
            if response.status != 200:
                return response
            assert isinstance(response.body, bytes)
            bodies.append(orjson.loads(response.body))
        assert callable(merge)
        return json_response(merge(bodies))

    async def session_route(self, request: web.Request) -> web.StreamResponse:
        """The worker that has the session answers; a 404 from the others means not there."""
        sid = request.match_info["sid"]
        placed = [w.name for (_, s), p in self.local.placed_by_key.items() if s == sid
                  for w in self.pool.workers if w.index == p.worker]
        targets = sorted(self.local.targets(), key=lambda t: t.name not in placed)
        if not targets:
            return _unavailable()
        first: web.Response | None = None
        for target in targets:
            response = await self._forward(request, target)
            if response.status != 404:
                return response
            first = first or response
        assert first is not None
        return first

    async def list_recordings(self, request: web.Request) -> web.StreamResponse:
        """Every worker lists the stored recordings plus its live ones: the owner's entry wins."""
        owners = self._recording_owners()
        names = [t.name for t in self.local.targets()]

        def merge(bodies: list[object]) -> object:
            by_id: dict[str, dict[str, object]] = {}
            for name, body in zip(names, bodies, strict=False):
                for entry in body.get("recordings", ()) if isinstance(body, dict) else ():
                    rid = str(entry.get("recording_id"))
                    if rid not in by_id or owners.get(rid) == name:
                        by_id[rid] = entry
            return {"recordings": sorted(by_id.values(), key=_recording_order)}

        return await self._fan_in(request, merge)

    async def recording_route(self, request: web.Request) -> web.StreamResponse:
        """A live recording is answered by the worker writing it; a finished one by any (the store)."""
        owner = self._recording_owners().get(request.match_info["recording_id"])
        targets = self.local.targets()
        if not targets:
            return _unavailable()
        target = next((t for t in targets if t.name == owner), None)
        if target is None:
            target = targets[next(self._round_robin) % len(targets)]
        if "/files/" in request.path:
            return await self._stream(request, target)  # media files: never whole in memory
        return await self._forward(request, target)

    async def _stream(self, request: web.Request, target: Target) -> web.StreamResponse:
        headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP_HEADERS}
        headers.update(forward_headers(request, target.headers))
        url = target.http_url + request.rel_url.raw_path_qs
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=5.0, sock_read=30.0)
        response: web.StreamResponse | None = None
        try:
            async with self.http.get(url, headers=headers, timeout=timeout) as upstream:
                out = {k: v for k, v in upstream.headers.items() if k.lower() not in HOP_HEADERS}
                response = web.StreamResponse(status=upstream.status, headers=out)
                await response.prepare(request)
                async for chunk in upstream.content.iter_chunked(STREAM_CHUNK):
                    await response.write(chunk)
                await response.write_eof()
                return response
        except (aiohttp.ClientError, OSError, TimeoutError):
            if response is not None and response.prepared:
                raise  # mid-body: the client sees the transfer cut short
            return _unavailable()

    def _recording_owners(self) -> dict[str, str]:
        return {rid: w.name for w in self.pool.workers if w.alive for _, rid in w.load.recordings}

    async def any_worker(self, request: web.Request) -> web.StreamResponse:
        targets = self.local.targets()
        if not targets:
            return _unavailable()
        return await self._forward(request, targets[next(self._round_robin) % len(targets)])

    async def _forward(self, request: web.Request, target: Target) -> web.Response:
        headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP_HEADERS}
        headers.update(forward_headers(request, target.headers))
        headers["Host"] = request.host
        body = await request.read()
        try:
            url = target.http_url + request.rel_url.raw_path_qs
            async with self.http.request(request.method, url, headers=headers, data=body or None,
                                         allow_redirects=False) as upstream:
                payload = await upstream.read()
                out = {k: v for k, v in upstream.headers.items() if k.lower() not in HOP_HEADERS}
                return web.Response(status=upstream.status, body=payload, headers=out)
        except (aiohttp.ClientError, OSError, TimeoutError):
            return _unavailable()

    async def workers(self, request: web.Request) -> web.Response:
        """`GET /v1/cluster/workers` (admin): each worker's pid, load and the caller's sessions on it."""
        identity = await self.auth.verify_admin(request.headers.get("Authorization"))
        out = []
        for w in self.pool.workers:
            sids = sorted(sid for (cid, sid) in w.load.sessions if cid == identity.cid)
            out.append({"worker": w.index, "pid": w.pid, "port": w.port, "alive": w.alive,
                        "restarts": w.restarts,
                        "cpu": w.load.cpu, "pps": w.load.pps, "participants": w.load.participants,
                        "sessions": sids})
        return json_response({"workers": out})


def _recording_order(entry: dict[str, object]) -> tuple[float, str]:
    started = entry.get("started_at")
    return (float(started) if isinstance(started, int | float) else 0.0, str(entry.get("recording_id")))


def _unavailable() -> web.Response:
    body = {"error": {"code": "unavailable", "message": "no worker is running"}}
    return web.Response(body=orjson.dumps(body), status=503, content_type="application/json")


FRONT_KEY = web.AppKey("front", Front)


def build_front_app(front: Front, web_root: Path) -> web.Application:
    from sfu.app import _add_static_routes

    middlewares: list[Middleware] = [error_middleware]
    if front.config.trusted_proxies:
        middlewares.insert(0, forwarded_middleware(front.config.trusted_proxies))
    app = web.Application(client_max_size=1024 * 1024, middlewares=middlewares)
    app[FRONT_KEY] = front
    router = app.router
    router.add_get("/v1/rtc", front.handle_rtc)
    router.add_get("/healthz", front.healthz)
    router.add_get("/metrics", front.metrics)
    router.add_get("/v1/stats", front.stats)
    router.add_get("/v1/cluster/workers", front.workers)
    router.add_get("/v1/sessions", front.list_sessions)
    router.add_route("*", "/v1/sessions/{sid}", front.session_route)
    router.add_route("*", "/v1/sessions/{sid}/{tail:.*}", front.session_route)
    router.add_get("/v1/recordings", front.list_recordings)
    router.add_route("*", "/v1/recordings/{recording_id}", front.recording_route)
    router.add_route("*", "/v1/recordings/{recording_id}/{tail:.*}", front.recording_route)
    router.add_route("*", "/v1/{tail:.*}", front.any_worker)
    router.add_get("/demo/config.json", front.any_worker)
    _add_static_routes(app, web_root)

    async def sdk_cors(request: web.Request, response: web.StreamResponse) -> None:
        if request.path.startswith("/sdk/"):
            response.headers["Access-Control-Allow-Origin"] = "*"

    app.on_response_prepare.append(sdk_cors)
    return app


async def refuse(ws: web.WebSocketResponse, first: str, exc: SfuError) -> None:
    """Answers the join as a worker answers a refused one: `error` (with `re`), `closed`, the close code."""
    rid = messages.request_id(messages.decode_frame(first))
    with contextlib.suppress(Exception):
        await ws.send_str(orjson.dumps(error_frame(exc, rid)).decode())
        await ws.send_str(orjson.dumps({"type": "closed", "reason": exc.code}).decode())
    await ws.close(code=exc.close_code or 1011, message=exc.code.encode())
