"""Codec-copy muxing of one feed's frames with PyAV: WebM for VP8/VP9/Opus, Matroska for H.264.

Crash safety: Matroska clusters are closed every `CLUSTER_TIME_LIMIT_MS` (or `CLUSTER_SIZE_LIMIT` bytes)
and the IO buffer is flushed after every packet (`fflags=flush_packets`), so after a SIGKILL the file is
readable up to its last closed cluster: about a second is lost (measured in
tests/integration/recording/test_crash_safety.py). A clean `close()` writes the cues and the duration.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any, Final

import av

from sfu.recording.bitstream import h264_dimensions, vp8_dimensions, vp9_dimensions
from sfu.recording.depacketize import Frame

CLUSTER_TIME_LIMIT_MS: Final = 1000
CLUSTER_SIZE_LIMIT: Final = 1 << 20
MAX_JUMP_S: Final = 60.0  # a larger timestamp jump is a publisher restart, not a pause
SAME_INSTANT_MS: Final = 10  # a key frame this close after the previous frame replaces it (layer switch)
# mime -> (container format, file extension, PyAV stream codec)
CONTAINERS: Final[dict[str, tuple[str, str, str]]] = {
    "video/vp8": ("webm", "webm", "vp8"),
    "video/vp9": ("webm", "webm", "vp9"),
    "video/h264": ("matroska", "mkv", "h264"),
    "audio/opus": ("webm", "webm", "libopus"),
}


def can_record(codec: str) -> bool:
    return codec.lower() in CONTAINERS


def file_extension(codec: str) -> str:
    return CONTAINERS[codec.lower()][1]


@dataclass(slots=True)
class FileStats:
    """What the manifest says about one file; written by the worker, read on the loop after `finish`."""

    name: str
    codec: str
    kind: str
    clock_rate: int
    started_at: float = 0.0  # wall clock (unix s) of the first frame's arrival
    frames: int = 0
    size: int = 0
    duration_ms: int = 0
    error: str | None = None
    drops: dict[str, int] = field(default_factory=dict)


def _dimensions(codec: str, key_frame: bytes) -> dict[str, int]:
    """Picture size for the track header; the decoder reads the real one from the bitstream anyway."""
    if codec == "vp8":
        width, height = vp8_dimensions(key_frame)
    elif codec == "h264":
        width, height = h264_dimensions(key_frame)
    else:
        width, height = vp9_dimensions(key_frame)
    if not (width and height):
        width, height = 16, 16  # NOTE: the Matroska muxer refuses video without a size
    return {"width": width, "height": height}


class FeedFile:
    """The container of one feed, opened at its first frame; holds one frame back to know its duration.

    Not thread-safe: one thread writes (a recorder's worker, or an SDK recording task's executor).
    """

    __slots__ = ("_container", "_first_ts", "_held", "_last_pts", "_min_step", "_offset", "_on_open",
                 "_same_instant", "_stream", "_time_base", "clock_rate", "codec", "kind", "path", "stats")

    def __init__(self, path: Path, codec: str, kind: str, clock_rate: int, stats: FileStats,
                 on_open: Callable[[Frame], None] | None = None) -> None:
        self.path = path
        self.codec = codec
        self.kind = kind
        self.clock_rate = clock_rate
        self.stats = stats
        self._on_open = on_open
        self._container: Any = None
        self._stream: Any = None
        self._time_base = Fraction(1, clock_rate)
        self._first_ts = 0
        self._offset = 0  # added to (ts - first ts) after a timestamp discontinuity
        self._last_pts = -1
        self._held: tuple[int, Frame] | None = None
        self._min_step = max(1, clock_rate // 1000)  # one tick of the container's 1 ms time base
        self._same_instant = clock_rate * SAME_INSTANT_MS // 1000

    def write(self, frame: Frame) -> None:
        if self._container is None:
            self._open(frame)
        pts = frame.ts - self._first_ts + self._offset
        last = self._last_pts
        if last >= 0 and not 0 < pts - last < MAX_JUMP_S * self.clock_rate:
            # publisher restart or clock jump: continue right after the previous frame
            step = self._held_step()
            self._offset += last + step - pts
            pts = last + step
        elif self._held is not None and frame.key_frame and pts - last < self._same_instant:
            # a simulcast switch: the new layer's key frame shows the instant of the old layer's last frame
            # (the munger moved it a tick on); it takes that frame's place instead of a 1 ms picture
            self._held = (last, frame)
            self.stats.drops["superseded"] = self.stats.drops.get("superseded", 0) + 1
            return
        elif last >= 0 and pts - last < self._min_step:
            pts = last + self._min_step  # Matroska counts in ms: every frame gets its own millisecond
        if self._held is not None:
            self._mux(self._held[0], self._held[1], pts - self._held[0])
        self._held = (pts, frame)
        self._last_pts = pts

    def _held_step(self) -> int:
        return max(1, self.clock_rate // (50 if self.kind == "audio" else 30))

    def _open(self, frame: Frame) -> None:
        fmt, _ext, codec = CONTAINERS[self.codec.lower()]
        options = {
            "cluster_time_limit": str(CLUSTER_TIME_LIMIT_MS),
            "cluster_size_limit": str(CLUSTER_SIZE_LIMIT),
            "fflags": "flush_packets",
        }
        container = av.open(str(self.path), "w", format=fmt, options=options)
        try:
            if codec == "libopus":
                # NOTE: the encoder context is opened (never used) only so the muxer gets an OpusHead.
                stream: Any = container.add_stream(codec, rate=48000)
            else:
                stream = container.add_mux_stream(codec, **_dimensions(codec, frame.data))
            stream.time_base = self._time_base
        except BaseException:
            container.close()
            raise
        self._container = container
        self._stream = stream
        self._first_ts = frame.ts
        if self._on_open is not None:
            self._on_open(frame)

    def _mux(self, pts: int, frame: Frame, duration: int) -> None:
        packet = av.Packet(frame.data)
        packet.stream = self._stream
        packet.pts = packet.dts = pts
        packet.duration = duration
        packet.time_base = self._time_base
        packet.is_keyframe = frame.key_frame
        self._container.mux(packet)
        stats = self.stats
        stats.frames += 1
        stats.size += len(frame.data)
        stats.duration_ms = (pts + duration) * 1000 // self.clock_rate

    def close(self) -> None:
        """Writes the held frame and the trailer (cues, duration); the file is final afterwards."""
        if self._container is None:
            return
        if self._held is not None:
            pts, frame = self._held
            self._held = None
            self._mux(pts, frame, self._held_step())
        container, self._container = self._container, None
        container.close()
        self.stats.size = self.path.stat().st_size

    def abort(self) -> None:
        """After a write error: close what can be closed, never raise."""
        container, self._container = self._container, None
        if container is not None:
            with contextlib.suppress(Exception):  # the disk that failed the write may fail the trailer too
                container.close()
