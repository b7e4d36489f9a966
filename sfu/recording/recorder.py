"""One FeedRecorder per recorded feed: a `Forwarder` whose sink is a file, muxing in a thread.

The recorder *is* a forwarder (sfu/media/forwarder.py) of the feed, so it follows simulcast exactly as a
subscriber does: its `SimulcastSelector` targets the highest layer that arrives (no preference, no
bandwidth cap), it switches only on a key frame of the target, falls back when the publisher check finds
the top layer gone (LAYER_TIMEOUT_NS + one RTCP tick, under a second) and goes back up on the next key
frame of the returning layer; the `Munger` re-bases seq and timestamp at each switch, mute and restart
(continuing the timestamp by the wall-clock time elapsed), so the worker sees one continuous RTP stream.
Dynacast counts the recorder as a consumer that wants the top layer. A resolution change at a switch is
legal inside one VP8/VP9/H.264 track: decoders take the new size from the key frame.

On the event loop the sink only appends the forwarder's rewritten packet to a bounded deque; when the
deque is full the packet is counted and dropped, so a slow disk never slows the loop. A worker thread
depacketizes (sfu/recording/depacketize.py) and muxes with PyAV as a codec copy: no decoder, no encoder,
the bytes the publisher sent go into the file (WebM for VP8/VP9/Opus, Matroska for H.264).

Crash safety comes from the container settings in sfu/recording/mux.py; a clean `finish()` writes the cues
and the duration.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Protocol

from sfu.media.forwarder import Forwarder
from sfu.recording.depacketize import Depacketizer, Frame, FrameDrop
from sfu.recording.mux import FeedFile, FileStats

if TYPE_CHECKING:
    from sfu.media.receiver import Receiver

log = logging.getLogger("sfu.recording")

MAX_QUEUED_PACKETS: Final = 4096  # ~10 s of 2 Mbit/s video: the worker is far behind if this fills
POLL_S: Final = 0.01


class FeedRecorderListener(Protocol):
    """What a recording implements; called on the event loop (the worker posts through the loop)."""

    def on_recorder_file_opened(self, recorder: FeedRecorder) -> None: ...

    def on_recorder_failed(self, recorder: FeedRecorder, error: str) -> None: ...


class _QueueSink:
    """The recorder's `RtpSink`: one bounded append per packet; refuses everything once the file failed."""

    __slots__ = ("connected", "drops", "queue", "recorder")

    def __init__(self, recorder: FeedRecorder) -> None:
        self.recorder = recorder
        self.queue: deque[bytearray] = deque()
        self.connected = True
        self.drops = 0

    def send_rtp(self, packet: bytearray) -> bool:
        queue = self.queue
        if len(queue) >= MAX_QUEUED_PACKETS:
            self.drops += 1
            return False
        if not self.connected:  # the file failed: the forwarder counts these as not connected
            return False
        if not queue and not self.recorder.anchor_ns:
            self.recorder.set_anchor()
        queue.append(packet)
        return True


class FeedRecorder(Forwarder):
    """Records one feed to `path`; `start()` attaches it to the receiver, `finish()` finalizes the file."""

    __slots__ = (
        "_stopping",
        "_thread",
        "_wall_offset_ns",
        "anchor_ns",
        "anchor_ts",
        "codec",
        "failed",
        "feed_id",
        "file_stats",
        "frames_in",
        "listener",
        "loop",
        "path",
        "queue",
        "queue_sink",
        "uid",
    )

    def __init__(self, receiver: Receiver, path: Path, *, feed_id: str, uid: str,
                 listener: FeedRecorderListener, loop: asyncio.AbstractEventLoop) -> None:
        sink = _QueueSink(self)
        super().__init__(receiver, sink, mid=f"record-{feed_id}", ssrc=1, payload_type=receiver.payload_type,
                         initial_seq=0, initial_ts=0)
        self.queue_sink = sink
        self.queue = sink.queue
        self.path = path
        self.feed_id = feed_id
        self.uid = uid
        self.codec = receiver.codec
        self.listener = listener
        self.loop = loop
        self.failed = False
        self.frames_in = 0  # frames the worker assembled from what was forwarded (before muxing)
        self.anchor_ns = 0  # monotonic arrival of the first queued packet
        self.anchor_ts = 0  # its (rewritten) RTP timestamp
        self._wall_offset_ns = time.time_ns() - time.monotonic_ns()
        self.file_stats = FileStats(path.name, self.codec, self.kind, self.clock_rate)
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"record-{feed_id}", daemon=True)

    @property
    def queue_drops(self) -> int:
        return self.queue_sink.drops

    # -- event loop side ---------------------------------------------------------------------------------

    def start(self) -> None:
        """Starts the worker, joins the receiver's fan-out and asks for a key frame to begin with."""
        self._thread.start()
        self.receiver.add_forwarder(self)
        target = self.selector.target_layer
        self.layers[target if target >= 0 else 0].request_key_frame(time.monotonic_ns())

    def set_anchor(self) -> None:
        """The first packet to go to the file: the wall-clock anchor of its (rewritten) timestamp."""
        self.anchor_ns = self.last_out_ns
        self.anchor_ts = self.last_ts_out

    async def finish(self) -> FileStats:
        """Detaches, lets the worker drain and close the file; returns its final stats. Idempotent."""
        self.receiver.remove_forwarder(self)
        self._stopping.set()
        if self._thread.is_alive():
            await asyncio.to_thread(self._thread.join)
        self.file_stats.drops["queue_full"] = self.queue_drops
        return self.file_stats

    # -- worker thread -----------------------------------------------------------------------------------

    def _run(self) -> None:
        depacketizer = Depacketizer(self.codec)
        writer = FeedFile(self.path, self.codec, self.kind, self.clock_rate, self.file_stats,
                          self._on_file_opened)
        queue = self.queue
        try:
            while True:
                while queue:
                    for frame in depacketizer.push(bytes(queue.popleft())):
                        writer.write(frame)
                if self._stopping.is_set() and not queue:
                    break
                self._stopping.wait(POLL_S)
            for frame in depacketizer.flush():
                writer.write(frame)
            writer.close()
        except Exception as exc:  # disk full, unwritable directory, muxer refusal: this file stops
            self.failed = True
            self.queue_sink.connected = False  # the forwarder stops queueing (counted as not connected)
            queue.clear()
            error = _describe(exc)
            self.file_stats.error = error
            writer.abort()
            log.warning("recording of feed %s failed: %s", self.feed_id, error)
            self._call_loop(self.listener.on_recorder_failed, self, error)
        finally:
            self.frames_in = depacketizer.frames
            self.file_stats.drops.update({d.name.lower(): depacketizer.drops[d] for d in FrameDrop})

    def _on_file_opened(self, frame: Frame) -> None:
        self.file_stats.started_at = self.wall_time_of(frame.ts)
        self._call_loop(self.listener.on_recorder_file_opened, self)

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
