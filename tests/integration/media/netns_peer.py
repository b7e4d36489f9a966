"""A subscriber for tests that run it inside a test host's network namespace, with transport-wide CC.

`python -m tests.integration.media.netns_peer` reads the server's offer as one JSON line on stdin,
answers on stdout, decodes what arrives, and on a `quit` line prints what it decoded: per video frame
(monotonic time, width, height) and per audio frame its time (CLOCK_MONOTONIC is shared by every
namespace, so the test can line these up with its own events).

aiortc has no transport-cc receiver (AIORTC_NOTES.md), so this peer adds one the way Chrome behaves: its
answer accepts the transport-cc extension and feedback, it reads the transport-wide seq of every
decrypted RTP packet before aiortc sees it, and sends a TWCC feedback packet
(draft-holmer-rmcat-transport-wide-cc-extensions-01) every 50 ms. aiortc's own REMB and receiver reports
go out as usual. Like a browser's frame buffer, it decodes from a key frame on without waiting for
older gaps (aiortc's jitter buffer would hold every later frame until 512 packets piled up behind one).
Like Chrome's NACK module (and unlike stock aiortc, which NACKs a gap once, when it
appears), it repeats the NACK for packets still missing every 100 ms: a lost retransmission would
otherwise stall aiortc's jitter buffer until 512 packets have piled up behind the gap.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import time
from collections.abc import Callable
from typing import Any

import orjson
from aiortc import MediaStreamTrack, RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError

from sfu.media.rtp import find_extension, is_vp8_key_frame, payload_bounds
from sfu.media.sdp import parse as parse_sdp
from sfu.media.twcc import TRANSPORT_CC_ID, URI_TRANSPORT_CC, TransportCc, build_twcc

FEEDBACK_S = 0.05
RENACK_S = 0.1
MAX_PER_FEEDBACK = 1000


def accept_transport_cc(answer: str) -> str:
    """aiortc's answer plus the transport-cc extmap and `a=rtcp-fb:<pt> transport-cc` per codec."""
    out: list[str] = []
    for line in answer.splitlines():
        out.append(line)
        if line.startswith("m="):
            out.append(f"a=extmap:{TRANSPORT_CC_ID} {URI_TRANSPORT_CC}")
        elif line.startswith("a=rtpmap:") and "rtx/" not in line:
            out.append(f"a=rtcp-fb:{line[9:].split()[0]} transport-cc")
    return "\r\n".join(out) + "\r\n"


class FeedbackSender:
    """Records (transport seq, arrival) per packet and reports them, like a browser's TWCC receiver."""

    def __init__(self, send: Callable[[bytes], Any]) -> None:
        self._send = send
        self._arrivals: dict[int, int] = {}  # unwrapped seq -> arrival us
        self._last = -1  # highest unwrapped seq seen
        self._next = -1  # first seq not reported yet
        self._count = 0
        self.sent = 0

    def on_rtp(self, data: bytes) -> None:
        if len(data) < 12:
            return
        _start, _end, profile, ext_end = payload_bounds(data, data[0])
        if not data[0] & 0x10:
            return
        value = find_extension(data, 12 + ((data[0] & 0x0F) << 2) + 4, ext_end, profile, TRANSPORT_CC_ID)
        if value is None or len(value) != 2:
            return
        wire = int.from_bytes(value, "big")
        if self._last < 0:
            seq = wire
            self._next = seq
        else:
            delta = (wire - self._last) & 0xFFFF
            seq = self._last + (delta - 0x10000 if delta >= 0x8000 else delta)
        self._last = max(self._last, seq)
        if seq >= self._next:
            self._arrivals[seq] = time.monotonic_ns() // 1000

    async def flush(self) -> None:
        if self._next < 0 or self._last < self._next:
            return
        base = self._next
        end = min(self._last, base + MAX_PER_FEEDBACK - 1)
        arrivals = [self._arrivals.pop(s, -1) for s in range(base, end + 1)]
        self._next = end + 1
        received = [a for a in arrivals if a >= 0]
        if not received:
            return
        ref = received[0] // 64_000
        prev = ref * 64_000
        deltas: list[int | None] = []
        for arrival in arrivals:
            if arrival < 0:
                deltas.append(None)
                continue
            delta = (arrival - prev) // 250 * 250
            deltas.append(delta)
            prev += delta
        fb = TransportCc(1, 0, base & 0xFFFF, ref & 0xFFFFFF, self._count & 0xFF, tuple(deltas))
        self._count += 1
        with contextlib.suppress(ConnectionError):
            await self._send(build_twcc(fb))
            self.sent += 1


