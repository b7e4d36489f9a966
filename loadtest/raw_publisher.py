"""Publishers that send pre-packetized RTP themselves: the load tool's cheapest send path.

A publisher through aiortc's `RTCRtpSender` cost the load tool ~250 us of CPU per packet even for
pre-encoded media, about as much per session as the server spends forwarding it to 20 subscribers, so
on one machine the clients, not the server, ran out of CPU first (docs/benchmarks.md, "Workers"). Most
of it is wakeups: each track paces itself frame by frame, and on this VM a timer wakeup plus a send that
wakes the server costs ~150 us of CPU (a send in a burst: ~5 us); the rest is aiortc's per-packet
objects (`av.Packet`, `RtpPacket`, coroutine hops down to the socket).

With `--publisher-path raw` (the default) the SDK still joins, offers and completes ICE and DTLS as any
publisher; its aiortc sender gets a track that never yields a frame (`held_track`), so it only sends its
RTCP. The clip is split into RTP payloads once (`packetize`: RFC 7741 VP8 payload descriptors with a
15-bit picture id, one Opus frame per packet), and one `RawPacer` per load worker process sends every
stream's due frames from a 20 ms tick: an RTP header with the negotiated SSRC, payload type and mid,
the load tool's send stamp (`loadtest.taps`), SRTP-protected by the transport's own session and written
to its nominated ICE pair (`taps.raw_send_path`). What the server receives is what aiortc would send,
minus abs-send-time; frames leave at most one tick late. PLIs and NACKs from the server reach aiortc's
sender, which answers neither: a pre-encoded clip has its key frames where it has them (every
`keyframe_s`), as with the aiortc path, and aiortc keeps no history of packets it did not send, so a
packet lost between publisher and server (a server too busy to read its socket) is not repaired and
counts as loss for every subscriber.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

from client_sdk.encoded import EncodedAudioTrack, EncodedClip, EncodedVideoTrack
from loadtest.taps import RawSendPath

TICK_S: Final = 0.02
MAX_LAG_S: Final = 0.5  # further behind than this (a stalled loop), pacing restarts instead of bursting
VP8_MAX_CHUNK: Final = 1180  # + 4 bytes of payload descriptor + RTP header/extensions < 1280
CLOCK_RATES: Final = {"vp8": 90000, "opus": 48000}
_RTP_HEAD: Final = struct.Struct("!BBHII")
_U64: Final = struct.Struct("!Q")
_U16: Final = struct.Struct("!H")
_VP8_START: Final = b"\x90\x80"  # X, S (a frame's first packet), PID 0; I: a picture id follows
_VP8_MORE: Final = b"\x80\x80"
_monotonic_ns = time.monotonic_ns


@dataclass(frozen=True, slots=True)
class PacketizedFrame:
    due_s: float  # from the start of one pass of the clip
    rtp_offset: int  # RTP timestamp from the start of one pass
    chunks: tuple[bytes, ...]  # payloads; VP8 still without its descriptor (the picture id changes)


@dataclass(frozen=True, slots=True)
class PacketizedClip:
    codec: str
    frames: tuple[PacketizedFrame, ...]
    duration_s: float
    duration_rtp: int


def packetize(clip: EncodedClip) -> PacketizedClip:
    """Splits every frame of `clip` into RTP payloads (VP8) or keeps it whole (Opus)."""
    if clip.codec not in CLOCK_RATES:
        raise ValueError(f"the raw publisher sends VP8 and Opus, not {clip.codec}")
    clock = CLOCK_RATES[clip.codec]
    frames = []
    for frame in clip.frames:
        data = frame.data
        if clip.codec == "vp8":
            chunks = tuple(data[i : i + VP8_MAX_CHUNK] for i in range(0, len(data), VP8_MAX_CHUNK)) or (b"",)
        else:
            chunks = (data,)
        seconds = frame.pts * clip.time_base
        frames.append(PacketizedFrame(float(seconds), round(seconds * clock), chunks))
    return PacketizedClip(clip.codec, tuple(frames), clip.duration_s, round(clip.duration_s * clock))


def held_track(clip: EncodedClip) -> EncodedAudioTrack | EncodedVideoTrack:
    """A track of `clip`'s kind and codec for the SDK to negotiate with, that never yields a frame."""
    track = EncodedAudioTrack(clip) if clip.kind == "audio" else EncodedVideoTrack(clip)

    async def recv() -> Any:
        await asyncio.Event().wait()  # until aiortc's sender task is cancelled at close

    track.recv = recv  # type: ignore[method-assign]
    return track


OnSent = Callable[[bytes, int], None]


