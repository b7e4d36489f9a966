"""`Session`: one participant in one SFU session, over one signaling socket and two peer connections."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Sequence
from types import TracebackType
from typing import Any
from urllib.parse import urlsplit

import aiohttp

from client_sdk.data import DataChannels
from client_sdk.errors import (
    ConnectionClosed,
    Forbidden,
    RequestTimeout,
    SfuError,
    TooManyRedirects,
    Unavailable,
)
from client_sdk.events import (
    Closed,
    DataReceived,
    FeedPublished,
    FeedUnpublished,
    FeedUpdated,
    ParticipantJoined,
    ParticipantLeft,
    ParticipantUpdated,
    Reconnected,
    Reconnecting,
    parse_event,
)
from client_sdk.feeds import LocalFeed, RemoteFeed
from client_sdk.hub import EventHub, EventStream
from client_sdk.ice import loopback_host, rtc_configuration
from client_sdk.peers import PublisherPeer, SubscriberPeer
from client_sdk.requests import Requests
from client_sdk.signaling import Connection
from client_sdk.wire import Feed, IceServer, Joined, JsonObject, Message, Participant

log = logging.getLogger("client_sdk.session")

SDK_INFO = {"name": "pysfu-python", "version": "0.1.0"}
TERMINAL_CLOSE_CODES = frozenset({1000, 4001, 4003, 4008, 4009, 4010, 4011, 4012, 4013})
"""Close codes after which reconnecting cannot help (PROTOCOL.md "Close codes")."""


MAX_REDIRECTS = 3
"""Redirects followed in a row by one join before it fails with TooManyRedirects."""


def _backoff_s(attempt: int) -> float:
    return float(min(0.1 * 2 ** (attempt - 1), 5.0))


class _Redirected(Exception):
    """The join was answered with `closed {reason:"redirect", url}` (close 4014): join at `url`."""

    def __init__(self, url: str) -> None:
        super().__init__(url)
        self.url = url


class _Joining:
    """One socket's join in progress: `closed` frames before `joined` belong to it, not to the session."""

    __slots__ = ("closed", "done")

    def __init__(self) -> None:
        self.closed: JsonObject | None = None
        self.done = False


def _redirect_url(closed: JsonObject | None) -> str | None:
    if closed is None or closed.get("reason") != "redirect":
        return None
    url = closed.get("url")
    schemes = ("ws://", "wss://", "http://", "https://")
    return url if isinstance(url, str) and url.startswith(schemes) else None


