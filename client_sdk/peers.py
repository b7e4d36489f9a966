"""The two peer connections of PROTOCOL.md "Two transports", each negotiated through one FIFO.

`PublisherPeer`: the client offers (`publish`), the server answers. `SubscriberPeer`: the server offers,
the client answers, strictly in the order the offers came. aiortc gathers every candidate before it
returns an SDP, so the SDK sends complete SDPs and only accepts trickled candidates from the server.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence

from aiortc import (
    RTCConfiguration,
    RTCDataChannel,
    RTCPeerConnection,
    RTCRtpTransceiver,
    RTCSessionDescription,
)
from aiortc.sdp import candidate_from_sdp

from client_sdk.errors import BadRequest
from client_sdk.events import DataReceived, decode_data_message
from client_sdk.feeds import LocalFeed, RawFeed, RemoteFeed
from client_sdk.ice import close_peer_connection, gather_on
from client_sdk.rawtap import MediaSection, RtpTap, media_sections
from client_sdk.wire import JsonObject

log = logging.getLogger("client_sdk.peers")

Request = Callable[..., Awaitable[JsonObject]]
Send = Callable[[JsonObject], Awaitable[None]]


async def add_candidate(pc: RTCPeerConnection, body: object) -> None:
    """Applies a trickled `candidate` object; a malformed one is logged and ignored."""
    if not isinstance(body, dict) or not isinstance(body.get("candidate"), str):
        return
    text: str = body["candidate"]
    if not text:
        return  # end of candidates
    try:
        candidate = candidate_from_sdp(text.removeprefix("candidate:"))
    except (ValueError, IndexError):
        log.warning("ignoring malformed candidate %r", text)
        return
    candidate.sdpMid = body.get("sdpMid")
    candidate.sdpMLineIndex = body.get("sdpMLineIndex")
    if candidate.sdpMid is None and candidate.sdpMLineIndex is None:
        candidate.sdpMLineIndex = 0
    await pc.addIceCandidate(candidate)


class PublisherPeer:
    """The client-offered transport: every `publish` call is one offer/answer with all active feeds."""

    def __init__(self, configuration: RTCConfiguration, hosts: Sequence[str], request: Request) -> None:
        self.pc = RTCPeerConnection(configuration)
        self._hosts = tuple(hosts)
        self._request = request
        self._lock = asyncio.Lock()
        self.feeds: list[LocalFeed] = []

    async def negotiate(self, added: Sequence[LocalFeed]) -> None:
        """Adds `added` (may be empty: a plain renegotiation) and runs one `publish` exchange."""
        async with self._lock:
            for feed in added:
                feed.transceiver = self.pc.addTransceiver(feed.new_sender_track(), direction="sendonly")
            offer = await self.pc.createOffer()
            with gather_on(self._hosts):
                await self.pc.setLocalDescription(offer)
            for feed in added:
                assert feed.transceiver is not None
                feed.mid = feed.transceiver.mid
            active = [f for f in self.feeds if f.active] + list(added)
            wire_feeds = [
                {"mid": f.mid, "source": f.source, **({"name": f.name} if f.name else {})} for f in active
            ]
            try:
                reply = await self._request("publish", sdp=self.pc.localDescription.sdp, feeds=wire_feeds)
            except BaseException:
                for feed in added:
                    feed.active = False
                    await self._stop(feed)
                raise
            await self.pc.setRemoteDescription(RTCSessionDescription(str(reply.get("sdp", "")), "answer"))
            self.feeds.extend(added)
            ids_by_mid = {
                str(item.get("mid")): str(item.get("feed_id"))
                for item in reply.get("feeds", [])
                if isinstance(item, dict)
            }
            for feed in active:
                if feed.mid in ids_by_mid:
                    feed.feed_id = ids_by_mid[feed.mid]
                elif feed in added:
                    raise BadRequest(f"published reply has no feed for mid {feed.mid}")

    async def stop_feed(self, feed: LocalFeed) -> None:
        """Stops sending a feed the server no longer has (the next offer leaves its mid out)."""
        feed.active = False
        await self._stop(feed)

    @staticmethod
    async def _stop(feed: LocalFeed) -> None:
        if feed.transceiver is not None:
            feed.transceiver.direction = "inactive"
            await feed.transceiver.sender.stop()

    async def add_candidate(self, body: object) -> None:
        async with self._lock:
            await add_candidate(self.pc, body)

    async def close(self) -> None:
        await close_peer_connection(self.pc)


class SubscriberPeer:
    """The server-offered transport: offers and candidates are applied by one task, in arrival order."""

    def __init__(
        self,
        configuration: RTCConfiguration,
        hosts: Sequence[str],
        send: Send,
        on_data: Callable[[DataReceived], None],
        make_remote: Callable[[str], RemoteFeed],
    ) -> None:
        """`make_remote` builds the handle of a feed the server subscribed us to (auto_subscribe)."""
        self.pc = RTCPeerConnection(configuration)
        self._hosts = tuple(hosts)
        self._send = send
        self._on_data = on_data
        self._make_remote = make_remote
        self._queue: asyncio.Queue[JsonObject] = asyncio.Queue()
        self._taps_by_transport: dict[int, RtpTap] = {}
        self._transceivers_by_feed: dict[str, tuple[RTCRtpTransceiver, MediaSection | None]] = {}
        self.remotes_by_feed: dict[str, RemoteFeed] = {}
        self._waiters_by_feed: dict[str, list[asyncio.Future[None]]] = {}
        self.pc.on("datachannel", self._on_datachannel)
        self._task = asyncio.create_task(self._run(), name="client_sdk.subscriber")

    def enqueue(self, message: JsonObject) -> None:
        self._queue.put_nowait(message)

    def expect(self, remote: RemoteFeed) -> None:
        """Registers a feed before `subscribe` is sent, so a raw feed is tapped before its first packet.

        A feed already negotiated (auto_subscribe) is bound at once: no new offer may come for it.
        """
        self.remotes_by_feed[remote.feed_id] = remote
        known = self._transceivers_by_feed.get(remote.feed_id)
        if known is not None:
            self._bind(remote, *known)

    def _bind(self, remote: RemoteFeed, transceiver: RTCRtpTransceiver, section: MediaSection | None) -> None:
        remote._track = transceiver.receiver.track
        if isinstance(remote, RawFeed):
            self._tap(transceiver, remote, section)

    async def wait_for(self, feed_id: str) -> None:
        """Returns once the feed has a track (an offer carrying it was applied)."""
        remote = self.remotes_by_feed.get(feed_id)
        if remote is not None and remote._track is not None:
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters_by_feed.setdefault(feed_id, []).append(future)
        await future

    def forget(self, feed_id: str) -> RemoteFeed | None:
        self._transceivers_by_feed.pop(feed_id, None)
        remote = self.remotes_by_feed.pop(feed_id, None)
        if isinstance(remote, RawFeed):
            for tap in self._taps_by_transport.values():
                tap.unbind(remote.sink)
        return remote

    async def _run(self) -> None:
        while True:
            message = await self._queue.get()
            try:
                if message.get("type") == "offer":
                    await self._apply_offer(message)
                else:
                    await add_candidate(self.pc, message.get("candidate"))
            except Exception:
                log.exception("subscriber negotiation failed")

    async def _apply_offer(self, message: JsonObject) -> None:
        sdp = str(message.get("sdp", ""))
        feeds = message.get("feeds")
        feed_by_mid: dict[str, str] = feeds if isinstance(feeds, dict) else {}
        await self.pc.setRemoteDescription(RTCSessionDescription(sdp, "offer"))
        sections = media_sections(sdp)
        for transceiver in self.pc.getTransceivers():
            feed_id = feed_by_mid.get(transceiver.mid or "")
            if feed_id is None:
                continue
            remote = self.remotes_by_feed.get(feed_id)
            if remote is None:
                remote = self.remotes_by_feed[feed_id] = self._make_remote(feed_id)
            known = self._transceivers_by_feed[feed_id] = (transceiver, sections.get(transceiver.mid or ""))
            self._bind(remote, *known)
        answer = await self.pc.createAnswer()
        with gather_on(self._hosts):
            await self.pc.setLocalDescription(answer)
        await self._send(
            {
                "type": "answer",
                "negotiation": message.get("negotiation", 0),
                "sdp": self.pc.localDescription.sdp,
            }
        )
        for feed_id in list(self._waiters_by_feed):
            remote = self.remotes_by_feed.get(feed_id)
            if remote is not None and remote._track is not None:
                for future in self._waiters_by_feed.pop(feed_id):
                    if not future.done():
                        future.set_result(None)

    def _tap(self, transceiver: RTCRtpTransceiver, remote: RawFeed, section: MediaSection | None) -> None:
        dtls = transceiver.receiver.transport
        tap = self._taps_by_transport.get(id(dtls))
        if tap is None:
            tap = self._taps_by_transport[id(dtls)] = RtpTap(dtls)
        if section is not None:
            remote.section = section
            tap.bind(section, remote.sink)
            receiver = transceiver.receiver
            ssrcs = section.ssrcs

            async def request_key_frame() -> None:
                for ssrc in ssrcs:
                    await receiver._send_rtcp_pli(ssrc)

            remote._request_key_frame = request_key_frame

    def _on_datachannel(self, channel: RTCDataChannel) -> None:
        reliable = channel.label != "lossy"

        def on_message(raw: str | bytes) -> None:
            if isinstance(raw, bytes):
                event = decode_data_message(raw, reliable)
                if event is not None:
                    self._on_data(event)

        channel.on("message", on_message)

    async def close(self) -> None:
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        for remote in self.remotes_by_feed.values():
            remote._ended()
        for waiters in self._waiters_by_feed.values():
            for future in waiters:
                if not future.done():
                    future.cancel()
        for tap in self._taps_by_transport.values():
            tap.detach()
        await close_peer_connection(self.pc)
