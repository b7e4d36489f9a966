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
from typing import Any

from aiortc import (
    RTCConfiguration,
    RTCDataChannel,
    RTCPeerConnection,
    RTCRtpSender,
    RTCRtpTransceiver,
    RTCSessionDescription,
)
from aiortc.sdp import candidate_from_sdp

from client_sdk.errors import BadRequest, SfuError, UnsupportedCodec
from client_sdk.events import DataReceived, decode_data_message
from client_sdk.feeds import LocalFeed, RawFeed, RemoteFeed
from client_sdk.ice import close_peer_connection, gather_on
from client_sdk.rawtap import (
    MediaSection,
    RawSink,
    RtpTap,
    install_negotiation_codecs,
    install_stun_parse_guard,
    media_sections,
    route_announced_ssrcs,
)
from client_sdk.repair import Repairs, RepairStats
from client_sdk.vp9 import MIME_TYPE as VP9_MIME_TYPE
from client_sdk.vp9 import Vp9Track
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


def encodable_video_codecs() -> list[Any]:
    """aiortc's video codecs minus the negotiation-only ones (VP9): never offer what aiortc cannot encode."""
    codecs = RTCRtpSender.getCapabilities("video").codecs
    return [c for c in codecs if c.mimeType.lower() != VP9_MIME_TYPE]


