"""One FeedRecorder per recorded feed: attached to the feed's Receiver like a forwarder, muxing in a thread.

On the event loop `forward` only appends the packet (an immutable `bytes`, shared, not copied) to a
bounded deque; when the deque is full the packet is counted and dropped, so a slow disk never slows the
loop. A worker thread depacketizes (sfu/recording/depacketize.py) and muxes with PyAV as a codec copy: no
decoder, no encoder, the bytes the publisher sent go into the file (WebM for VP8/VP9/Opus, Matroska for
H.264).

Crash safety: Matroska clusters are closed every `CLUSTER_TIME_LIMIT_MS` (or `CLUSTER_SIZE_LIMIT` bytes)
and the IO buffer is flushed after every packet (`fflags=flush_packets`), so after a SIGKILL the file is
readable up to its last closed cluster: at most about a second is lost. A clean `finish()` writes the
cues and the duration.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Protocol, cast

import av

from sfu.recording.depacketize import Depacketizer, Frame, FrameDrop

if TYPE_CHECKING:
    from sfu.media.forwarder import Forwarder
    from sfu.media.receiver import Receiver

log = logging.getLogger("sfu.recording")

MAX_QUEUED_PACKETS: Final = 4096  # ~10 s of 2 Mbit/s video: the worker is far behind if this fills
CLUSTER_TIME_LIMIT_MS: Final = 1000
CLUSTER_SIZE_LIMIT: Final = 1 << 20
POLL_S: Final = 0.01
MAX_JUMP_S: Final = 60.0  # a larger timestamp jump is a publisher restart, not a pause
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


class FeedRecorderListener(Protocol):
    """What a recording implements; called on the event loop (the worker posts through the loop)."""

    def on_recorder_file_opened(self, recorder: FeedRecorder) -> None: ...

    def on_recorder_failed(self, recorder: FeedRecorder, error: str) -> None: ...


class FeedRecorder:
    """Records one feed to `path`; `start()` attaches it to the receiver, `finish()` finalizes the file."""

    __slots__ = (
        "_stopping",
        "_thread",
        "_wall_offset_ns",
        "anchor_ns",
        "anchor_ts",
        "clock_rate",
        "codec",
        "failed",
        "feed_id",
        "kind",
        "listener",
        "loop",
        "path",
        "queue",
        "queue_drops",
        "receiver",
        "stats",
        "uid",
    )

    def __init__(self, receiver: Receiver, path: Path, *, feed_id: str, uid: str,
                 listener: FeedRecorderListener, loop: asyncio.AbstractEventLoop) -> None:
        self.receiver = receiver
        self.path = path
        self.feed_id = feed_id
        self.uid = uid
        self.codec = receiver.codec
        self.kind = receiver.kind
        self.clock_rate = receiver.clock_rate
        self.listener = listener
        self.loop = loop
        self.queue: deque[bytes] = deque()
        self.queue_drops = 0
        self.failed = False
        self.anchor_ns = 0  # monotonic arrival of the first queued packet
        self.anchor_ts = 0  # its RTP timestamp
        self._wall_offset_ns = time.time_ns() - time.monotonic_ns()
        self.stats = FileStats(path.name, self.codec, self.kind, self.clock_rate)
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"record-{feed_id}", daemon=True)

    # -- event loop side ---------------------------------------------------------------------------------

    def start(self) -> None:
        """Starts the worker, joins the receiver's fan-out and asks for a key frame to begin with."""
        self._thread.start()
        # NOTE: Receiver.forwarders is typed as Forwarder; it only calls forward() and stop() on them.
        self.receiver.add_forwarder(cast("Forwarder", self))
        self.receiver.request_key_frame(time.monotonic_ns())

    def forward(self, data: bytes, seq: int, ts: int, key_frame: bool, now_ns: int) -> None:
        """Per packet, on the loop: one append to a bounded deque (the `bytes` object is shared)."""
        if self.failed:
            return
        queue = self.queue
        if len(queue) >= MAX_QUEUED_PACKETS:
            self.queue_drops += 1
            return
        if not self.anchor_ns:
            self.anchor_ns = now_ns
            self.anchor_ts = ts
        queue.append(data)

    def stop(self) -> None:
        """The receiver's resync call (mute toggled, receiver closing): resume on a fresh key frame."""
        if not self.receiver.muted and not self._stopping.is_set():
            self.receiver.request_key_frame(time.monotonic_ns())

    async def finish(self) -> FileStats:
        """Detaches, lets the worker drain and close the file; returns its final stats. Idempotent."""
        self.receiver.remove_forwarder(cast("Forwarder", self))
        self._stopping.set()
        if self._thread.is_alive():
            await asyncio.to_thread(self._thread.join)
        self.stats.drops["queue_full"] = self.queue_drops
        return self.stats

    # -- worker thread -----------------------------------------------------------------------------------

    def _run(self) -> None:
        depacketizer = Depacketizer(self.codec)
        writer = FeedFile(self)
        queue = self.queue
        try:
            while True:
                while queue:
                    for frame in depacketizer.push(queue.popleft()):
                        writer.write(frame)
                if self._stopping.is_set() and not queue:
                    break
                self._stopping.wait(POLL_S)
            for frame in depacketizer.flush():
                writer.write(frame)
            writer.close()
        except Exception as exc:  # disk full, unwritable directory, muxer refusal: this file stops
            self.failed = True
            queue.clear()
            error = _describe(exc)
            self.stats.error = error
            writer.abort()
            log.warning("recording of feed %s failed: %s", self.feed_id, error)
            self._call_loop(self.listener.on_recorder_failed, self, error)
        finally:
            self.stats.drops.update({d.name.lower(): depacketizer.drops[d] for d in FrameDrop})

    def _call_loop(self, callback: Callable[..., None], *args: Any) -> None:
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody is left to tell
            self.loop.call_soon_threadsafe(callback, *args)

    def wall_time_of(self, ts: int) -> float:
        """Wall clock (unix s) when a frame with unwrapped RTP timestamp `ts` arrived, from the anchor."""
        offset_ns = (ts - self.anchor_ts) * 1_000_000_000 // self.clock_rate
        return (self.anchor_ns + self._wall_offset_ns + offset_ns) / 1e9


