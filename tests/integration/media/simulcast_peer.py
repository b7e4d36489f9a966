"""A raw-RTP simulcast publisher for tests: aiortc cannot send simulcast, so it only does SDP, ICE, DTLS
and SRTP here, and we write the RTP ourselves, the way Chrome does it:

- the offer is aiortc's with one sendonly video m-section, plus `a=rid:q/h/f send`, `a=simulcast:send
  q;h;f` and the RFC 8852 rtp-stream-id extmap (and no `a=ssrc` lines: SSRCs are learned from RTP);
- three pre-encoded VP8 streams (sizes per layer), each with its own SSRC, seq space and timestamp
  offset, packetized per RFC 7741, sent through `bridge.SrtpSink` on the client's DTLS transport;
- the MID and RID extensions (RFC 8285 one-byte form) ride only on each SSRC's first packets;
- a PLI for a layer makes that layer jump to its next key frame (the streams loop, GOP 15).
"""

from __future__ import annotations

import asyncio
import random
import struct
import time
from typing import Any

from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription

from sfu.media import bridge
from sfu.media.publisher import PublishedTrack, PublisherTransport
from sfu.media.rtcp import Pli, parse_compound
from sfu.media.rtp import URI_MID, URI_RID
from tests.integration.media.peers import LOOPBACK, VIDEO_FPS, encode_vp8

RIDS = ("q", "h", "f")
MID_EXT_ID = 1  # aiortc's own id for the mid extension
RID_EXT_ID = 12
TAGGED_PACKETS = 20  # like Chrome: MID/RID only until the SSRC is surely known
MAX_PAYLOAD = 1100
FRAMES = 60


def _munge_offer(sdp: str) -> str:
    out: list[str] = []
    for line in sdp.splitlines():
        if line.startswith(("a=ssrc", "a=msid")):
            continue
        out.append(line)
        if line.startswith("a=extmap:") and URI_MID in line:
            out.append(f"a=extmap:{RID_EXT_ID} {URI_RID}")
    out += [f"a=rid:{rid} send" for rid in RIDS]
    out.append("a=simulcast:send " + ";".join(RIDS))
    return "\r\n".join(out) + "\r\n"


def _extension(mid: str, rid: str) -> bytes:
    body = bytes([(MID_EXT_ID << 4) | (len(mid) - 1)]) + mid.encode()
    body += bytes([(RID_EXT_ID << 4) | (len(rid) - 1)]) + rid.encode()
    body += bytes(-len(body) % 4)
    return struct.pack("!HH", 0xBEDE, len(body) // 4) + body


class _Layer:
    __slots__ = ("frames", "index", "key_indices", "packets_sent", "rid", "seq", "ssrc", "ts_base")

    def __init__(self, rid: str, frames: tuple[bytes, ...]) -> None:
        self.rid = rid
        self.frames = frames
        self.key_indices = [i for i, f in enumerate(frames) if not f[0] & 0x01]
        self.ssrc = random.getrandbits(32) or 1
        self.seq = random.getrandbits(16)
        self.ts_base = random.getrandbits(32)
        self.index = 0
        self.packets_sent = 0

    def jump_to_key_frame(self) -> None:
        position = self.index % len(self.frames)
        later = [k for k in self.key_indices if k > position]
        self.index += (later[0] if later else len(self.frames) + self.key_indices[0]) - position


class SimulcastPublisher:
    """Publishes one video feed with three simulcast layers; `active` says which layers are sent."""

    def __init__(self, sizes: tuple[tuple[int, int], ...]) -> None:
        self.pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        self.pc.addTransceiver("video", direction="sendonly")
        self.sink = bridge.SrtpSink()
        self.layers = [
            _Layer(rid, encode_vp8(FRAMES, w, h, 150_000 * (i + 1) ** 2))
            for i, (rid, (w, h)) in enumerate(zip(RIDS, sizes, strict=True))
        ]
        self.active = {0, 1, 2}
        self.plis = 0
        self.mid = ""
        self.payload_type = 96
        self._task: asyncio.Task[None] | None = None

    async def publish(self, transport: PublisherTransport) -> list[PublishedTrack]:
        with bridge.ice_hosts_scope(LOOPBACK):
            await self.pc.setLocalDescription(await self.pc.createOffer())
        bridge.disable_aiortc_media(self.pc)
        answer, published = await transport.negotiate(_munge_offer(self.pc.localDescription.sdp))
        await self.pc.setRemoteDescription(RTCSessionDescription(sdp=answer, type="answer"))
        transceiver = self.pc.getTransceivers()[0]
        self.mid = transceiver.mid or "0"
        self.payload_type = published[0].receiver.payload_type
        dtls: Any = transceiver.sender.transport
        bridge.hook_dtls(dtls, self._on_rtp, self._on_rtcp)
        self.sink.attach(dtls)
        return published

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    def _on_rtp(self, data: bytes, *args: object, **kwargs: object) -> bridge._Done:
        return bridge.DONE

    def _on_rtcp(self, data: bytes, *args: object, **kwargs: object) -> bridge._Done:
        for packet in parse_compound(data):
            if isinstance(packet, Pli):
                for layer in self.layers:
                    if layer.ssrc == packet.media_ssrc:
                        self.plis += 1
                        layer.jump_to_key_frame()
        return bridge.DONE

    async def _run(self) -> None:
        started = time.monotonic()
        frame = 0
        while True:
            for index, layer in enumerate(self.layers):
                if index in self.active:
                    self._send_frame(layer, frame)
                layer.index += 1
            frame += 1
            await asyncio.sleep(max(0.0, started + frame / VIDEO_FPS - time.monotonic()))

    def _send_frame(self, layer: _Layer, frame: int) -> None:
        data = layer.frames[layer.index % len(layer.frames)]
        ts = (layer.ts_base + frame * (90000 // VIDEO_FPS)) & 0xFFFFFFFF
        chunks = [data[i : i + MAX_PAYLOAD] for i in range(0, len(data), MAX_PAYLOAD)]
        for n, chunk in enumerate(chunks):
            tagged = layer.packets_sent < TAGGED_PACKETS
            marker = 0x80 if n == len(chunks) - 1 else 0
            b1 = marker | self.payload_type
            header = struct.pack("!BBHII", 0x90 if tagged else 0x80, b1, layer.seq, ts, layer.ssrc)
            extension = _extension(self.mid, layer.rid) if tagged else b""
            descriptor = b"\x10" if n == 0 else b"\x00"  # RFC 7741 4.2: S=1 on the first packet, PID 0
            self.sink.send_rtp(bytearray(header + extension + descriptor + chunk))
            layer.seq = (layer.seq + 1) & 0xFFFF
            layer.packets_sent += 1

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        self.sink.detach()
        await bridge.close_peer_connection(self.pc)
