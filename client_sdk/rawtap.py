"""Raw RTP for `subscribe(feed_id, decode=False)`: packets as sent, no jitter buffer, no decoder.

The ONE aiortc internal the SDK relies on (aiortc 1.16.0, checked by
tests/unit/client_sdk/test_rawtap_contract.py): `RTCDtlsTransport._recv_next` calls
`self._handle_rtp_data(data, arrival_time_ms=...)` with every SRTP-decrypted RTP datagram, and looks the
method up on the instance. `RtpTap` sets an instance attribute in its place: packets of raw feeds go to
their `RawSink` queue (and never reach aiortc's receiver, so nothing is decoded for them); everything else
goes on to aiortc's own handler unchanged.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from aiortc.rtp import RtpPacket
from aiortc.sdp import SessionDescription

SINK_QUEUE_PACKETS = 4096
"""About 4 s of 3 Mbit/s video; when the reader is slower, the oldest packets are dropped and counted."""


class RawSink:
    """The packets of one raw feed, in arrival order; `packets()` ends when the feed is unsubscribed."""

    def __init__(self) -> None:
        self._queue: asyncio.Queue[RtpPacket | None] = asyncio.Queue(SINK_QUEUE_PACKETS)
        self.dropped = 0
        self.received = 0
        self.closed = False

    def push(self, packet: RtpPacket) -> None:
        if self.closed:
            return
        self.received += 1
        if self._queue.full():
            self._queue.get_nowait()
            self.dropped += 1
        self._queue.put_nowait(packet)

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        if self._queue.full():
            self._queue.get_nowait()
            self.dropped += 1
        self._queue.put_nowait(None)

    async def packets(self) -> AsyncIterator[RtpPacket]:
        while True:
            packet = await self._queue.get()
            if packet is None:
                self._queue.put_nowait(None)  # later iterators end too
                return
            yield packet


@dataclass(frozen=True, slots=True)
class MediaSection:
    """What a raw reader needs from one m-section of the subscriber offer."""

    mid: str
    kind: str
    ssrcs: tuple[int, ...]
    codecs_by_pt: dict[int, str]
    clock_rate_by_pt: dict[int, int]


def media_sections(sdp: str) -> dict[str, MediaSection]:
    """Media sections by mid; `ssrcs` holds the primary SSRCs (the first of each FID group, not RTX)."""
    found: dict[str, MediaSection] = {}
    for media in SessionDescription.parse(sdp).media:
        mid = media.rtp.muxId
        if not mid or media.kind not in ("audio", "video"):
            continue
        rtx = {int(g.items[1]) for g in media.ssrc_group if g.semantic == "FID" and len(g.items) > 1}
        ssrcs = tuple(dict.fromkeys(s.ssrc for s in media.ssrc if s.ssrc not in rtx))
        codecs = {c.payloadType: c.mimeType for c in media.rtp.codecs if c.payloadType is not None}
        rates = {c.payloadType: c.clockRate for c in media.rtp.codecs if c.payloadType is not None}
        found[mid] = MediaSection(mid, media.kind, ssrcs, codecs, rates)
    return found


class RtpTap:
    """Diverts the decrypted RTP of raw feeds on one DTLS transport (see the module docstring)."""

    def __init__(self, dtls: Any) -> None:
        self._dtls = dtls
        self._original = dtls._handle_rtp_data
        self._sinks_by_ssrc: dict[int, RawSink] = {}
        self._sinks_by_mid: dict[str, RawSink] = {}
        dtls._handle_rtp_data = self._handle_rtp_data

    def bind(self, section: MediaSection, sink: RawSink) -> None:
        self._sinks_by_mid[section.mid] = sink
        for ssrc in section.ssrcs:
            self._sinks_by_ssrc[ssrc] = sink

    def unbind(self, sink: RawSink) -> None:
        self._sinks_by_mid = {m: s for m, s in self._sinks_by_mid.items() if s is not sink}
        self._sinks_by_ssrc = {k: s for k, s in self._sinks_by_ssrc.items() if s is not sink}

    def detach(self) -> None:
        with contextlib.suppress(AttributeError):
            del self._dtls._handle_rtp_data

    async def _handle_rtp_data(self, data: bytes, arrival_time_ms: int) -> None:
        if not self._sinks_by_mid:
            await self._original(data, arrival_time_ms=arrival_time_ms)
            return
        ssrc = int.from_bytes(data[8:12], "big") if len(data) >= 12 else -1
        sink = self._sinks_by_ssrc.get(ssrc)
        if sink is None:
            try:
                packet = RtpPacket.parse(data, self._dtls._rtp_header_extensions_map)
            except ValueError:
                return
            # NOTE: no a=ssrc line for this stream: learn SSRC -> feed from the MID header extension.
            sink = self._sinks_by_mid.get(packet.extensions.mid or "")
            if sink is None:
                await self._original(data, arrival_time_ms=arrival_time_ms)
                return
            self._sinks_by_ssrc[ssrc] = sink
            sink.push(packet)
            return
        try:
            sink.push(RtpPacket.parse(data, self._dtls._rtp_header_extensions_map))
        except ValueError:
            return
