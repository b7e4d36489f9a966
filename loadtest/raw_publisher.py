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
stream's due frames from a 20 ms tick: an RTP header with the negotiated SSRC, payload type and mid, the
load tool's send stamp (`loadtest.taps`; only where the subscribers read it: not on the kernel path),
SRTP-protected by the transport's own session and written to its nominated ICE pair
(`taps.raw_send_path`), a video frame's packets in one segmented `sendmsg` (`RawStream`). What the
server receives is what aiortc would send, minus abs-send-time; frames leave at most one tick late. The
publisher answers the server's consent checks but sends none of its own (`taps.quiet_consent`: aioice
closes a transport after six checks in a row answered later than 0.5 s, which happened to publishers
while hundreds of load peers shook hands; a browser waits 30 s, RFC 7675). PLIs and NACKs from the
server reach aiortc's sender, which answers neither: a pre-encoded clip has its key frames where it has
them (every `keyframe_s`), as with the aiortc path, and aiortc keeps no history of packets it did not
send, so a packet lost between publisher and server (a server too busy to read its socket) is not
repaired and counts as loss for every subscriber.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import random
import socket
import struct
import sys
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
    payload_bytes: int  # sum of the chunks' lengths


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
        frames.append(PacketizedFrame(float(seconds), round(seconds * clock), chunks, sum(map(len, chunks))))
    return PacketizedClip(clip.codec, tuple(frames), clip.duration_s, round(clip.duration_s * clock))


def held_track(clip: EncodedClip) -> EncodedAudioTrack | EncodedVideoTrack:
    """A track of `clip`'s kind and codec for the SDK to negotiate with, that never yields a frame."""
    track = EncodedAudioTrack(clip) if clip.kind == "audio" else EncodedVideoTrack(clip)

    async def recv() -> Any:
        await asyncio.Event().wait()  # until aiortc's sender task is cancelled at close

    track.recv = recv  # type: ignore[method-assign]
    return track


OnSent = Callable[[bytes, int], None]  # every packet (stamped, before SRTP) and its send time
OnFrame = Callable[[int, int], None]  # a frame's packets and RTP octets (before SRTP), once it left