class Session(Requests):
    """A participant: `await session.join()` (or `connect(...)`), then publish, subscribe, send, listen."""

    def __init__(
        self,
        url: str,
        *,
        token: str | None = None,
        key: str | None = None,
        session: str | None = None,
        uid: str | None = None,
        name: str | None = None,
        origin: str | None = None,
        auto_subscribe: bool = True,
        reconnect: bool = True,
        request_timeout_s: float = 10.0,
        ping_interval_s: float = 10.0,
        reconnect_timeout_s: float = 60.0,
        ice_hosts: Sequence[str] | None = None,
        repair: bool = True,
    ) -> None:
        """`ice_hosts`: the local addresses to gather ICE host candidates on; by default the loopback
        address when the server's host is loopback, else every interface aioice finds (a multi-homed
        machine, or a load tool that gives its subscribers their own address, picks them here).
        `repair`: repeat NACKs and restart from key frames on lossy links (client_sdk/repair.py); False
        leaves decoded video to stock aiortc."""
        if (token is None) == (key is None):
            raise ValueError("give exactly one of token= or key= (with session= and uid=)")
        if key is not None and (session is None or uid is None):
            raise ValueError("key= needs session= and uid=")
        self.url = url
        self._credentials: JsonObject = (
            {"token": token} if token else {"key": key, "session": session, "uid": uid}
        )
        if name is not None:
            self._credentials["name"] = name
        self._origin = origin
        self.auto_subscribe = auto_subscribe
        self._reconnect = reconnect
        self._request_timeout_s = request_timeout_s
        self._ping_interval_s = ping_interval_s
        self._reconnect_timeout_s = reconnect_timeout_s
        self._repair = repair
        loopback = loopback_host(urlsplit(url).hostname)
        if ice_hosts is not None:
            self._gather_hosts: tuple[str, ...] = tuple(ice_hosts)
        else:
            self._gather_hosts = (loopback,) if loopback else ()

        self.sid = ""
        self.uid = ""
        self.me: Participant | None = None
        self.participants_by_uid: dict[str, Participant] = {}
        self.feeds_by_id: dict[str, Feed] = {}
        self.history_by_pipeline: dict[str, tuple[Message, ...]] = {}
        self.ice_servers: tuple[IceServer, ...] = ()
        self.local_feeds: list[LocalFeed] = []
        self._subscribed: dict[str, bool] = {}  # feed_id -> decode, what a fresh rejoin must restore
        self._resume_token: str | None = None
        self._node_url: str | None = None  # the node a redirect sent us to: first stop of every rejoin

        self._hub = EventHub()
        self._conn: Connection | None = None
        self._generation = 0
        self._connected = asyncio.Event()
        self._publisher: PublisherPeer | None = None
        self._subscriber: SubscriberPeer | None = None
        self._data = DataChannels(request_timeout_s)
        self._reconnect_task: asyncio.Task[None] | None = None
        self._teardown_task: asyncio.Task[None] | None = None
        self._closing = False
        self._closed_reason: str | None = None
        self._reconnect_reason: str | None = None  # a `closed` with reconnect: the reason, if we give up

    # -- lifecycle ----------------------------------------------------------------------------------------

    async def join(self) -> Joined:
        """Opens the socket and joins; raises the typed error of a refused join (Unauthorized...)."""
        joined = await self._open_and_join(resume=None)
        self.history_by_pipeline = dict(joined.history)
        return joined

    async def __aenter__(self) -> Session:
        if self._conn is None:
            await self.join()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    @property
    def closed(self) -> bool:
        return self._closing or self._closed_reason is not None

    async def leave(self) -> None:
        """Leaves the session (the `leave` request), then closes everything; same as `close()`."""
        await self.close()

    async def close(self) -> None:
        """Leaves and releases the socket, both peer connections and every task. Idempotent."""
        if self._teardown_task is None:
            self._closing = True
            self._teardown_task = asyncio.create_task(self._teardown("left", None, send_leave=True))
        await asyncio.shield(self._teardown_task)

    async def _teardown(self, reason: str, code: int | None, *, send_leave: bool = False) -> None:
        task = self._reconnect_task
        if task is not None and task is not asyncio.current_task():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        conn, self._conn = self._conn, None
        self._connected.clear()
        if conn is not None:
            if send_leave and not conn.closed:
                with contextlib.suppress(SfuError):
                    await conn.send({"type": "leave"})
            await conn.close()
        await self._close_peers()
        self._closed_reason = reason
        self._hub.emit(Closed(reason, code))

    async def _close_peers(self) -> None:
        publisher, self._publisher = self._publisher, None
        subscriber, self._subscriber = self._subscriber, None
        if publisher is not None:
            await publisher.close()
        if subscriber is not None:
            await subscriber.close()

    def events(self) -> EventStream:
        """A stream of typed events from now on (the first stream also gets those since `join`)."""
        return self._hub.open_stream()

    # -- socket -------------------------------------------------------------------------------------------

    async def _open_and_join(self, resume: str | None) -> Joined:
        """Joins at the node that last took us (else `self.url`), following redirects (PROTOCOL.md 4014).

        A redirect is followed at once with the same `join`, at most MAX_REDIRECTS in a row (then
        TooManyRedirects). A redirect target that cannot be reached (its node died, the session's
        placement moves) is forgotten and the original URL is tried instead, once per call; one that
        fails the join otherwise is forgotten too, so the next attempt starts at the original URL.
        """
        url = self._node_url or self.url
        redirects = 0
        fell_back = False
        while True:
            try:
                return await self._join_at(url, resume)
            except _Redirected as redirect:
                redirects += 1
                if redirects > MAX_REDIRECTS:
                    raise TooManyRedirects(f"more than {MAX_REDIRECTS} redirects in a row (last to "
                                           f"{redirect.url})") from None
                log.info("join redirected from %s to %s", url, redirect.url)
                url = redirect.url
            except (OSError, TimeoutError, aiohttp.ClientError) as exc:
                if url == self.url or fell_back:
                    raise
                log.info("redirect target %s unreachable (%s): back to %s", url, exc, self.url)
                self._node_url = None
                url, fell_back = self.url, True
            except SfuError:
                self._node_url = None  # no joining there (no reply, refused): the next try starts at `url`
                raise

    async def _join_at(self, url: str, resume: str | None) -> Joined:
        """One socket, one `join`: the reply, or `_Redirected` for `closed {reason:"redirect", url}`."""
        self._generation += 1
        generation = self._generation
        joining = _Joining()

        def on_message(message: JsonObject) -> None:
            if generation != self._generation:
                return
            if not joining.done and message.get("type") == "closed":
                joining.closed = message  # before `joined`: about this socket only (a redirect, a refusal)
                return
            self._on_message(message)

        def on_closed(code: int | None) -> None:
            if generation == self._generation and joining.done:
                self._on_connection_closed(code)

        conn = await Connection.open(
            url,
            on_message,
            on_closed,
            origin=self._origin,
            request_timeout_s=self._request_timeout_s,
            ping_interval_s=self._ping_interval_s,
        )
        fields: JsonObject = {**self._credentials, "auto_subscribe": self.auto_subscribe, "sdk": SDK_INFO}
        if resume is not None:
            fields["resume"] = resume
        try:
            reply = await conn.request("join", **fields)
        except BaseException as exc:
            self._generation += 1  # this socket's close is not a session event
            await conn.close()
            target = _redirect_url(joining.closed)
            if isinstance(exc, ConnectionClosed) and target is not None:
                raise _Redirected(target) from None
            raise
        joined = Joined.from_wire(reply)
        joining.done = True
        self._conn = conn
        self._node_url = url if url != self.url else None
        self._apply_joined(joined)
        if self._subscriber is None:
            self._subscriber = self._new_subscriber()
        self._connected.set()
        if joining.closed is not None:
            self._on_message(joining.closed)
        if conn.closed:  # closed between the reply and now: the session handles it like any close
            self._on_connection_closed(conn.close_code)
        return joined

    @property
    def node_url(self) -> str:
        """Where the current (or last) socket joined: `url`, or the node a redirect sent us to."""
        return self._node_url or self.url

    def _apply_joined(self, joined: Joined) -> None:
        self.sid = joined.session.sid
        self.uid = joined.participant.uid
        self.me = joined.participant
        self.participants_by_uid = {p.uid: p for p in joined.participants if p.uid != self.uid}
        self.feeds_by_id = {f.feed_id: f for p in joined.participants for f in p.feeds}
        self.ice_servers = joined.ice_servers
        self._resume_token = joined.resume

    def _new_subscriber(self) -> SubscriberPeer:
        return SubscriberPeer(
            rtc_configuration(self.ice_servers),
            self._gather_hosts,
            self._send,
            self._on_data,
            lambda feed_id: RemoteFeed(self, feed_id, self.feeds_by_id.get(feed_id)),
            repair=self._repair,
        )

    def _on_data(self, event: DataReceived) -> None:
        self._hub.emit(event)

    async def publish_data(
        self,
        payload: bytes,
        *,
        reliable: bool = True,
        to: Sequence[str] | None = None,
        topic: str | None = None,
    ) -> None:
        """Sends binary data to `to` (default: everyone the policy allows) over the data channels.

        PROTOCOL.md "Binary data channels": `reliable` is ordered and retransmitted, otherwise unordered
        with no retransmission. There is no reply: what the server refuses (grants.data, policy.message)
        is dropped there. Raises TooLarge over 15 KiB; the first call opens the channels (a negotiation).
        """
        if self.closed:
            raise ConnectionClosed("session is closed")
        if self._publisher is None:
            self._publisher = PublisherPeer(
                rtc_configuration(self.ice_servers), self._gather_hosts, self._request
            )
        await self._data.publish(self._publisher, payload, reliable=reliable, to=to, topic=topic)

    async def _request(self, kind: str, **fields: Any) -> JsonObject:
        """One request; while reconnecting it waits (within the request timeout) for the new socket."""
        if self.closed:
            raise ConnectionClosed("session is closed")
        if not self._connected.is_set():
            try:
                async with asyncio.timeout(self._request_timeout_s):
                    await self._connected.wait()
            except TimeoutError:
                raise RequestTimeout(f"not connected: {kind} not sent") from None
        assert self._conn is not None
        return await self._conn.request(kind, **fields)

    async def _send(self, message: JsonObject) -> None:
        if self._conn is not None:
            await self._conn.send(message)

    def _is_reconnect_close(self, message: JsonObject) -> bool:
        """`closed` with `reconnect: true` (e.g. `server_shutdown`): this server goes away, the session
        is not over; the socket close that follows starts the reconnect loop (a refused resume falls back
        to a fresh join and a restore)."""
        if message.get("type") != "closed" or message.get("reconnect") is not True:
            return False
        reason = message.get("reason")
        self._reconnect_reason = reason if isinstance(reason, str) else "closed"
        log.info("server closed the socket with reconnect: %s", self._reconnect_reason)
        return True

    def _route_negotiation(self, message: JsonObject) -> None:
        """Offers and candidates go to the peer they are for, not to the event stream."""
        if message.get("type") == "candidate" and message.get("transport") == "publisher":
            if self._publisher is not None:
                self._spawn_candidate(self._publisher, message.get("candidate"))
        elif self._subscriber is not None:
            self._subscriber.enqueue(message)

    def _on_message(self, message: JsonObject) -> None:
        kind = message.get("type")
        if kind in ("offer", "candidate"):
            self._route_negotiation(message)
            return
        if self._is_reconnect_close(message):
            return
        try:
            event = parse_event(message)
        except SfuError as exc:
            log.warning("ignoring malformed %s: %s", kind, exc.message)
            return
        match event:
            case ParticipantJoined(participant) | ParticipantUpdated(participant):
                self.participants_by_uid[participant.uid] = participant
                self.feeds_by_id.update((f.feed_id, f) for f in participant.feeds)
            case ParticipantLeft(uid):
                self.participants_by_uid.pop(uid, None)
                for feed_id in [f for f, feed in self.feeds_by_id.items() if feed.uid == uid]:
                    self._feed_gone(feed_id)
            case FeedPublished(feed) | FeedUpdated(feed):
                self.feeds_by_id[feed.feed_id] = feed
            case FeedUnpublished(feed_id):
                self._feed_gone(feed_id)
            case Closed(reason):
                self._closed_reason = self._closed_reason or reason
                return  # emitted once, by the teardown that follows the socket close
        self._hub.emit(event)

    def _spawn_candidate(self, publisher: PublisherPeer, body: object) -> None:
        # NOTE: aiortc gathers before returning SDP and the server normally does too; trickle is rare.
        task = asyncio.ensure_future(publisher.add_candidate(body))
        task.add_done_callback(lambda t: t.cancelled() or t.exception())

    def _feed_gone(self, feed_id: str) -> None:
        self.feeds_by_id.pop(feed_id, None)
        self._subscribed.pop(feed_id, None)
        if self._subscriber is not None:
            remote = self._subscriber.forget(feed_id)
            if remote is not None:
                remote._ended()

    def _on_connection_closed(self, code: int | None) -> None:
        if self._closing:
            return
        self._connected.clear()
        if self._closed_reason is not None or code in TERMINAL_CLOSE_CODES or not self._reconnect:
            self._closing = True
            reason = self._closed_reason or self._reconnect_reason or f"socket closed ({code})"
            self._teardown_task = asyncio.create_task(self._teardown(reason, code))
        elif self._reconnect_task is None or self._reconnect_task.done():
            self._reconnect_task = asyncio.create_task(self._reconnect_loop(), name="client_sdk.reconnect")

    async def _reconnect_loop(self) -> None:
        """Rejoins with `resume` (backoff); a refused resume falls back to a fresh join and a restore."""
        old, self._conn = self._conn, None
        if old is not None:
            await old.close()
        deadline = time.monotonic() + self._reconnect_timeout_s
        attempt = 0
        resume = self._resume_token
        while True:
            attempt += 1
            self._hub.emit(Reconnecting(attempt))
            await asyncio.sleep(_backoff_s(attempt))
            try:
                joined = await self._open_and_join(resume=resume)
                break
            except (TimeoutError, OSError, aiohttp.ClientError, ConnectionClosed, RequestTimeout,
                    TooManyRedirects, Unavailable) as exc:  # Unavailable: at capacity, try again later
                log.info("reconnect attempt %d failed: %s", attempt, exc)
                failure: SfuError | None = None
            except SfuError as exc:
                failure = exc
            if failure is not None:
                if resume is None or isinstance(failure, Forbidden):
                    self._closing = True
                    self._teardown_task = asyncio.create_task(self._teardown(failure.message, None))
                    return
                resume = None  # the resume token was refused: join afresh
            if time.monotonic() > deadline:
                self._closing = True
                self._teardown_task = asyncio.create_task(self._teardown("reconnect_failed", None))
                return
        resumed = joined.resumed if joined.resumed is not None else resume is not None
        if not resumed:
            await self._restore()
        self._hub.emit(Reconnected(resumed))

    async def _restore(self) -> None:
        """After a fresh (not resumed) join: new transports, the same tracks, the same subscriptions."""
        remotes = dict(self._subscriber.remotes_by_feed) if self._subscriber else {}
        await self._close_peers()
        self._subscriber = self._new_subscriber()
        feeds = [f for f in self.local_feeds if f.active]
        for feed in feeds:
            feed.transceiver = None
        if feeds:
            self._publisher = PublisherPeer(
                rtc_configuration(self.ice_servers), self._gather_hosts, self._request
            )
            await self._publisher.negotiate(feeds)
        for feed_id, decode in list(self._subscribed.items()):
            if feed_id in self.feeds_by_id:
                remote = remotes.get(feed_id)
                with contextlib.suppress(SfuError):
                    await self._subscribe(feed_id, decode, remote)

    # -- requests -----------------------------------------------------------------------------------------


async def connect(
    url: str,
    *,
    token: str | None = None,
    key: str | None = None,
    session: str | None = None,
    uid: str | None = None,
    name: str | None = None,
    origin: str | None = None,
    auto_subscribe: bool = True,
    reconnect: bool = True,
    request_timeout_s: float = 10.0,
) -> Session:
    """Joins and returns the session: `async with await connect(url, token=...) as session:`."""
    joined = Session(
        url,
        token=token,
        key=key,
        session=session,
        uid=uid,
        name=name,
        origin=origin,
        auto_subscribe=auto_subscribe,
        reconnect=reconnect,
        request_timeout_s=request_timeout_s,
    )
    await joined.join()
    return joined