class VideoRepair:
    """Browser-like receive behaviour on top of aiortc's video receiver (private attributes, test only)."""

    def __init__(self, offer: str, receiver: Any) -> None:
        section = next((x for x in parse_sdp(offer) if x.kind == "video"), None)
        self.ssrc = section.ssrcs[0] if section and section.ssrcs else 0
        self.payload_type = section.payload_types[0] if section else -1
        self.receiver = receiver

    def on_rtp(self, data: bytes) -> None:
        """Like a browser's frame buffer, decode from a key frame on without waiting for older gaps
        (aiortc's jitter buffer would hold every later frame until 512 packets piled up)."""
        if (
            len(data) < 12
            or data[1] & 0x7F != self.payload_type
            or int.from_bytes(data[8:12], "big") != self.ssrc
        ):
            return
        start, end, _profile, _ext_end = payload_bounds(data, data[0])
        if not is_vp8_key_frame(data, start, end):
            return
        seq = int.from_bytes(data[2:4], "big")
        jitter = self.receiver._RTCRtpReceiver__jitter_buffer
        if jitter._origin is not None:
            behind = (seq - jitter._origin) & 0xFFFF
            if 0 < behind < jitter.capacity:
                jitter.remove(behind)
        nack = self.receiver._RTCRtpReceiver__nack_generator
        nack.missing = {s for s in nack.missing if (s - seq) & 0xFFFF < 0x8000}

    async def renack(self) -> None:
        """Repeats the NACK for what is still missing, as Chrome's NACK module does."""
        while True:
            await asyncio.sleep(RENACK_S)
            missing = self.receiver._RTCRtpReceiver__nack_generator.missing
            if missing and self.ssrc:
                with contextlib.suppress(ConnectionError):
                    await self.receiver._send_rtcp_nack(self.ssrc, sorted(missing))


def stamp_arrivals(dtls: Any, feedback: FeedbackSender) -> None:
    """Arrival times are taken in the socket callback, as a browser takes them when it reads the socket:
    SRTP leaves the RTP header and its extensions in the clear (RFC 3711 section 3.1), so the transport
    seq is read before decryption and before aiortc's receive queue (a busy decoder must not look like
    a queue on the path)."""
    for protocol in dtls.transport._connection._protocols:
        original = protocol.datagram_received

        def datagram_received(data: bytes, addr: Any, original: Any = original) -> None:
            if len(data) > 12 and 127 < data[0] < 192 and not 192 <= data[1] <= 208:
                feedback.on_rtp(data)
            original(data, addr)

        protocol.datagram_received = datagram_received


async def _feedback_loop(feedback: FeedbackSender) -> None:
    while True:
        await asyncio.sleep(FEEDBACK_S)
        await feedback.flush()


async def run() -> dict[str, object]:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    offer = orjson.loads(await reader.readline())["sdp"]
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    video: list[tuple[float, int, int]] = []
    audio: list[float] = []
    tasks: list[asyncio.Task[None]] = []

    async def consume(track: MediaStreamTrack) -> None:
        with contextlib.suppress(MediaStreamError):
            while True:
                frame: Any = await track.recv()
                if track.kind == "video":
                    video.append((time.monotonic(), frame.width, frame.height))
                else:
                    audio.append(time.monotonic())

    pc.on("track", lambda track: tasks.append(asyncio.create_task(consume(track))))
    await pc.setRemoteDescription(RTCSessionDescription(sdp=offer, type="offer"))
    dtls: Any = pc.getTransceivers()[0].receiver.transport
    feedback = FeedbackSender(dtls._send_rtp)
    repair = VideoRepair(offer, next(t.receiver for t in pc.getTransceivers() if t.kind == "video"))
    original = dtls._handle_rtp_data

    async def on_rtp(data: bytes, arrival_time_ms: int) -> None:
        repair.on_rtp(data)
        await original(data, arrival_time_ms=arrival_time_ms)

    dtls._handle_rtp_data = on_rtp
    await pc.setLocalDescription(await pc.createAnswer())
    stamp_arrivals(dtls, feedback)
    sys.stdout.write(orjson.dumps({"sdp": accept_transport_cc(pc.localDescription.sdp)}).decode() + "\n")
    sys.stdout.flush()
    tasks += [asyncio.create_task(repair.renack()), asyncio.create_task(_feedback_loop(feedback))]
    while (await reader.readline()).strip() not in (b"quit", b""):
        pass
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    await pc.close()
    return {"video": video, "audio": audio, "feedbacks": feedback.sent}


if __name__ == "__main__":
    result = asyncio.run(run())
    sys.stdout.write(orjson.dumps(result).decode() + "\n")