class PublisherPeer:
    """The client-offered transport: every `publish` call is one offer/answer with all active feeds."""

    def __init__(self, configuration: RTCConfiguration, hosts: Sequence[str], request: Request) -> None:
        install_stun_parse_guard()
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
                if feed.kind == "video":
                    feed.transceiver.setCodecPreferences(encodable_video_codecs())
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
        repair: bool = True,
    ) -> None:
        """`make_remote` builds the handle of a feed the server subscribed us to (auto_subscribe);
        `repair`: run client_sdk/repair.py beside each decoded video feed's aiortc receiver."""
        install_negotiation_codecs()  # before the first offer: a VP9 m-section must not fail it
        install_stun_parse_guard()
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
        self._vp9_by_feed: dict[str, Vp9Track] = {}  # decoded VP9 feeds (aiortc cannot decode VP9)
        self._closing_vp9: list[Vp9Track] = []
        self._failed_by_feed: dict[str, SfuError] = {}  # feeds this SDK cannot decode (UnsupportedCodec)
        self._repairs = Repairs() if repair else None
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
        if isinstance(remote, RawFeed):
            self._stop_repair(transceiver)
            remote._track = transceiver.receiver.track
            self._tap(transceiver, remote, section)
        elif section is not None and _first_codec(section) == VP9_MIME_TYPE:
            self._stop_repair(transceiver)
            self._bind_vp9(remote, transceiver, section)
        else:
            remote._track = transceiver.receiver.track
            if self._repairs is not None and transceiver.kind == "video":
                self._repairs.start(transceiver.receiver, section.ssrcs if section is not None else ())

    def _stop_repair(self, transceiver: RTCRtpTransceiver) -> None:
        if self._repairs is not None:
            self._repairs.stop(transceiver.receiver)

    def repair_stats(self) -> RepairStats | None:
        """What the loss repair of decoded video feeds did (None when it is off)."""
        return self._repairs.stats() if self._repairs is not None else None

    def _bind_vp9(self, remote: RemoteFeed, transceiver: RTCRtpTransceiver, section: MediaSection) -> None:
        """A decoded VP9 feed: its RTP goes to a `Vp9Track` (client_sdk/vp9.py), not to aiortc's receiver."""
        track = self._vp9_by_feed.get(remote.feed_id)
        if track is not None and remote._track is track and track.readyState == "live":
            self._tap_sink(transceiver, section, track.sink)  # an offer may announce new SSRCs
            return
        if remote.feed_id in self._failed_by_feed:
            return
        sink = RawSink()
        try:
            track = Vp9Track(sink, self._tap_sink(transceiver, section, sink))
        except ValueError as exc:  # PyAV without a VP9 decoder: only this feed fails
            sink.close()  # stays bound: its packets are dropped, never handed to aiortc's receiver
            log.error("cannot decode VP9 feed %s: %s", remote.feed_id, exc)
            self._failed_by_feed[remote.feed_id] = UnsupportedCodec(
                f"feed {remote.feed_id} is VP9 and no VP9 decoder is available ({exc}); "
                "subscribe with decode=False for its RTP packets",
                "video/VP9",
            )
            remote._track = None
            return
        self._stop_vp9(remote.feed_id)
        self._vp9_by_feed[remote.feed_id] = track
        remote._track = track

    async def wait_for(self, feed_id: str) -> None:
        """Returns once the feed has a track (an offer carrying it was applied); raises UnsupportedCodec
        for a decoded feed this SDK cannot decode."""
        failure = self._failed_by_feed.get(feed_id)
        if failure is not None:
            raise failure
        remote = self.remotes_by_feed.get(feed_id)
        if remote is not None and remote._track is not None:
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters_by_feed.setdefault(feed_id, []).append(future)
        await future

    def forget(self, feed_id: str) -> RemoteFeed | None:
        known = self._transceivers_by_feed.pop(feed_id, None)
        if known is not None:
            self._stop_repair(known[0])
        self._failed_by_feed.pop(feed_id, None)
        self._stop_vp9(feed_id)
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
        for old_id, (reused, _) in list(self._transceivers_by_feed.items()):
            owner = feed_by_mid.get(reused.mid or "")
            if owner is not None and owner != old_id:  # its m-section now carries another feed
                del self._transceivers_by_feed[old_id]
                stopped = self._stop_vp9(old_id)
                previous = self.remotes_by_feed.get(old_id)
                if previous is not None and previous._track in (reused.receiver.track, stopped):
                    previous._track = None
        for transceiver in self.pc.getTransceivers():
            section = sections.get(transceiver.mid or "")
            if section is not None:
                route_announced_ssrcs(transceiver, section)  # a reused mid carries a new feed's SSRCs
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
        self._wake_waiters()

    def _wake_waiters(self) -> None:
        """Ends `wait_for` of feeds that now have a track, or failed (UnsupportedCodec)."""
        for feed_id in list(self._waiters_by_feed):
            remote = self.remotes_by_feed.get(feed_id)
            failure = self._failed_by_feed.get(feed_id)
            if failure is not None or (remote is not None and remote._track is not None):
                for future in self._waiters_by_feed.pop(feed_id):
                    if future.done():
                        continue
                    if failure is not None:
                        future.set_exception(failure)
                    else:
                        future.set_result(None)

    def _tap(self, transceiver: RTCRtpTransceiver, remote: RawFeed, section: MediaSection | None) -> None:
        if section is None:
            self._tap_for(transceiver)
            return
        remote.section = section
        remote._request_key_frame = self._tap_sink(transceiver, section, remote.sink)

    def _tap_for(self, transceiver: RTCRtpTransceiver) -> RtpTap:
        dtls = transceiver.receiver.transport
        tap = self._taps_by_transport.get(id(dtls))
        if tap is None:
            tap = self._taps_by_transport[id(dtls)] = RtpTap(dtls)
        return tap

    def _tap_sink(
        self, transceiver: RTCRtpTransceiver, section: MediaSection, sink: RawSink
    ) -> Callable[[], Awaitable[None]]:
        """Sends the m-section's RTP to `sink`; returns what sends a PLI for it."""
        self._tap_for(transceiver).bind(section, sink)
        receiver = transceiver.receiver
        ssrcs = section.ssrcs

        async def request_key_frame() -> None:
            for ssrc in ssrcs:
                await receiver._send_rtcp_pli(ssrc)

        return request_key_frame

    def _stop_vp9(self, feed_id: str) -> Vp9Track | None:
        track = self._vp9_by_feed.pop(feed_id, None)
        if track is not None:
            for tap in self._taps_by_transport.values():
                tap.unbind(track.sink)
            track.sink.close()  # its task ends on its own; close() waits for what is left
            self._closing_vp9 = [t for t in self._closing_vp9 if not t.ended] + [track]
        return track

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
        for feed_id in list(self._vp9_by_feed):
            self._stop_vp9(feed_id)
        closing, self._closing_vp9 = self._closing_vp9, []
        for track in closing:
            await track.close()
        if self._repairs is not None:
            await self._repairs.close()
        for tap in self._taps_by_transport.values():
            tap.detach()
        await close_peer_connection(self.pc)


def _first_codec(section: MediaSection) -> str | None:
    """The codec the server sends on an m-section: its offer lists one (+ RTX)."""
    return next(iter(section.codecs_by_pt.values()), "").lower() or None
