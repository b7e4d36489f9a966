"""Raw RTP for `subscribe(feed_id, decode=False)`: packets as sent, no jitter buffer, no decoder.

The main aiortc internal the SDK relies on (aiortc 1.16.0, checked by
tests/unit/client_sdk/test_rawtap_contract.py): `RTCDtlsTransport._recv_next` calls
`self._handle_rtp_data(data, arrival_time_ms=...)` with every SRTP-decrypted RTP datagram, and looks the
method up on the instance. `RtpTap` sets an instance attribute in its place: packets of raw feeds go to
their `RawSink` queue (and never reach aiortc's receiver, so nothing is decoded for them); everything else
goes on to aiortc's own handler unchanged.

This is the only SDK module that touches aiortc's private attributes; `VideoReceiveState` below is the
view of a video receiver's NACK list and jitter buffer that the loss repair (client_sdk/repair.py) uses.
"""

from __future__ import annotations

import asyncio
import contextlib
import struct
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass
from typing import Any

import aioice.stun
from aiortc.codecs import CODECS
from aiortc.rtcrtpparameters import RTCRtpCodecParameters
from aiortc.rtp import RtpPacket
from aiortc.sdp import SessionDescription

SINK_QUEUE_PACKETS = 4096
"""About 4 s of 3 Mbit/s video; when the reader is slower, the oldest packets are dropped and counted."""


NEGOTIATION_ONLY_VIDEO_CODECS: tuple[tuple[str, dict[str, str]], ...] = (
    ("video/VP9", {"profile-id": "0"}),
    ("video/VP9", {"profile-id": "2"}),
)
"""Codecs aiortc 1.16 cannot decode that the server may forward (a Chromium VP9 publisher)."""


def install_negotiation_codecs() -> None:
    """Appends VP9 profile 0 and 2 (+ RTX) to aiortc's codec table once per process, for negotiation only.

    Without them aiortc refuses the server's subscriber offer as soon as one m-section carries only VP9
    (`OperationError` in `setRemoteDescription`), and no feed of that offer is answered. aiortc's own
    receiver cannot decode VP9: the SDK taps those m-sections (`RtpTap`) and decodes them itself
    (client_sdk/vp9.py). NOTE: the third aiortc internal the SDK uses: the module-level
    `aiortc.codecs.CODECS`, read when an offer or answer is built (checked by
    tests/unit/client_sdk/test_rawtap_contract.py). Idempotent, and compatible with the server's own
    `install_forward_only_codecs` in the same process: whichever runs first registers VP9, the other
    sees it and does nothing. The entries go last, so VP8 stays preferred where both are offered.
    """
    video = CODECS["video"]
    if any(c.mimeType.lower() == "video/vp9" for c in video):
        return
    template = next(c for c in video if c.mimeType.lower() == "video/vp8")
    pt = max(c.payloadType or 0 for c in video) + 1
    for mime, parameters in NEGOTIATION_ONLY_VIDEO_CODECS:
        video.append(
            RTCRtpCodecParameters(
                mimeType=mime,
                clockRate=90000,
                payloadType=pt,
                rtcpFeedback=list(template.rtcpFeedback),
                parameters=dict(parameters),
            )
        )
        video.append(
            RTCRtpCodecParameters(
                mimeType="video/rtx", clockRate=90000, payloadType=pt + 1, parameters={"apt": pt}
            )
        )
        pt += 2


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


def route_announced_ssrcs(transceiver: Any, section: MediaSection) -> None:
    """Routes the SSRCs an offer announces for an m-section to its aiortc receiver, if it runs already.

    The server reuses an m-section that went inactive for another feed, with new SSRCs. aiortc registers
    a receiver's SSRCs only when it starts (`RTCDtlsTransport._register_rtp_receiver`), so it would route
    the new stream by payload type alone and drop it as soon as two m-sections share that payload type.
    NOTE: the second aiortc internal the SDK uses: `RtpRouter.register_receiver` on the DTLS transport's
    `_rtp_router` (checked by tests/unit/client_sdk/test_rawtap_contract.py).
    """
    receiver = transceiver.receiver
    router = getattr(receiver.transport, "_rtp_router", None)
    if router is not None and receiver in router.receivers and section.ssrcs:
        router.register_receiver(receiver, ssrcs=list(section.ssrcs), payload_types=[])


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


_original_parse_message: Callable[[bytes], Any] | None = None


def _parse_stun(data: bytes) -> Any:
    """aioice's `stun.parse_message` raising only ValueError, the one error its callers catch.

    NOTE: aioice 0.13 tries every datagram of an ICE socket as STUN and unpacks attributes without length
    checks: an SRTP packet whose sequence number happens to equal its length minus 20 passes the header
    check and then raises `struct.error`, which `StunProtocol.datagram_received` does not catch (the
    packet is lost with a traceback). RFC 7983: STUN starts with a byte 0-3, media never does.
    """
    assert _original_parse_message is not None
    if not data or data[0] > 3:
        raise ValueError("not a STUN message (RFC 7983)")
    try:
        return _original_parse_message(data)
    except (struct.error, UnicodeDecodeError, IndexError) as exc:
        raise ValueError(f"malformed STUN message: {exc}") from None