def _describe(exc: Exception) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror.lower()
    return str(exc).lower() or type(exc).__name__


def vp8_dimensions(frame: bytes) -> tuple[int, int]:
    """Width and height from a VP8 key frame header (RFC 6386 section 9.1), (0, 0) if not one."""
    if len(frame) < 10 or frame[0] & 1 or frame[3:6] != b"\x9d\x01\x2a":
        return 0, 0
    return int.from_bytes(frame[6:8], "little") & 0x3FFF, int.from_bytes(frame[8:10], "little") & 0x3FFF


class FeedFile:
    """The container of one feed, opened at its first frame; holds one frame back to know its duration."""

    __slots__ = ("_container", "_first_ts", "_held", "_last_pts", "_offset", "_recorder", "_stream",
                 "_time_base")

    def __init__(self, recorder: FeedRecorder) -> None:
        self._recorder = recorder
        self._container: Any = None
        self._stream: Any = None
        self._time_base = Fraction(1, recorder.clock_rate)
        self._first_ts = 0
        self._offset = 0  # added to (ts - first ts) after a timestamp discontinuity
        self._last_pts = -1
        self._held: tuple[int, Frame] | None = None

    def write(self, frame: Frame) -> None:
        if self._container is None:
            self._open(frame)
        pts = frame.ts - self._first_ts + self._offset
        last = self._last_pts
        if last >= 0 and not 0 < pts - last < MAX_JUMP_S * self._recorder.clock_rate:
            # publisher restart or clock jump: continue right after the previous frame
            step = self._held_step()
            self._offset += last + step - pts
            pts = last + step
        if self._held is not None:
            self._mux(self._held[0], self._held[1], pts - self._held[0])
        self._held = (pts, frame)
        self._last_pts = pts

    def _held_step(self) -> int:
        return max(1, self._recorder.clock_rate // (50 if self._recorder.kind == "audio" else 30))

    def _open(self, frame: Frame) -> None:
        recorder = self._recorder
        fmt, _ext, codec = CONTAINERS[recorder.codec.lower()]
        options = {
            "cluster_time_limit": str(CLUSTER_TIME_LIMIT_MS),
            "cluster_size_limit": str(CLUSTER_SIZE_LIMIT),
            "fflags": "flush_packets",
        }
        container = av.open(str(recorder.path), "w", format=fmt, options=options)
        try:
            if codec == "libopus":
                # NOTE: the encoder context is opened (never used) only so the muxer gets an OpusHead.
                stream: Any = container.add_stream(codec, rate=48000)
            else:
                width, height = vp8_dimensions(frame.data) if codec == "vp8" else (0, 0)
                stream = container.add_mux_stream(codec, width=width, height=height)
            stream.time_base = self._time_base
        except BaseException:
            container.close()
            raise
        self._container = container
        self._stream = stream
        self._first_ts = frame.ts
        recorder.stats.started_at = recorder.wall_time_of(frame.ts)
        recorder._call_loop(recorder.listener.on_recorder_file_opened, recorder)

    def _mux(self, pts: int, frame: Frame, duration: int) -> None:
        packet = av.Packet(frame.data)
        packet.stream = self._stream
        packet.pts = packet.dts = pts
        packet.duration = duration
        packet.time_base = self._time_base
        packet.is_keyframe = frame.key_frame
        self._container.mux(packet)
        stats = self._recorder.stats
        stats.frames += 1
        stats.size += len(frame.data)
        stats.duration_ms = (pts + duration) * 1000 // self._recorder.clock_rate

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
        self._recorder.stats.size = self._recorder.path.stat().st_size

    def abort(self) -> None:
        """After a write error: close what can be closed, never raise."""
        container, self._container = self._container, None
        if container is not None:
            with contextlib.suppress(Exception):  # the disk that failed the write may fail the trailer too
                container.close()