class RawStream:
    """One feed of one publisher: its clip on a loop, with continuous sequence numbers, timestamps and
    (VP8) picture ids.

    A frame's packets leave in one `sendmsg` with UDP segmentation offload (`UDP_SEGMENT`, Linux 4.18+)
    when they are more than one: the kernel cuts them back into the same datagrams (every segment
    `gso_size` bytes, the last one up to that, which is what `packetize` makes), so the server reads
    exactly what one `sendto` each would have given it, but the load tool pays one system call per
    frame instead of one per packet (~1.7 instead of ~4.3 us per packet on this VM). Where the kernel
    refuses it, the stream falls back to a `sendto` per packet for good."""

    def __init__(
        self, path: RawSendPath, clip: PacketizedClip, start_s: float, on_frame: OnFrame,
        on_sent: OnSent | None = None,
    ) -> None:  # fmt: skip
        self.path = path
        self.clip = clip
        self.on_frame = on_frame
        self.on_sent = on_sent  # per packet: only for the aiortc subscriber path's fingerprints
        self.seq = random.getrandbits(16)
        self.ts_origin = random.getrandbits(32)
        self.picture_id = random.getrandbits(15)
        self.start_s = start_s
        self.index = 0
        self.passes = 0
        self.vp8 = clip.codec == "vp8"
        self.dropped = 0  # packets the socket refused (EAGAIN): not counted as sent
        elements = b""
        if path.mid_ext_id and path.mid:
            mid = path.mid.encode()[:16]
            elements += bytes(((path.mid_ext_id << 4) | (len(mid) - 1),)) + mid
        self.stamped = bool(path.stamp_ext_id)
        if self.stamped:
            elements += bytes(((path.stamp_ext_id << 4) | 7,))  # + 8 bytes of send time per packet
        size = len(elements) + (8 if self.stamped else 0)
        self.padding = b"\x00" * (-size % 4)
        words = (size + len(self.padding)) // 4
        self.ext_head = struct.pack("!HH", 0xBEDE, words) + elements if size else b""
        self.b0 = 0x90 if size else 0x80
        # what follows the fixed header up to the payload: with a stamp, the stamp and padding go between
        self.prefix = self.ext_head if self.stamped else self.ext_head + self.padding
        self.overhead = 12 + len(self.ext_head) + (8 if self.stamped else 0) + len(self.padding)
        self.overhead += 4 if self.vp8 else 0  # the payload descriptor
        self.batch = _batch_socket(path.fileno)
        self.clock = CLOCK_RATES[clip.codec]
        self.packets_sent = 0  # RFC 3550 sender info: packets and payload octets so far
        self.payload_octets = 0
        self.next_report_s = start_s + 0.5 + random.random()
        self.sdes = _sdes(path.ssrc, path.cname) if path.cname else b""

    def close(self) -> None:
        if self.batch is not None:
            self.batch.close()
            self.batch = None

    def send_due(self, now_s: float) -> None:
        """Sends every frame whose time has come; ConnectionError once the transport is closed."""
        if self.path.is_closing():
            raise ConnectionError("the publisher's ICE transport is closed")
        if now_s >= self.next_report_s:
            self._send_report(now_s)
        frames = self.clip.frames
        count = len(frames)
        while True:
            if self.index >= count:
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
        protect, on_sent = path.protect, self.on_sent
        ts = (self.ts_origin + self.passes * self.clip.duration_rtp + frame.rtp_offset) & 0xFFFFFFFF
        pt, ssrc, b0, pid, seq = path.payload_type, path.ssrc, self.b0, self.picture_id, self.seq
        prefix, stamped = self.prefix, self.stamped
        chunks = frame.chunks
        last = len(chunks) - 1
        if self.vp8:
            picture_id = _U16.pack(0x8000 | pid)
            descriptors = (_VP8_START + picture_id, _VP8_MORE + picture_id)
            self.picture_id = (pid + 1) & 0x7FFF
        else:
            descriptors = (b"", b"")
        pack = _RTP_HEAD.pack
        packets = []
        for i, chunk in enumerate(chunks):
            head = pack(b0, pt | 0x80 if i == last else pt, seq, ts, ssrc)
            if on_sent is None and not stamped:
                data = b"".join((head, prefix, descriptors[i != 0], chunk))
            else:
                now_ns = _monotonic_ns()
                stamp = _U64.pack(now_ns) if stamped else b""
                data = b"".join((head, prefix, stamp, self.padding, descriptors[i != 0], chunk))
                if on_sent is not None:
                    on_sent(data, now_ns)
            seq = (seq + 1) & 0xFFFF
            protected = protect(data)
            if protected is None:
                raise ConnectionError("SRTP protect failed")
            packets.append(protected)
        self.seq = seq
        if self._write(packets):
            count = last + 1
            self.on_frame(count, count * self.overhead + frame.payload_bytes)
            self.packets_sent += count
            self.payload_octets += frame.payload_bytes + (4 * count if self.vp8 else 0)

    def _send_report(self, now_s: float) -> None:
        """An RTCP sender report (+ SDES CNAME), as every RTP sender sends about once a second (RFC 3550
        section 6.4.1): the wall clock now, the stream's RTP time for the same instant, its counts."""
        self.next_report_s = now_s + 0.5 + random.random()  # aiortc's interval: 0.5-1.5 s
        protect_rtcp = self.path.protect_rtcp
        if protect_rtcp is None:
            return
        pass_start_s = self.start_s + self.passes * self.clip.duration_s
        elapsed_rtp = round((now_s - pass_start_s) * self.clock)
        rtp_now = self.ts_origin + self.passes * self.clip.duration_rtp + elapsed_rtp
        ntp = int((time.time() + _NTP_EPOCH_S) * 4294967296.0)
        report = _SR.pack(0x80, 200, 6, self.path.ssrc, (ntp >> 32) & 0xFFFFFFFF, ntp & 0xFFFFFFFF,
                          rtp_now & 0xFFFFFFFF, self.packets_sent & 0xFFFFFFFF,
                          self.payload_octets & 0xFFFFFFFF)  # fmt: skip
        protected = protect_rtcp(report + self.sdes)
        if protected is not None:
            self.path.sendto(protected, self.path.remote_addr)

    def _write(self, packets: list[bytes]) -> bool:
        """One `sendmsg` with UDP_SEGMENT for a frame of several packets, else a `sendto` each; False
        if the socket refused the batch (dropped, counted)."""
        batch = self.batch
        path = self.path
        if batch is not None and len(packets) > 1:
            size = len(packets[0])
            count = len(packets)
            if len(packets[-1]) <= size and count <= _GSO_MAX_SEGMENTS and count * size <= _GSO_MAX_BYTES:
                try:
                    batch.sendmsg(packets, [(_SOL_UDP, _UDP_SEGMENT, _U16N.pack(size))], 0, path.remote_addr)
                    return True
                except BlockingIOError:
                    self.dropped += count
                    return False
                except OSError as exc:
                    if exc.errno not in _GSO_REFUSED:
                        raise ConnectionError(f"sendmsg: {exc}") from exc
                    self.close()  # this kernel or socket cannot: a sendto each from now on
        sendto, addr = path.sendto, path.remote_addr
        for packet in packets:
            sendto(packet, addr)
        return True


