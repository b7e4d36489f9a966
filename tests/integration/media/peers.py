"""Real aiortc peers for media tests: a pre-encoded publisher and a decoding, RTP-recording subscriber.

Until `client_sdk/encoded.py` and `loadtest/media.py` land, VP8 and Opus are encoded once with PyAV
here and sent as `av.Packet`s (aiortc's sender only re-packetizes those).
"""

from __future__ import annotations

import asyncio
import functools
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

import av
import numpy as np
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from sfu.media import bridge
from sfu.media.publisher import PublishedTrack, PublisherTransport
from sfu.media.subscriber import SubscriberTransport

LOOPBACK = ("127.0.0.1",)
VIDEO_FPS = 30
VIDEO_GOP = 15  # a key frame every 0.5 s: the test publisher cannot honour PLIs


@functools.lru_cache(maxsize=4)
def encode_vp8(
    frames: int, width: int = 320, height: int = 240, bitrate: int = 1_000_000
) -> tuple[bytes, ...]:
    """`frames` VP8 frames of a moving pattern, key frame every VIDEO_GOP frames."""
    codec: Any = av.CodecContext.create("libvpx", "w")
    codec.width, codec.height = width, height
    codec.pix_fmt = "yuv420p"
    codec.time_base = Fraction(1, VIDEO_FPS)
    codec.framerate = Fraction(VIDEO_FPS, 1)
    codec.bit_rate = bitrate
    codec.gop_size = VIDEO_GOP
    codec.options = {
        "deadline": "realtime",
        "cpu-used": "8",
        "lag-in-frames": "0",
        "auto-alt-ref": "0",
        "kf-max-dist": str(VIDEO_GOP),
    }
    x = np.arange(width, dtype=np.int32)[None, :, None]
    y = np.arange(height, dtype=np.int32)[:, None, None]
    out: list[bytes] = []
    for i in range(frames):
        img = np.concatenate(
            [(x + i * 4 + 0 * y) % 256, (y + i * 2 + 0 * x) % 256, ((x ^ y) + i) % 256], axis=2
        )
        frame = av.VideoFrame.from_ndarray(img.astype(np.uint8), format="rgb24").reformat(format="yuv420p")
        frame.pts = i
        out += [bytes(p) for p in codec.encode(frame)]
    out += [bytes(p) for p in codec.encode(None)]
    return tuple(out)


@functools.lru_cache(maxsize=4)
def encode_opus(frames: int) -> tuple[bytes, ...]:
    """`frames` 20 ms Opus packets of a 440 Hz tone."""
    codec: Any = av.CodecContext.create("libopus", "w")
    codec.sample_rate = 48000
    codec.layout = "stereo"
    codec.format = "s16"
    codec.bit_rate = 64000
    t = np.arange(960)
    out: list[bytes] = []
    for i in range(frames):
        tone = (np.sin(2 * np.pi * 440 * (t + i * 960) / 48000) * 8000).astype(np.int16)
        frame = av.AudioFrame.from_ndarray(np.repeat(tone, 2).reshape(1, -1), format="s16", layout="stereo")
        frame.sample_rate = 48000
        frame.pts = i * 960
        out += [bytes(p) for p in codec.encode(frame)]
    return tuple(out)


class PacketTrack(MediaStreamTrack):
    """Sends pre-encoded packets in real time; loops; stops after `limit` packets (0 = never)."""

    def __init__(self, kind: str, packets: tuple[bytes, ...], limit: int = 0) -> None:
        super().__init__()
        self.kind = kind
        self._packets = packets
        self._limit = limit
        self._clock = 90000 if kind == "video" else 48000
        self._step = self._clock // VIDEO_FPS if kind == "video" else 960
        self._interval = 1 / VIDEO_FPS if kind == "video" else 0.02
        self.sent = 0
        self.go = asyncio.Event()
        self._start = 0.0

    async def recv(self) -> Any:
        await self.go.wait()
        if self._limit and self.sent >= self._limit:
            self.stop()
            raise MediaStreamError
        if not self._start:
            self._start = time.monotonic()
        due = self._start + self.sent * self._interval
        delay = due - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        packet = av.Packet(self._packets[self.sent % len(self._packets)])
        packet.pts = self.sent * self._step
        packet.time_base = Fraction(1, self._clock)
        self.sent += 1
        return packet


