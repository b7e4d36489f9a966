"""Records every feed of a session to files, as received: RTP -> frames -> PyAV mux, never re-encoded.

A hidden participant (`grants.hidden`: nobody sees it join) subscribes with `decode=False` to each feed
and writes VP8 to `.webm`, H.264 to `.mkv` and Opus to `.ogg`, one file per feed, named after the feed.

    python -m client_sdk.examples.record_session --key-id k_.. --secret sk_.. --session demo --out rec/
"""

from __future__ import annotations

import asyncio
import logging
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
from aiortc import RTCRtpCodecParameters
from aiortc.codecs import depayload
from aiortc.rtp import RtpPacket

import client_sdk
from client_sdk.examples._common import parser, token

log = logging.getLogger("record_session")

CONTAINERS = {
    "video/VP8": ("webm", "libvpx"),
    "video/H264": ("mkv", "h264"),
    "audio/opus": ("ogg", "libopus"),
}


def _vp8_size(frame: bytes) -> tuple[int, int] | None:
    """Width and height from a VP8 key frame header (RFC 6386 section 9.1), None for other frames."""
    if len(frame) < 10 or frame[0] & 1 or frame[3:6] != b"\x9d\x01\x2a":
        return None
    return int.from_bytes(frame[6:8], "little") & 0x3FFF, int.from_bytes(frame[8:10], "little") & 0x3FFF


class FeedWriter:
    """Turns one feed's RTP packets into frames (same timestamp, until the marker bit) and muxes them."""

    def __init__(self, path: Path, mime: str, clock_rate: int, payload_type: int) -> None:
        self.path = path
        self._codec = RTCRtpCodecParameters(mimeType=mime, clockRate=clock_rate, payloadType=payload_type)
        self._format, self._encoder = CONTAINERS[mime]
        self._time_base = Fraction(1, clock_rate)
        self._container: Any = None
        self._stream: Any = None
        self._parts: list[bytes] = []
        self._timestamp: int | None = None
        self._first_timestamp: int | None = None
        self.frames = 0

    def write(self, packet: RtpPacket) -> None:
        if packet.payload_type != self._codec.payloadType:
            return  # RTX or another codec: a recorder that copies keeps to one
        if self._timestamp is not None and packet.timestamp != self._timestamp:
            self._flush()
        self._timestamp = packet.timestamp
        self._parts.append(depayload(self._codec, packet.payload))
        if packet.marker or self._codec.mimeType.startswith("audio/"):
            self._flush()

    def _flush(self) -> None:
        frame, timestamp = b"".join(self._parts), self._timestamp
        self._parts, self._timestamp = [], None
        if not frame or timestamp is None:
            return
        if self._container is None and not self._open(frame):
            return  # video starts at a key frame
        assert self._first_timestamp is not None
        av_packet = av.Packet(frame)
        av_packet.stream = self._stream
        av_packet.pts = av_packet.dts = (timestamp - self._first_timestamp) % 2**32
        av_packet.time_base = self._time_base
        self._container.mux(av_packet)
        self.frames += 1

    def _open(self, frame: bytes) -> bool:
        size = _vp8_size(frame) if self._codec.mimeType == "video/VP8" else (0, 0)
        if size is None:
            return False
        self._container = av.open(str(self.path), "w", format=self._format)
        if self._codec.mimeType.startswith("audio/"):
            self._stream = self._container.add_stream(self._encoder, rate=self._codec.clockRate)
        else:
            self._stream = self._container.add_stream(self._encoder)
            self._stream.width, self._stream.height = size
        self._stream.time_base = self._time_base
        self._first_timestamp = self._timestamp if self._timestamp is not None else 0
        return True

    def close(self) -> None:
        self._flush()
        if self._container is not None:
            self._container.close()


async def record_feed(raw: client_sdk.RawFeed, out_dir: Path, max_frames: int | None = None) -> FeedWriter:
    """Writes `raw` until it ends (unpublished, unsubscribed, session closed) or `max_frames` are written."""
    section = raw.section
    if section is None or not section.codecs_by_pt:
        raise ValueError(f"feed {raw.feed_id} has no negotiated codec")
    payload_type, mime = next(iter(section.codecs_by_pt.items()))
    if mime not in CONTAINERS:
        raise ValueError(f"feed {raw.feed_id}: cannot record {mime}")
    path = out_dir / f"{raw.feed_id}.{CONTAINERS[mime][0]}"
    writer = FeedWriter(path, mime, section.clock_rate_by_pt[payload_type], payload_type)
    await raw.request_key_frame()
    try:
        async for packet in raw.packets():
            writer.write(packet)
            if max_frames is not None and writer.frames >= max_frames:
                break
    finally:
        writer.close()
    log.info("%s: %d frames in %s", raw.feed_id, writer.frames, path)
    return writer


async def main() -> None:
    cli = parser(__doc__ or "", uid="recorder")
    cli.add_argument("--out", type=Path, default=Path("recordings"), help="directory for the files")
    args = cli.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    jwt = token(args, name="Recorder", grants={"hidden": True, "publish": False})
    tasks: set[asyncio.Task[FeedWriter]] = set()

    async def start(session: client_sdk.Session, feed_id: str) -> None:
        raw = await session.subscribe(feed_id, decode=False)
        tasks.add(asyncio.create_task(record_feed(raw, args.out)))

    async with await client_sdk.connect(args.url, token=jwt, auto_subscribe=False) as session:
        for feed_id in list(session.feeds_by_id):
            await start(session, feed_id)
        async for event in session.events():
            if isinstance(event, client_sdk.FeedPublished):
                await start(session, event.feed.feed_id)
    await asyncio.gather(*tasks, return_exceptions=True)


if __name__ == "__main__":
    asyncio.run(main())