_SOL_UDP: Final = getattr(socket, "SOL_UDP", 17)
_UDP_SEGMENT: Final = getattr(socket, "UDP_SEGMENT", 103)  # linux/udp.h
_GSO_MAX_SEGMENTS: Final = 64  # UDP_MAX_SEGMENTS (a key frame of this clip is ~20 packets)
_GSO_MAX_BYTES: Final = 65000  # one UDP datagram's worth before segmentation
_GSO_REFUSED: Final = frozenset((errno.EINVAL, errno.EOPNOTSUPP, errno.ENOPROTOOPT, errno.EIO))
_U16N: Final = struct.Struct("=H")  # the option value is a native u16


_SR: Final = struct.Struct("!BBHIIIIII")  # V=2 RC=0, PT 200, length 6, SSRC, NTP, RTP time, counts
_NTP_EPOCH_S: Final = 2208988800  # 1900-01-01 to 1970-01-01


def _sdes(ssrc: int, cname: str) -> bytes:
    """An RTCP SDES packet with one chunk: CNAME (RFC 3550 section 6.5), zero-padded to 32 bits."""
    text = cname.encode()[:255]
    chunk = struct.pack("!IBB", ssrc, 1, len(text)) + text
    chunk += b"\x00" * (4 - len(chunk) % 4)  # the END item, then padding
    return struct.pack("!BBH", 0x81, 202, len(chunk) // 4) + chunk


def _batch_socket(fileno: int) -> socket.socket | None:
    """A duplicate of the ICE socket `fileno` to send whole frames on (None: no socket, or not Linux).
    A duplicate, not the socket itself, so its descriptor stays valid (and ours to close) whatever
    aioice does with its own."""
    if fileno < 0 or not sys.platform.startswith("linux"):
        return None
    sock = socket.socket(fileno=os.dup(fileno))
    sock.setblocking(False)
    return sock


class RawPacer:
    """One task per process sends the due frames of every `RawStream` each tick."""

    def __init__(self, errors: list[str]) -> None:
        self.streams: list[RawStream] = []
        self.errors = errors  # where a stream that stopped is reported
        self.paused_at: float | None = None  # loop time of `pause()`: muted feeds send nothing
        self._task: asyncio.Task[None] | None = None

    def add(
        self, path: RawSendPath, clip: PacketizedClip, on_frame: OnFrame, delay_s: float,
        on_sent: OnSent | None = None,
    ) -> RawStream:  # fmt: skip
        """Starts `clip` `delay_s` from now. Give publishers started together different delays (within a
        key-frame interval): else their key frames, the biggest bursts, leave in the same tick for as
        long as they run."""
        # while paused, as if added at the pause: `resume()` shifts every stream by the whole pause
        start_s = (self.paused_at or asyncio.get_running_loop().time()) + delay_s
        stream = RawStream(path, clip, start_s, on_frame, on_sent)
        self.streams.append(stream)
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="raw-pacer")
        return stream

    def pause(self) -> None:
        """Every stream stops sending (muted feeds, `--connect-muted`), as a muted browser track does."""
        if self.paused_at is None:
            self.paused_at = asyncio.get_running_loop().time()

    def resume(self) -> None:
        """Every stream goes on from where it stopped, from now: nothing due while paused is sent."""
        if self.paused_at is not None:
            paused_s = asyncio.get_running_loop().time() - self.paused_at
            self.paused_at = None
            for stream in self.streams:
                stream.start_s += paused_s
                stream.next_report_s += paused_s

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            now_s = loop.time()
            for stream in () if self.paused_at is not None else self.streams:
                try:
                    stream.send_due(now_s)
                except Exception as exc:  # a closed transport or SRTP session: that stream stops
                    self.errors.append(f"raw publisher stream stopped: {type(exc).__name__}: {exc}")
                    self.streams.remove(stream)
                    stream.close()
                    break
            await asyncio.sleep(TICK_S)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        for stream in self.streams:
            stream.close()
        self.streams = []