@dataclass
class Received:
    """RTP seen by a client, (arrival s, ssrc, seq, ts) per packet, and decoded frames per kind."""

    rtp: list[tuple[float, int, int, int]] = field(default_factory=list)
    frames: dict[str, int] = field(default_factory=lambda: {"audio": 0, "video": 0})
    first_frame_at: dict[str, float] = field(default_factory=dict)
    video_sizes: list[tuple[float, int, int]] = field(default_factory=list)  # (decoded at s, width, height)

    def seqs(self, ssrc: int) -> list[int]:
        return [seq for _, s, seq, _ in self.rtp if s == ssrc]


class ClientPeer:
    """An aiortc peer connection on loopback that records what it receives; `close()` cleans all up."""

    def __init__(self) -> None:
        self.pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        self.received = Received()
        self._tasks: list[asyncio.Task[None]] = []
        self._spied: set[int] = set()
        self.drop_every = 0
        self.drop_payload_type = 97
        self.dropped = 0
        self.pc.on("track", self._on_track)

    def _on_track(self, track: MediaStreamTrack) -> None:
        self._tasks.append(asyncio.create_task(self._consume(track)))

    async def _consume(self, track: MediaStreamTrack) -> None:
        kind = track.kind
        try:
            while True:
                frame: Any = await track.recv()
                if kind == "video":
                    self.received.video_sizes.append((time.monotonic(), frame.width, frame.height))
                self.received.frames[kind] += 1
                self.received.first_frame_at.setdefault(kind, time.monotonic())
        except MediaStreamError:
            return

    def _spy(self) -> None:
        """Records every RTP header the client receives (test-only wrap of aiortc's hook point)."""
        for transceiver in self.pc.getTransceivers():
            dtls: Any = transceiver.receiver.transport
            if id(dtls) in self._spied:
                continue
            self._spied.add(id(dtls))
            original: Callable[..., Any] = dtls._handle_rtp_data
            log = self.received.rtp

            async def spy(
                data: bytes,
                arrival_time_ms: int,
                original: Callable[..., Any] = original,
                log: list[tuple[float, int, int, int]] = log,
            ) -> None:
                _, b1, seq, ts, ssrc = struct.unpack_from("!BBHII", data)
                log.append((time.monotonic(), ssrc, seq, ts))
                lose = self.drop_every and b1 & 0x7F == self.drop_payload_type
                if lose and len(log) % self.drop_every == 0:
                    self.dropped += 1  # simulated loss: the client's NACK must bring it back
                    return
                await original(data, arrival_time_ms=arrival_time_ms)

            dtls._handle_rtp_data = spy

    async def publish(
        self, transport: PublisherTransport, tracks: list[MediaStreamTrack]
    ) -> list[PublishedTrack]:
        for track in tracks:
            self.pc.addTransceiver(track, direction="sendonly")
        offer = await self.pc.createOffer()
        with bridge.ice_hosts_scope(LOOPBACK):
            await self.pc.setLocalDescription(offer)
        answer, published = await transport.negotiate(self.pc.localDescription.sdp)
        await self.pc.setRemoteDescription(RTCSessionDescription(sdp=answer, type="answer"))
        return published

    async def answer(self, transport: SubscriberTransport) -> dict[str, str]:
        """One subscriber negotiation: the server offers, this client answers."""
        offer, tags = await transport.create_offer()
        await self.pc.setRemoteDescription(RTCSessionDescription(sdp=offer, type="offer"))
        self._spy()
        answer = await self.pc.createAnswer()
        with bridge.ice_hosts_scope(LOOPBACK):
            await self.pc.setLocalDescription(answer)
        await transport.set_answer(self.pc.localDescription.sdp)
        return tags

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        await self.pc.close()
        await asyncio.gather(*self._tasks, return_exceptions=True)


async def wait_until(predicate: Callable[[], bool], within_s: float = 10.0, interval: float = 0.02) -> None:
    deadline = time.monotonic() + within_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(interval)
