"""Records every feed of a session to local files, as received: RTP -> frames -> PyAV mux, never re-encoded.

A hidden participant (`grants.hidden`: nobody sees it join, it publishes nothing) subscribes with
`decode=False` to every feed, including feeds published later, and writes one file per feed, named after
the feed: VP8 and Opus to `.webm`, H.264 to `.mkv` (what aiortc can receive). For users who record
outside the server; the server's own recordings (`POST /v1/sessions/{sid}/recordings`) need no client.

    python -m client_sdk.examples.record_session --key-id k_.. --secret sk_.. --session demo --out rec/

What makes the files safe to play:
- a frame is written only if all of its packets arrived (a sequence gap drops it) and video starts, and
  resumes after a loss, at a key frame (a PLI asks for one), so a decoder never sees a broken frame;
- timestamps are the RTP ones (unwrapped), so pauses and mutes stay gaps on the timeline;
- Matroska/WebM clusters are closed every second and flushed, so a file is readable up to about the last
  second if the process is killed; PyAV writes on one thread per feed, never on the event loop.

It needs only the SDK (aiortc's depayloaders, PyAV). The server package has the same job built from the
server's own recording pieces (a reorder window for late retransmissions, VP9):
`python -m sfu.recording.job`; it is not here because the SDK never imports the server (`sfu`).
"""

from __future__ import annotations

import asyncio
import logging
from concurrent.futures import ThreadPoolExecutor
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

# mime -> (file extension, container format, stream codec)
CONTAINERS = {
    "video/VP8": ("webm", "webm", "vp8"),
    "video/H264": ("mkv", "matroska", "h264"),
    "audio/opus": ("webm", "webm", "libopus"),
}
MUX_OPTIONS = {"cluster_time_limit": "1000", "fflags": "flush_packets"}  # readable after a crash


def is_key_frame(mime: str, frame: bytes) -> bool:
    """VP8: the frame tag's P bit is 0 (RFC 6386 9.1); H.264: the access unit has an IDR slice (type 5)."""
    if mime == "video/VP8":
        return bool(frame) and not frame[0] & 0x01
    if mime == "video/H264":
        return any(nal and nal[0] & 0x1F == 5 for nal in frame.split(b"\x00\x00\x01"))
    return True


def starts_frame(mime: str, payload: bytes) -> bool:
    """VP8: S=1 and partition 0 in the payload descriptor (RFC 7741 4.2); H.264: not the middle or end of
    a fragmented NAL unit (RFC 6184 5.8). Decides whether the first packet seen after a gap is usable."""
    if not payload:
        return False
    if mime == "video/VP8":
        return bool(payload[0] & 0x10) and payload[0] & 0x07 == 0
    if mime == "video/H264" and payload[0] & 0x1F == 28:
        return len(payload) > 1 and bool(payload[1] & 0x80)
    return True


