"""Decoded VP9 subscriptions: aiortc 1.16 negotiates VP9 (rawtap.install_negotiation_codecs) but has no
VP9 decoder, so the SDK reads such a feed from its raw RTP (`RtpTap`), rebuilds the frames and decodes
them with PyAV (FFmpeg's `vp9` decoder, libvpx as a fallback). `Vp9Track.recv()` returns `av.VideoFrame`s
like aiortc's own remote tracks (pts on the 90 kHz RTP clock, `time_base` 1/90000).

Scope: one spatial layer (what the server forwards: VP9 without SVC), flexible or non-flexible mode.
There is no jitter buffer: a lost or reordered packet drops the frame in progress, and nothing is
decoded again until a key frame, which is asked for with a PLI (at most one per `PLI_INTERVAL_S`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from fractions import Fraction
from typing import Any, Final

import av
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from aiortc.rtp import RtpPacket

from client_sdk.rawtap import RawSink

log = logging.getLogger("client_sdk.vp9")

MIME_TYPE: Final = "video/vp9"
CLOCK_RATE: Final = 90000
TIME_BASE: Final = Fraction(1, CLOCK_RATE)
PLI_INTERVAL_S: Final = 0.5
FRAME_QUEUE: Final = 30
"""Decoded frames kept for a slow reader (1 s at 30 fps); the oldest are dropped and counted."""
DECODERS: Final = ("vp9", "libvpx-vp9")


@dataclass(frozen=True, slots=True)
class Descriptor:
    """What the SDK needs from an RFC 9628 section 4.2 payload descriptor; `offset` is where data starts."""

    begins: bool  # B: first packet of a frame
    ends: bool  # E: last packet of a frame
    inter: bool  # P: predicted from an earlier picture
    spatial_id: int
    offset: int


def parse_descriptor(payload: bytes) -> Descriptor | None:
    """The descriptor of one VP9 RTP payload (I P L F B E V Z + optional fields), or None if truncated."""
    size = len(payload)
    if size < 1:
        return None
    flags = payload[0]
    i = 1
    if flags & 0x80:  # I: picture id, 7 or 15 bits (M)
        if i >= size:
            return None
        i += 2 if payload[i] & 0x80 else 1
    spatial_id = 0
    if flags & 0x20:  # L: TID U SID D, then TL0PICIDX in non-flexible mode (F=0)
        if i >= size:
            return None
        spatial_id = (payload[i] >> 1) & 0x07
        i += 1 if flags & 0x10 else 2
    if flags & 0x10 and flags & 0x40:  # F and P: up to 3 P_DIFF bytes, chained by their N bit
        for _ in range(3):
            if i >= size:
                return None
            more = payload[i] & 0x01
            i += 1
            if not more:
                break
    if flags & 0x02:  # V: scalability structure (4.2.1)
        i = _skip_scalability_structure(payload, i)
    if i > size:
        return None
    return Descriptor(bool(flags & 0x08), bool(flags & 0x04), bool(flags & 0x40), spatial_id, i)


def _skip_scalability_structure(payload: bytes, i: int) -> int:
    """The offset after the SS data that starts at `i`; past the end of `payload` if it is truncated."""
    size = len(payload)
    if i >= size:
        return size + 1
    ss = payload[i]
    i += 1
    if ss & 0x10:  # Y: a width and height per spatial layer
        i += 4 * ((ss >> 5) + 1)
    if ss & 0x08:  # G: picture group description
        if i >= size:
            return size + 1
        groups = payload[i]
        i += 1
        for _ in range(groups):
            if i >= size:
                return size + 1
            i += 1 + ((payload[i] >> 2) & 0x03)  # T U R, then R P_DIFF bytes
    return i


@dataclass(frozen=True, slots=True)
class Vp9Frame:
    data: bytes
    timestamp: int  # RTP timestamp
    key: bool


class FrameAssembler:
    """RTP packets of one SSRC in arrival order -> complete frames, starting at a key frame.

    `push` returns the frames a packet completes and sets `wants_key_frame` when the stream needs a key
    frame to go on (at the start, after a loss, after a malformed packet).
    """

    def __init__(self) -> None:
        self._parts: list[bytes] = []
        self._timestamp = 0
        self._key = False
        self._in_frame = False
        self._next_seq: int | None = None
        self.waiting_for_key = True
        self.wants_key_frame = True
        self.lost = 0  # gaps in the sequence numbers (each may be several packets)
        self.malformed = 0
        self.skipped = 0  # complete frames dropped while waiting for a key frame

    def push(self, packet: RtpPacket) -> Vp9Frame | None:
        seq = packet.sequence_number
        if self._next_seq is not None and seq != self._next_seq:
            self.lost += 1
            self._lose()
        self._next_seq = (seq + 1) & 0xFFFF
        payload = packet.payload
        if not payload:
            return None  # padding
        descriptor = parse_descriptor(payload)
        if descriptor is None:
            self.malformed += 1
            self._lose()
            return None
        if descriptor.begins:
            self._parts = [payload[descriptor.offset :]]
            self._timestamp = packet.timestamp
            self._key = not descriptor.inter and descriptor.spatial_id == 0
            self._in_frame = True
        elif self._in_frame and packet.timestamp == self._timestamp:
            self._parts.append(payload[descriptor.offset :])
        else:
            self._in_frame = False
        if not (descriptor.ends and self._in_frame):
            return None
        self._in_frame = False
        frame = Vp9Frame(b"".join(self._parts), self._timestamp, self._key)
        self._parts = []
        if self.waiting_for_key:
            if not frame.key:
                self.skipped += 1
                return None
            self.waiting_for_key = False
        return frame

    def _lose(self) -> None:
        self._in_frame = False
        self._parts = []
        self.waiting_for_key = True
        self.wants_key_frame = True


def create_decoder() -> Any:
    """A PyAV VP9 decoder; raises `av.codec.codec.UnknownCodecError` (a ValueError) when FFmpeg has none."""
    for name in DECODERS[:-1]:
        try:
            return av.CodecContext.create(name, "r")
        except ValueError:
            continue
    return av.CodecContext.create(DECODERS[-1], "r")


class Vp9Track(MediaStreamTrack):
    """A remote VP9 feed as decoded `av.VideoFrame`s: reads a `RawSink`, ends when the sink closes."""

    kind = "video"

    def __init__(self, sink: RawSink, request_key_frame: Callable[[], Awaitable[None]] | None = None) -> None:
        super().__init__()
        self.sink = sink
        self.request_key_frame = request_key_frame
        self.assembler = FrameAssembler()
        self.decoded = 0
        self.decode_errors = 0
        self.dropped_frames = 0
        self.key_frame_requests = 0
        self._decoder = create_decoder()
        self._frames: asyncio.Queue[av.VideoFrame | None] = asyncio.Queue(FRAME_QUEUE)
        self._first_timestamp: int | None = None
        self._last_pli = -PLI_INTERVAL_S
        self._task = asyncio.create_task(self._run(), name="client_sdk.vp9")

    async def recv(self) -> av.VideoFrame:
        if self.readyState != "live":
            raise MediaStreamError
        frame = await self._frames.get()
        if frame is None:
            self._frames.put_nowait(None)  # later calls end too
            self.stop()
            raise MediaStreamError
        return frame

    async def _run(self) -> None:
        assembler = self.assembler
        try:
            async for packet in self.sink.packets():
                frame = assembler.push(packet)
                if assembler.wants_key_frame:
                    await self._ask_key_frame()
                if frame is not None:
                    await self._decode(frame)
        finally:
            self._put(None)

    async def _ask_key_frame(self) -> None:
        now = time.monotonic()
        if now - self._last_pli < PLI_INTERVAL_S or self.request_key_frame is None:
            return
        self._last_pli = now
        self.assembler.wants_key_frame = False
        self.key_frame_requests += 1
        try:
            await self.request_key_frame()
        except Exception as exc:  # the transport may be closing: the next loss asks again
            log.debug("key frame request failed: %s", exc)

    async def _decode(self, frame: Vp9Frame) -> None:
        if self._first_timestamp is None:
            self._first_timestamp = frame.timestamp
        packet = av.Packet(frame.data)
        packet.pts = (frame.timestamp - self._first_timestamp) & 0xFFFFFFFF
        packet.time_base = TIME_BASE
        try:
            decoded = await asyncio.to_thread(self._decoder.decode, packet)
        except av.FFmpegError as exc:
            self.decode_errors += 1
            log.warning("VP9 frame failed to decode: %s", exc)
            self.assembler.waiting_for_key = self.assembler.wants_key_frame = True
            return
        for out in decoded:
            out.pts = packet.pts
            out.time_base = TIME_BASE
            self.decoded += 1
            self._put(out)

    def _put(self, frame: av.VideoFrame | None) -> None:
        if self._frames.full():
            self._frames.get_nowait()
            self.dropped_frames += 1
        self._frames.put_nowait(frame)

    @property
    def ended(self) -> bool:
        """Its decoding task is over (the sink closed)."""
        return self._task.done()

    async def close(self) -> None:
        """Ends the track: closes the sink and waits for the decoding task."""
        self.sink.close()
        await asyncio.gather(self._task, return_exceptions=True)
        self.stop()
