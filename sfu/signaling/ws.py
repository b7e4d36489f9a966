"""`GET /v1/rtc`: one WebSocket, from authentication to close.

Each socket has one reader (this request's handler task) and one sender task draining a bounded outbox,
so nothing in the server ever waits for a client to read: a client whose outbox overflows is cut off.
The reader enforces the limits of PROTOCOL.md: frame size, a frames/s token bucket with a burst, `join`
first and within `join_timeout_s`, and at most `idle_timeout_s` of silence.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from dataclasses import dataclass
from typing import Any

import orjson
from aiohttp import WSMsgType, web

from sfu.config import Config
from sfu.errors import BadRequest, SfuError
from sfu.server import SERVER_KEY, Server
from sfu.session.participant import Participant
from sfu.session.session import Session
from sfu.signaling import messages
from sfu.signaling.dispatch import Call, Dispatcher, core_dispatcher, error_frame, with_re

log = logging.getLogger("sfu.signaling")

OUTBOX_FRAMES = 1024
"""Frames waiting for a slow client; one more and the client is disconnected."""
CLOSE_TIMEOUT_S = 3.0
OVERSIZE_FACTOR = 4
"""aiohttp itself drops frames beyond this many times `max_frame_bytes` (close 1009) before we see them."""
# Closes after which the participant leaves at once; any other end of the socket may be resumed.
FINAL_CLOSES = frozenset({1000, 1001, 4001, 4003, 4009, 4010, 4011, 4012, 4013})

RECONNECT_REASONS = frozenset({"server_shutdown"})
"""`closed` reasons that carry `reconnect: true`: the session lives on elsewhere or after the restart."""

DISPATCHER_KEY = web.AppKey("dispatcher", Dispatcher)
SOCKETS_KEY = web.AppKey("sockets", dict["Socket", None])


@dataclass(frozen=True, slots=True)
class _Close:
    code: int
    reason: str


class TokenBucket:
    """`rate` tokens per second, at most `burst` saved up; `now` is passed in so tests can drive time."""

    def __init__(self, rate: float, burst: int, now: float) -> None:
        self.rate = rate
        self.burst = float(burst)
        self.tokens = float(burst)
        self.last = now

    def take(self, now: float) -> bool:
        self.tokens = min(self.burst, self.tokens + (now - self.last) * self.rate)
        self.last = now
        if self.tokens < 1.0:
            return False
        self.tokens -= 1.0
        return True


class Socket:
    """One signaling connection; implements `sfu.session.participant.Connection`."""

    def __init__(self, ws: web.WebSocketResponse, request: web.Request, server: Server,
                 dispatcher: Dispatcher) -> None:
        self.ws = ws
        self.request = request
        self.server = server
        self.config: Config = server.config
        self.dispatcher = dispatcher
        self.session: Session | None = None
        self.participant: Participant | None = None
        self.close_code: int | None = None
        self.close_reason = ""
        self._outbox: deque[bytes | _Close] = deque()
        self._wakeup = asyncio.Event()
        self._sender: asyncio.Task[None] | None = None
        self._loop = asyncio.get_running_loop()
        self._bucket = TokenBucket(self.config.frames_per_s, self.config.frame_burst, self._loop.time())

    # -- Connection --------------------------------------------------------------------------------------

    def send(self, message: dict[str, Any]) -> None:
        if self.close_code is not None:
            return
        if len(self._outbox) >= OUTBOX_FRAMES:
            self._cut_off()
            return
        self._outbox.append(orjson.dumps(message))
        self._wakeup.set()

    def close(self, code: int, reason: str) -> None:
        if self.close_code is not None:
            return
        self.close_code, self.close_reason = code, reason
        closed: dict[str, Any] = {"type": "closed", "reason": reason}
        if reason in RECONNECT_REASONS:
            closed["reconnect"] = True  # an addition to PROTOCOL.md: join again, e.g. through another server
        self._outbox.append(orjson.dumps(closed))
        self._outbox.append(_Close(code, reason))
        self._wakeup.set()

    def _cut_off(self) -> None:
        """A client that does not read: drop its outbox and the TCP connection (memory stays bounded)."""
        log.info("closing a socket that does not read", extra={"uid": getattr(self.participant, "uid", None)})
        self.close_code, self.close_reason = 4009, "slow_consumer"
        self._outbox.clear()
        transport = self.request.transport
        if transport is not None:
            transport.abort()
        self._wakeup.set()

    async def _send_loop(self) -> None:
        while True:
            while not self._outbox:
                if self.close_code is not None:
                    return
                self._wakeup.clear()
                await self._wakeup.wait()
            item = self._outbox.popleft()
            if isinstance(item, _Close):
                await self.ws.close(code=item.code, message=item.reason.encode()[:120])
                return
            await self.ws.send_frame(item, WSMsgType.TEXT)

    # -- reader ------------------------------------------------------------------------------------------

    async def run(self) -> None:
        self._sender = self._loop.create_task(self._send_loop(), name="ws-sender")
        try:
            if await self._await_join():
                await self._read_loop()
        finally:
            await self._finish()

    async def _receive(self, wait_s: float) -> str | None:
        """The next text frame, or None once the socket is closing; enforces size, rate and binary rules."""
        while self.close_code is None:
            try:
                msg = await self.ws.receive(timeout=max(wait_s, 0.0))
            except TimeoutError:
                return None
            if msg.type not in (WSMsgType.TEXT, WSMsgType.BINARY):
                return None
            if not self._bucket.take(self._loop.time()):
                self._refuse(messages_error("rate_limited", "more than the allowed frames per second"),
                             4009, "rate_limited")
                return None
            size = len(msg.data.encode() if isinstance(msg.data, str) else msg.data)
            if size > self.config.max_frame_bytes:
                limit = self.config.max_frame_bytes
                error = messages_error("too_large", f"frame is larger than {limit} bytes")
                self._refuse(error, 4009, "too_large")
                return None
            if msg.type == WSMsgType.BINARY:
                self.send(error_frame(BadRequest("frames must be text"), None))
                continue
            return str(msg.data)
        return None

    def _refuse(self, error: dict[str, Any], code: int, reason: str) -> None:
        self.send(error)
        self.close(code, reason)

    async def _await_join(self) -> bool:
        deadline = self._loop.time() + self.config.join_timeout_s
        while self.close_code is None:
            text = await self._receive(deadline - self._loop.time())
            if text is None:
                if self.close_code is None and self._loop.time() >= deadline and not self.ws.closed:
                    self.close(4008, "join_timeout")
                return False
            rid: messages.RequestId | None = None
            try:
                frame = messages.decode_frame(text)
                rid = messages.request_id(frame)
                if frame["type"] != "join":
                    raise BadRequest("join must come first")
                messages.check_id(frame)
                await self._join(messages.parse_join(frame), rid)
                return True
            except SfuError as exc:
                log.info("join refused: %s: %s", exc.code, exc.message,
                         extra={"origin": self.request.headers.get("Origin")})
                self.send(error_frame(exc, rid))
                if exc.close_code is not None:
                    self.close(exc.close_code, exc.code)
            except Exception:
                log.exception("join failed")
                self.send(error_frame(SfuError("internal error"), rid))
                self.close(1011, "internal")
        return False

    async def _join(self, join: messages.Join, rid: messages.RequestId | None) -> None:
        auth = self.server.auth
        if join.token is not None:
            identity = await auth.verify_token(join.token)
        else:
            assert join.key is not None and join.session is not None and join.uid is not None
            origin = self.request.headers.get("Origin")
            identity = await auth.verify_web_key(join.key, origin, sid=join.session, uid=join.uid,
                                                 name=join.name)
        session, result = await self.server.registry.join(
            identity, self, resume=join.resume, auto_subscribe=join.auto_subscribe, sdk=join.sdk
        )
        self.session, self.participant = session, result.participant
        result.participant.release(with_re({"type": "joined", **result.body}, rid), result.seen)

    async def _read_loop(self) -> None:
        assert self.session is not None and self.participant is not None
        call = Call(self.server, self.session, self.participant, self)
        while self.close_code is None:
            text = await self._receive(self.config.idle_timeout_s)
            if text is None:
                if self.close_code is None and not self.ws.closed:
                    self.close(4008, "idle_timeout")
                return
            try:
                frame = messages.decode_frame(text)
            except BadRequest as exc:
                self.send(error_frame(exc, None))
                continue
            reply = await self.dispatcher.dispatch(call, frame)
            if reply is not None:
                self.send(reply)

    async def _finish(self) -> None:
        """Leaves or waits for a resume, flushes `closed`, then ends the sender."""
        session, participant = self.session, self.participant
        if session is not None and participant is not None and participant.connection is self:
            if self.close_code in FINAL_CLOSES:
                reason, code = self.close_reason or "left", self.close_code or 1000
                await session.remove_participant(participant, reason, code)
            else:
                session.disconnect(participant, self)
        if self.close_code is None:
            self.close_code = 1000
            self._outbox.append(_Close(1000, ""))
            self._wakeup.set()
        sender, self._sender = self._sender, None
        if sender is not None:
            try:
                await asyncio.wait_for(sender, CLOSE_TIMEOUT_S + 1.0)
            except Exception as exc:  # a peer gone mid-write is normal, never worth a traceback
                log.debug("socket sender ended: %s", exc.__class__.__name__)
            finally:
                if not sender.done():
                    sender.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await sender


def messages_error(code: str, message: str) -> dict[str, Any]:
    return {"type": "error", "code": code, "message": message}


async def handle_rtc(request: web.Request) -> web.StreamResponse:
    server = request.app[SERVER_KEY]
    config = server.config
    ws = web.WebSocketResponse(max_msg_size=config.max_frame_bytes * OVERSIZE_FACTOR, timeout=CLOSE_TIMEOUT_S,
                               autoping=True, heartbeat=None)
    await ws.prepare(request)
    socket = Socket(ws, request, server, request.app[DISPATCHER_KEY])
    sockets = request.app[SOCKETS_KEY]
    sockets[socket] = None
    try:
        await socket.run()
    finally:
        sockets.pop(socket, None)
    return ws


async def _close_sockets(app: web.Application) -> None:
    """Shutdown: end every session (sockets get `closed {reason:"server_shutdown"}`, 1001), then the rest."""
    await app[SERVER_KEY].registry.close()
    sockets: dict[Socket, None] = app[SOCKETS_KEY]
    for socket in list(sockets):
        socket.close(1001, "server_shutdown")


def add_routes(app: web.Application, dispatcher: Dispatcher | None = None) -> None:
    """Registers `GET /v1/rtc`; `app[DISPATCHER_KEY]` is the table the media glue extends."""
    app[DISPATCHER_KEY] = dispatcher if dispatcher is not None else core_dispatcher()
    app[SOCKETS_KEY] = {}
    app.router.add_get("/v1/rtc", handle_rtc)
    app.on_shutdown.append(_close_sockets)
