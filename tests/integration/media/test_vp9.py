"""VP9 through the server with aiortc peers on 127.0.0.1 (aiortc has no VP9 coder: negotiation only).

The publisher is an aiortc peer connection for SDP/ICE/DTLS/SRTP that offers only VP9 and writes the
RTP itself, packetized like Chrome (RFC 9628 flexible mode: picture id, P_DIFF on inter frames, SS
data on key frames), from frames PyAV's libvpx-vp9 encoded. The subscriber records the RTP it gets;
the recorder's depacketizer rebuilds the frames and libvpx decodes every one of them.
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import struct
import time
from fractions import Fraction
from typing import Any

import av
import numpy as np
from aiortc import RTCConfiguration, RTCPeerConnection, RTCRtpSender, RTCSessionDescription

from sfu.media import bridge
from sfu.media.engine import MediaEngine
from sfu.media.rtcp import Pli, parse_compound
from sfu.media.rtp import SEQ_MASK
from sfu.recording.depacketize import Depacketizer
from tests.integration.media.peers import LOOPBACK, wait_until

WIDTH, HEIGHT, FPS, GOP, FRAMES = 320, 180, 30, 30, 120
MAX_PAYLOAD = 1000


@functools.lru_cache(maxsize=1)
def encode_vp9() -> tuple[tuple[bytes, bool], ...]:
    """FRAMES VP9 frames of a moving pattern, a key frame every GOP frames, as (data, key)."""
    ctx: Any = av.CodecContext.create("libvpx-vp9", "w")
    ctx.width, ctx.height, ctx.pix_fmt = WIDTH, HEIGHT, "yuv420p"
    ctx.time_base, ctx.framerate = Fraction(1, FPS), Fraction(FPS, 1)
    ctx.gop_size, ctx.bit_rate = GOP, 400_000
    ctx.options = {"deadline": "realtime", "cpu-used": "8", "lag-in-frames": "0", "kf-max-dist": str(GOP)}
    x = np.arange(WIDTH, dtype=np.int32)[None, :, None]
    y = np.arange(HEIGHT, dtype=np.int32)[:, None, None]
    out: list[tuple[bytes, bool]] = []
    for i in range(FRAMES):
        planes = [(x + i * 4 + 0 * y) % 256, (y + i * 2 + 0 * x) % 256, ((x ^ y) + i) % 256]
        img = np.concatenate(planes, axis=2)
        frame = av.VideoFrame.from_ndarray(img.astype(np.uint8), format="rgb24").reformat(format="yuv420p")
        frame.pts = i
        out += [(bytes(p), bool(p.is_keyframe)) for p in ctx.encode(frame)]
    out += [(bytes(p), bool(p.is_keyframe)) for p in ctx.encode(None)]
    assert len(out) == FRAMES and out[0][1]
    return tuple(out)


def vp9_descriptor(picture_id: int, key: bool, first: bool, last: bool) -> bytes:
    """RFC 9628 4.2 flexible mode as Chrome sends it (L1T1): I, P, F, B, E, V; Z is never set here."""
    flags = 0x80 | 0x10 | (0x08 if first else 0) | (0x04 if last else 0) | (0 if key else 0x40)
    out = bytes([flags | (0x02 if key and first else 0), 0x80 | (picture_id >> 8) & 0x7F, picture_id & 0xFF])
    if not key:
        out += b"\x02"  # P_DIFF 1 (the previous picture), N=0
    elif first:
        # SS (4.2.1): N_S=0 with Y (size) and G (one group: R=1, P_DIFF 1)
        out += bytes([0x18]) + struct.pack("!HH", WIDTH, HEIGHT) + b"\x01\x04\x01"
    return out


class Vp9Publisher:
    """Sends the clip in a loop at FPS; a PLI makes it jump to its next key frame (like an encoder)."""

    def __init__(self) -> None:
        self.pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        self.sink = bridge.SrtpSink()
        self.frames = encode_vp9()
        self.keys = [i for i, (_, key) in enumerate(self.frames) if key]
        self.index = 0
        self.sent: list[int] = []  # clip indices of the frames sent, in order
        self.plis = 0
        self.ssrc = 0x5EED
        self.seq = 1000
        self.payload_type = 0
        self._task: asyncio.Task[None] | None = None

    async def publish(self, engine: MediaEngine) -> Any:
        bridge.install_forward_only_codecs()
        transceiver = self.pc.addTransceiver("video", direction="sendonly")
        codecs = RTCRtpSender.getCapabilities("video").codecs
        transceiver.setCodecPreferences([c for c in codecs if c.mimeType == "video/VP9"][:1])
        with bridge.ice_hosts_scope(LOOPBACK):
            await self.pc.setLocalDescription(await self.pc.createOffer())
        bridge.disable_aiortc_media(self.pc)
        own = f"a=ssrc:{transceiver.sender._ssrc} "
        offer = self.pc.localDescription.sdp.replace(own, f"a=ssrc:{self.ssrc} ")
        transport = engine.create_publisher()
        answer, [track] = await transport.negotiate(offer)
        await self.pc.setRemoteDescription(RTCSessionDescription(sdp=answer, type="answer"))
        self.payload_type = track.receiver.payload_type
        dtls: Any = transceiver.sender.transport
        bridge.hook_dtls(dtls, lambda *a, **k: bridge.DONE, self._on_rtcp)
        self.sink.attach(dtls)
        return transport, track

    def _on_rtcp(self, data: bytes, *args: object, **kwargs: object) -> bridge._Done:
        for packet in parse_compound(data):
            if isinstance(packet, Pli) and packet.media_ssrc == self.ssrc:
                self.plis += 1
                later = [k for k in self.keys if k > self.index % FRAMES]
                self.index += (later[0] if later else FRAMES) - self.index % FRAMES
        return bridge.DONE

    def start(self, frames: int) -> None:
        self._task = asyncio.create_task(self._run(frames))

    async def _run(self, frames: int) -> None:
        started = time.monotonic()
        for n in range(frames):
            self._send(self.index % FRAMES, n)
            self.index += 1
            await asyncio.sleep(max(0.0, started + (n + 1) / FPS - time.monotonic()))

    def _send(self, i: int, n: int) -> None:
        data, key = self.frames[i]
        self.sent.append(i)
        chunks = [data[j : j + MAX_PAYLOAD] for j in range(0, len(data), MAX_PAYLOAD)]
        for j, chunk in enumerate(chunks):
            last = j == len(chunks) - 1
            header = struct.pack("!BBHII", 0x80, (0x80 if last else 0) | self.payload_type, self.seq,
                                 n * (90000 // FPS), self.ssrc)
            self.sink.send_rtp(bytearray(header + vp9_descriptor(n & 0x7FFF, key, j == 0, last) + chunk))
            self.seq = (self.seq + 1) & SEQ_MASK

    async def wait(self) -> None:
        assert self._task is not None
        await self._task

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        self.sink.detach()
        await bridge.close_peer_connection(self.pc)


class RecordingSubscriber:
    """An aiortc answerer that keeps the RTP it receives (its own receivers never start: no decoder)."""

    def __init__(self) -> None:
        self.pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        self.packets: list[bytes] = []

    async def answer(self, transport: Any) -> None:
        offer, _ = await transport.create_offer()
        await self.pc.setRemoteDescription(RTCSessionDescription(sdp=offer, type="offer"))
        bridge.disable_aiortc_media(self.pc)
        with bridge.ice_hosts_scope(LOOPBACK):
            await self.pc.setLocalDescription(await self.pc.createAnswer())
        await transport.set_answer(self.pc.localDescription.sdp)
        dtls: Any = self.pc.getTransceivers()[0].receiver.transport
        bridge.hook_dtls(dtls, self._on_rtp, lambda *a, **k: bridge.DONE)

    def _on_rtp(self, data: bytes, *args: object, **kwargs: object) -> bridge._Done:
        self.packets.append(data)
        return bridge.DONE

    async def close(self) -> None:
        await bridge.close_peer_connection(self.pc)


async def test_vp9_is_forwarded_from_a_key_frame_and_every_frame_decodes(engine: MediaEngine) -> None:
    publisher = Vp9Publisher()
    subscriber = RecordingSubscriber()
    try:
        pub, track = await publisher.publish(engine)
        assert track.codec == "video/VP9"
        sub = engine.create_subscriber()
        sub.add(track.receiver, tag="cam")
        await subscriber.answer(sub)
        await wait_until(lambda: sub.sink.connected and pub.sink.connected and publisher.sink.connected)
        publisher.index = 5  # mid-GOP: the server must ask for a key frame before it forwards anything
        publisher.start(75)
        await publisher.wait()
        await asyncio.sleep(0.3)
    finally:
        await publisher.close()
        await subscriber.close()

    assert publisher.plis >= 1 and track.receiver.key_frames >= 1
    packets = subscriber.packets
    seqs = [struct.unpack_from("!H", p, 2)[0] for p in packets]
    assert packets and all((b - a) & SEQ_MASK == 1 for a, b in itertools.pairwise(seqs))
    depacketizer = Depacketizer("video/VP9")
    frames = [f for p in packets for f in depacketizer.push(p)] + depacketizer.flush()
    assert frames[0].key_frame
    decoder: Any = av.CodecContext.create("libvpx-vp9", "r")
    decoded = [out for f in frames for packet in decoder.parse(f.data) for out in decoder.decode(packet)]
    decoded += decoder.decode(None)
    # byte for byte the frames sent since the key frame the subscriber started on, all decodable
    sent = [publisher.frames[i][0] for i in publisher.sent[-len(frames):]]
    assert len(frames) > 40 and [f.data for f in frames] == sent
    assert len(decoded) == len(frames)
    assert {(f.width, f.height) for f in decoded} == {(WIDTH, HEIGHT)}
