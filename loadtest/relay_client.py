"""Load-worker peers for `--target aiortc-relay`: plain aiortc peers and one HTTP POST each.

Publishers replay the same pre-encoded clips as against pysfu. Subscribers offer one recvonly m-section
per feed and count RTP through `client_sdk.rawtap` (no decoding on the client side either), so the
numbers differ from a pysfu run only in the server.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import aiohttp
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.rtp import RtpPacket

from client_sdk.encoded import EncodedAudioTrack, EncodedClip, EncodedVideoTrack
from client_sdk.ice import close_peer_connection, gather_on
from client_sdk.rawtap import MediaSection, RawSink, RtpTap, media_sections

LOOPBACK = "127.0.0.1"


class RelayFeed:
    """What `loadtest.worker.read_feed` reads of a `client_sdk.RawFeed`: `section` and `packets()`."""

    def __init__(self, section: MediaSection, sink: RawSink) -> None:
        self.section: MediaSection | None = section
        self._sink = sink

    def packets(self) -> AsyncIterator[RtpPacket]:
        return self._sink.packets()


class RelayPeers:
    """Every peer connection of one worker against the relay; `close()` ends them all."""

    def __init__(self, url: str) -> None:
        self.url = url.rstrip("/")
        self.pcs: list[RTCPeerConnection] = []
        self.sinks: list[RawSink] = []
        self._http: aiohttp.ClientSession | None = None

    async def _post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        if self._http is None:
            self._http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60))
        async with self._http.post(f"{self.url}{path}", json=body) as reply:
            if reply.status != 200:
                raise RuntimeError(f"relay {path}: HTTP {reply.status} {await reply.text()}")
            answer: dict[str, Any] = await reply.json()
            return answer

    async def _negotiate(self, pc: RTCPeerConnection, path: str, body: dict[str, Any]) -> dict[str, Any]:
        with gather_on([LOOPBACK]):
            await pc.setLocalDescription(await pc.createOffer())
        reply = await self._post(path, {**body, "sdp": pc.localDescription.sdp})
        await pc.setRemoteDescription(RTCSessionDescription(reply["sdp"], "answer"))
        return reply

    def _new_pc(self) -> RTCPeerConnection:
        pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        self.pcs.append(pc)
        return pc

    async def publish(self, name: str, clips: list[EncodedClip]) -> tuple[list[tuple[str, str]], Any]:
        """((feed_id, kind) per track, the DTLS transport its RTP leaves by)."""
        pc = self._new_pc()
        for clip in clips:
            pc.addTrack(EncodedAudioTrack(clip) if clip.kind == "audio" else EncodedVideoTrack(clip))
        reply = await self._negotiate(pc, "/publish", {"name": name})
        feeds = [(str(f[0]), str(f[1])) for f in reply["feeds"]]
        return feeds, pc.getTransceivers()[0].sender.transport

    async def subscribe(self, feed_ids: list[str], kinds: list[str]) -> list[RelayFeed]:
        """One peer connection receiving every feed; a counting reader per feed, in `feed_ids` order."""
        pc = self._new_pc()
        for kind in kinds:
            pc.addTransceiver(kind, direction="recvonly")
        reply = await self._negotiate(pc, "/subscribe", {"feeds": feed_ids})
        sections = media_sections(reply["sdp"])
        transceivers = pc.getTransceivers()
        tap = RtpTap(transceivers[0].receiver.transport)
        feeds: list[RelayFeed] = []
        for transceiver in transceivers:
            section = sections[str(transceiver.mid)]
            sink = RawSink()
            tap.bind(section, sink)
            self.sinks.append(sink)
            feeds.append(RelayFeed(section, sink))
        return feeds

    async def close(self) -> None:
        for sink in self.sinks:
            sink.close()
        for pc in reversed(self.pcs):
            await close_peer_connection(pc)
        if self._http is not None:
            await self._http.close()