def install_stun_parse_guard() -> None:
    """Wraps `aioice.stun.parse_message` once per process (aioice looks it up per datagram).

    The fourth aiortc/aioice internal the SDK touches (checked by test_rawtap_contract.py).
    """
    global _original_parse_message
    current = aioice.stun.parse_message
    if _original_parse_message is None and not hasattr(current, "__wrapped__"):  # once, whoever comes first
        _original_parse_message = current
        setattr(_parse_stun, "__wrapped__", current)  # noqa: B010 (inspect.unwrap finds aioice's own)
        aioice.stun.parse_message = _parse_stun


class VideoReceiveState:
    """aiortc's NACK list and jitter buffer of one video `RTCRtpReceiver`, for client_sdk/repair.py.

    NOTE: the fifth aiortc internal the SDK uses (checked by tests/unit/client_sdk/test_rawtap_contract.py):
    the receiver's name-mangled `__nack_generator` (`NackGenerator`: `missing`, the set of sequence
    numbers it NACKed once, when they went missing) and `__jitter_buffer` (`JitterBuffer`: `_origin`, the
    next sequence number it waits for, and `_packets`, a ring indexed by sequence number), its `__codecs`
    by payload type, and its `_send_rtcp_nack` / `_send_rtcp_pli`. Build it with `video_receive_state`.
    """

    __slots__ = ("_codecs", "_jitter", "_nack", "_receiver")

    def __init__(self, receiver: Any, nack: Any, jitter: Any, codecs: dict[int, Any]) -> None:
        self._receiver = receiver
        self._nack = nack
        self._jitter = jitter
        self._codecs = codecs

    @property
    def missing(self) -> set[int]:
        """aiortc's own set of missing sequence numbers (live: `forget` removes from it)."""
        missing: set[int] = self._nack.missing
        return missing

    def forget(self, seqs: Iterable[int]) -> None:
        """Stops tracking these as missing: aiortc leaves them out of the NACKs it sends from now on."""
        self._nack.missing.difference_update(seqs)

    def buffered(self) -> tuple[int, list[RtpPacket | None]]:
        """(the sequence number the jitter buffer waits for, its slots from there up to the last packet
        it holds); `(-1, [])` before the first packet. A `None` before the end is a hole."""
        jitter = self._jitter
        origin = jitter._origin
        if origin is None:
            return -1, []
        ring: list[RtpPacket | None] = jitter._packets
        capacity = len(ring)
        start = origin % capacity
        slots = ring[start:] + ring[:start]
        end = len(slots)
        while end and slots[end - 1] is None:
            end -= 1
        return origin, slots[:end]

    def skip_to(self, seq: int) -> None:
        """Drops what the jitter buffer holds before `seq`: it assembles its next frame from `seq` on."""
        jitter = self._jitter
        if jitter._origin is None:
            return
        behind = (seq - jitter._origin) & 0xFFFF
        if 0 < behind < len(jitter._packets):
            jitter.remove(behind)

    def mime_type(self, payload_type: int) -> str:
        """The negotiated codec of a payload type (`video/VP8`...), lower case; "" if unknown."""
        codec = self._codecs.get(payload_type)
        return str(codec.mimeType).lower() if codec is not None else ""

    async def send_nack(self, media_ssrc: int, seqs: list[int]) -> None:
        await self._receiver._send_rtcp_nack(media_ssrc, seqs)

    async def send_pli(self, media_ssrc: int) -> None:
        await self._receiver._send_rtcp_pli(media_ssrc)


def video_receive_state(receiver: Any) -> VideoReceiveState | None:
    """The repair's view of an aiortc video receiver; None for audio or an aiortc without these
    internals (then the SDK runs without repair; the contract test fails loudly on such an upgrade)."""
    nack = getattr(receiver, "_RTCRtpReceiver__nack_generator", None)
    jitter = getattr(receiver, "_RTCRtpReceiver__jitter_buffer", None)
    codecs = getattr(receiver, "_RTCRtpReceiver__codecs", None)
    if (
        nack is None
        or not isinstance(getattr(nack, "missing", None), set)
        or not hasattr(jitter, "_origin")
        or not isinstance(getattr(jitter, "_packets", None), list)
        or not callable(getattr(jitter, "remove", None))
        or not isinstance(codecs, dict)
        or not callable(getattr(receiver, "_send_rtcp_nack", None))
        or not callable(getattr(receiver, "_send_rtcp_pli", None))
    ):
        return None
    return VideoReceiveState(receiver, nack, jitter, codecs)