class RawStream:
    """One feed of one publisher: its clip on a loop, with continuous sequence numbers, timestamps and
    (VP8) picture ids."""

    def __init__(self, path: RawSendPath, clip: PacketizedClip, start_s: float, on_sent: OnSent) -> None:
        self.path = path
        self.clip = clip
        self.on_sent = on_sent
        self.seq = random.getrandbits(16)
        self.ts_origin = random.getrandbits(32)
        self.picture_id = random.getrandbits(15)
        self.start_s = start_s
        self.index = 0
        self.passes = 0
        self.vp8 = clip.codec == "vp8"
        elements = b""
        if path.mid_ext_id and path.mid:
            mid = path.mid.encode()[:16]
            elements += bytes(((path.mid_ext_id << 4) | (len(mid) - 1),)) + mid
        self.stamped = bool(path.stamp_ext_id)
        if self.stamped:
            elements += bytes(((path.stamp_ext_id << 4) | 7,))  # + 8 bytes of send time per packet
        size = len(elements) + (8 if self.stamped else 0)
        self.padding = b"\x00" * (-size % 4)
        self.ext_head = struct.pack("!HH", 0xBEDE, (size + len(self.padding)) // 4) + elements
        self.b0 = 0x90 if size else 0x80

    def send_due(self, now_s: float) -> None:
        """Sends every frame whose time has come; ConnectionError once the transport is closed."""
        if self.path.is_closing():
            raise ConnectionError("the publisher's ICE transport is closed")
        frames = self.clip.frames
        while True:
            if self.index >= len(frames):
                self.index = 0
                self.passes += 1
            frame = frames[self.index]
            due_s = self.start_s + self.passes * self.clip.duration_s + frame.due_s
            if due_s > now_s:
                return
            if now_s - due_s > MAX_LAG_S:  # a stalled loop: resume from now, do not burst
                self.start_s += now_s - due_s
            self.index += 1
            self._send(frame)

    def _send(self, frame: PacketizedFrame) -> None:
        path = self.path
        protect, sendto, addr, on_sent = path.protect, path.sendto, path.remote_addr, self.on_sent
        ts = (self.ts_origin + self.passes * self.clip.duration_rtp + frame.rtp_offset) & 0xFFFFFFFF
        pt, ssrc, b0, ext_head, padding = path.payload_type, path.ssrc, self.b0, self.ext_head, self.padding
        last = len(frame.chunks) - 1
        pid, seq, stamped, vp8 = self.picture_id, self.seq, self.stamped, self.vp8
        picture_id = _U16.pack(0x8000 | pid)
        for i, chunk in enumerate(frame.chunks):
            now_ns = _monotonic_ns()
            head = _RTP_HEAD.pack(b0, (0x80 if i == last else 0) | pt, seq, ts, ssrc)
            stamp = _U64.pack(now_ns) if stamped else b""
            if vp8:
                descriptor = (_VP8_START if i == 0 else _VP8_MORE) + picture_id
                data = b"".join((head, ext_head, stamp, padding, descriptor, chunk))
            else:
                data = b"".join((head, ext_head, stamp, padding, chunk))
            seq = (seq + 1) & 0xFFFF
            on_sent(data, now_ns)
            protected = protect(data)
            if protected is None:
                raise ConnectionError("SRTP protect failed")
            sendto(protected, addr)
        self.seq = seq
        if vp8:
            self.picture_id = (pid + 1) & 0x7FFF


class RawPacer:
    """One task per process sends the due frames of every `RawStream` each tick."""

    def __init__(self, errors: list[str]) -> None:
        self.streams: list[RawStream] = []
        self.errors = errors  # where a stream that stopped is reported
        self._task: asyncio.Task[None] | None = None

    def add(self, path: RawSendPath, clip: PacketizedClip, on_sent: OnSent, delay_s: float) -> RawStream:
        """Starts `clip` `delay_s` from now. Give publishers started together different delays (within a
        key-frame interval): else their key frames, the biggest bursts, leave in the same tick for as
        long as they run."""
        start_s = asyncio.get_running_loop().time() + delay_s
        stream = RawStream(path, clip, start_s, on_sent)
        self.streams.append(stream)
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="raw-pacer")
        return stream

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            now_s = loop.time()
            for stream in self.streams:
                try:
                    stream.send_due(now_s)
                except Exception as exc:  # a closed transport or SRTP session: that stream stops
                    self.errors.append(f"raw publisher stream stopped: {type(exc).__name__}: {exc}")
                    self.streams.remove(stream)
                    break
            await asyncio.sleep(TICK_S)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        self.streams = []