class FeedWriter:
    """One feed's file. `write` takes packets in arrival order; `mux` (on the disk thread) writes frames."""

    def __init__(self, path: Path, mime: str, clock_rate: int, payload_type: int) -> None:
        self.path = path
        self.mime = mime
        self.video = mime.startswith("video/")
        self._codec = RTCRtpCodecParameters(mimeType=mime, clockRate=clock_rate, payloadType=payload_type)
        self._time_base = Fraction(1, clock_rate)
        self._container: Any = None
        self._stream: Any = None
        self._parts: list[bytes] = []
        self._timestamp = -1  # unwrapped RTP timestamp of the frame being assembled
        self._whole = False  # its first packet was seen and no packet of it is missing
        self._last_seq = -1
        self._last_ts = -1
        self._first_ts = -1
        self._waiting = self.video  # for a key frame
        self.frames = 0
        self.dropped = 0

    def write(self, packet: RtpPacket) -> list[tuple[int, bytes]]:
        """Returns the (pts, frame) pairs this packet completed; the caller hands them to `mux`."""
        if packet.payload_type != self._codec.payloadType:
            return []  # RTX or another codec: a copy keeps to one
        seq = packet.sequence_number
        contiguous = False
        if self._last_seq >= 0:
            delta = (seq - self._last_seq) & 0xFFFF
            if delta == 0 or delta >= 0x8000:
                return []  # duplicate or late: its frame was already given up
            contiguous = delta == 1
            if not contiguous:  # lost packets: the frame they belonged to cannot be decoded
                self._whole = False
                self._waiting = self.video
        self._last_seq = seq
        out: list[tuple[int, bytes]] = []
        ts = self._unwrap(packet.timestamp)
        if ts != self._timestamp:
            self._finish(out)
            # a new frame is whole so far if the packet before it arrived (it ended the previous frame)
            # or this packet says it starts a frame
            self._timestamp = ts
            self._whole = contiguous or not self.video or starts_frame(self.mime, packet.payload)
        self._last_ts = ts
        try:
            self._parts.append(depayload(self._codec, packet.payload))
        except (ValueError, IndexError):  # a payload aiortc cannot parse
            self._whole = False
        if packet.marker or not self.video:
            self._finish(out)
        return out

    def _unwrap(self, ts: int) -> int:
        last = self._last_ts
        return ts if last < 0 else last + ((ts - last + 0x80000000) & 0xFFFFFFFF) - 0x80000000

    def _finish(self, out: list[tuple[int, bytes]]) -> None:
        parts, whole = self._parts, self._whole
        self._parts, self._whole = [], False
        if not parts:
            return
        frame = b"".join(parts)
        if not whole or not frame or (self._waiting and not is_key_frame(self.mime, frame)):
            self.dropped += 1
            if not whole:
                self._waiting = self.video
            return
        self._waiting = False
        if self._first_ts < 0:
            self._first_ts = self._timestamp
        out.append((self._timestamp - self._first_ts, frame))
        self._timestamp = -1 if self.video else self._timestamp

    def mux(self, frames: list[tuple[int, bytes]]) -> None:
        """On the disk thread: opens the file at the first frame (a key frame for video) and writes."""
        for pts, frame in frames:
            if self._container is None:
                self._open(frame)
            packet = av.Packet(frame)
            packet.stream = self._stream
            packet.pts = packet.dts = pts
            packet.time_base = self._time_base
            packet.is_keyframe = is_key_frame(self.mime, frame)
            self._container.mux(packet)
            self.frames += 1

    def _open(self, first: bytes) -> None:
        _ext, fmt, codec = CONTAINERS[self.mime]
        self._container = av.open(str(self.path), "w", format=fmt, options=MUX_OPTIONS)
        if codec == "libopus":  # the encoder is never used: it only gives the muxer its OpusHead
            self._stream = self._container.add_stream(codec, rate=self._codec.clockRate)
        else:  # the container header wants the picture size: decode the first (key) frame once
            decoder: Any = av.CodecContext.create(codec, "r")
            pictures = decoder.decode(av.Packet(first))
            width, height = (pictures[0].width, pictures[0].height) if pictures else (16, 16)
            self._stream = self._container.add_mux_stream(codec, width=width, height=height)
        self._stream.time_base = self._time_base

    def close(self) -> None:
        """On the disk thread: writes the cues and the duration; the file is final afterwards."""
        if self._container is not None:
            self._container.close()
            self._container = None


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
    loop = asyncio.get_running_loop()
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"record-{raw.feed_id}") as disk:
        try:
            await raw.request_key_frame()
            written = 0
            async for packet in raw.packets():
                frames = writer.write(packet)
                if not frames:
                    continue
                if max_frames is not None:
                    frames = frames[: max_frames - written]
                written += len(frames)
                await loop.run_in_executor(disk, writer.mux, frames)
                if max_frames is not None and written >= max_frames:
                    break
        finally:
            await loop.run_in_executor(disk, writer.close)
    log.info("%s: %d frames (%d dropped) in %s", raw.feed_id, writer.frames, writer.dropped, path)
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
        tasks.add(asyncio.create_task(record_feed(raw, args.out), name=f"record-{feed_id}"))

    async with await client_sdk.connect(args.url, token=jwt, auto_subscribe=False) as session:
        for feed_id in list(session.feeds_by_id):
            await start(session, feed_id)
        async for event in session.events():
            if isinstance(event, client_sdk.FeedPublished):
                await start(session, event.feed.feed_id)
    await asyncio.gather(*tasks, return_exceptions=True)


if __name__ == "__main__":
    asyncio.run(main())
