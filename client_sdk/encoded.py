"""Publish pre-encoded media with aiortc: tracks whose `recv()` returns `av.Packet`s, paced in real time.

aiortc's `RTCRtpSender` only re-packetizes an `av.Packet` (`codec.pack(packet)`, pts converted from the
packet's `time_base` to the RTP clock); it encodes only `av.Frame`s. So a publisher costs no codec time,
which is what load tests need. Unlike `MediaPlayer(decode=False, loop=True)`, whose timestamps restart
at 0 after the first pass, these tracks keep pts increasing across loops.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any, Final

import av
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

VIDEO_CLOCK_RATE: Final = 90000
AUDIO_CLOCK_RATE: Final = 48000
SUPPORTED_CODECS: Final = {"vp8": "video", "h264": "video", "opus": "audio"}  # what aiortc can packetize
MAX_LAG_S: Final = 0.5  # further behind than this (a stalled loop), pacing restarts instead of bursting


@dataclass(frozen=True, slots=True)
class EncodedFrame:
    """One encoded frame (a VP8 frame, an H.264 access unit in Annex B, an Opus packet)."""

    data: bytes
    pts: int
    keyframe: bool


@dataclass(frozen=True, slots=True)
class EncodedClip:
    """Encoded frames of one stream; `duration_pts` is the length of one pass, for looping."""

    codec: str  # "vp8", "h264" or "opus"
    time_base: Fraction
    frames: tuple[EncodedFrame, ...]
    duration_pts: int
    width: int = 0
    height: int = 0
    sample_rate: int = 0
    channels: int = 0

    @property
    def kind(self) -> str:
        return "audio" if self.codec == "opus" else "video"

    @property
    def total_bytes(self) -> int:
        return sum(len(f.data) for f in self.frames)

    @property
    def duration_s(self) -> float:
        return float(self.duration_pts * self.time_base)


class _EncodedTrack(MediaStreamTrack):
    """Replays a clip's packets at their pts, in real time, counting what it hands to the sender."""

    def __init__(self, clip: EncodedClip, loop: bool = True) -> None:
        if clip.kind != self.kind:
            raise ValueError(f"a {clip.codec} clip cannot feed a {self.kind} track")
        if not clip.frames:
            raise ValueError("the clip has no frames")
        super().__init__()
        self.clip = clip
        self.loop = loop
        self.frames_sent = 0
        self.bytes_sent = 0
        self.keyframes_sent = 0
        self.loops = 0
        self._index = 0
        self._offset_pts = 0
        self._start_s: float | None = None
        self._seconds_per_tick = float(clip.time_base)

    async def recv(self) -> av.Packet[Any]:
        """The next packet, once its time has come; pts keep increasing across loops."""
        if self.readyState != "live":
            raise MediaStreamError
        frames = self.clip.frames
        if self._index >= len(frames):
            if not self.loop:
                self.stop()
                raise MediaStreamError
            self._index = 0
            self._offset_pts += self.clip.duration_pts
            self.loops += 1
        frame = frames[self._index]
        self._index += 1
        pts = frame.pts + self._offset_pts
        due_offset_s = pts * self._seconds_per_tick
        now_s = asyncio.get_running_loop().time()
        if self._start_s is None or now_s - (self._start_s + due_offset_s) > MAX_LAG_S:
            self._start_s = now_s - due_offset_s
        delay_s = self._start_s + due_offset_s - now_s
        if delay_s > 0:
            await asyncio.sleep(delay_s)
            if self.readyState != "live":  # stopped while waiting: the counters stay what was handed out
                raise MediaStreamError
        packet = av.Packet(frame.data)
        packet.pts = pts
        packet.dts = pts
        packet.time_base = self.clip.time_base
        packet.is_keyframe = frame.keyframe
        self.frames_sent += 1
        self.bytes_sent += len(frame.data)
        self.keyframes_sent += frame.keyframe
        return packet


class EncodedVideoTrack(_EncodedTrack):
    """A video track replaying a VP8 or H.264 clip without encoding."""

    kind = "video"


class EncodedAudioTrack(_EncodedTrack):
    """An audio track replaying an Opus clip without encoding."""

    kind = "audio"


def _annexb_filter(stream: Any) -> Any:
    """H.264 from MP4/MKV is length-prefixed (avcC); aiortc's packetizer wants Annex B start codes."""
    extradata = stream.codec_context.extradata
    if extradata and extradata[0] == 1:
        from av.bitstream import BitStreamFilterContext

        return BitStreamFilterContext("h264_mp4toannexb", stream)
    return None


def _clip_from_packets(stream: Any, packets: list[Any]) -> EncodedClip:
    ctx = stream.codec_context
    audio = stream.type == "audio"
    clock = AUDIO_CLOCK_RATE if audio else VIDEO_CLOCK_RATE
    tb = stream.time_base
    stamps = [p.pts if p.pts is not None else p.dts for p in packets]
    first = next((s for s in stamps if s is not None), 0)
    frames = []
    last = 0
    for p, stamp in zip(packets, stamps, strict=True):
        pts = last if stamp is None else round((stamp - first) * tb * clock)
        frames.append(EncodedFrame(bytes(p), pts, bool(p.is_keyframe) or audio))
        last = pts
    if len(frames) > 1:
        step = (frames[-1].pts - frames[0].pts) // (len(frames) - 1)
    else:
        step = clock // 50 if audio else clock // 30
    duration = packets[-1].duration
    if duration:
        step = round(duration * tb * clock)
    return EncodedClip(
        ctx.name,
        Fraction(1, clock),
        tuple(frames),
        max(f.pts for f in frames) + max(step, 1),
        width=0 if audio else ctx.width,
        height=0 if audio else ctx.height,
        sample_rate=ctx.sample_rate if audio else 0,
        channels=ctx.channels if audio else 0,
    )


def from_file(path: str | Path) -> list[EncodedClip]:
    """The first VP8/H.264 and first Opus stream of a WebM/MKV/MP4 file, demuxed (never decoded).

    Video comes first. Raises ValueError if the file has neither.
    """
    with av.open(str(path)) as container:
        chosen: dict[str, Any] = {}
        for stream in container.streams:
            kind = SUPPORTED_CODECS.get(stream.codec_context.name)
            if kind is not None and kind == stream.type and kind not in chosen:
                chosen[kind] = stream
        if not chosen:
            raise ValueError("the file has no VP8, H.264 or Opus stream")
        filters = {s.index: _annexb_filter(s) for s in chosen.values() if s.codec_context.name == "h264"}
        packets_by_index: dict[int, list[Any]] = {s.index: [] for s in chosen.values()}
        for packet in container.demux(*chosen.values()):
            if packet.size == 0:
                continue
            bsf = filters.get(packet.stream.index)
            out = bsf.filter(packet) if bsf is not None else [packet]
            packets_by_index[packet.stream.index].extend(p for p in out if p.size)
        return [
            _clip_from_packets(chosen[kind], packets_by_index[chosen[kind].index])
            for kind in ("video", "audio")
            if kind in chosen and packets_by_index[chosen[kind].index]
        ]
