"""One FeedRecorder per recorded feed: attached to the feed's Receiver like a forwarder, muxing in a thread.

On the event loop `forward` only appends the packet (an immutable `bytes`, shared, not copied) to a
bounded deque; when the deque is full the packet is counted and dropped, so a slow disk never slows the
loop. A worker thread depacketizes (sfu/recording/depacketize.py) and muxes with PyAV as a codec copy: no
decoder, no encoder, the bytes the publisher sent go into the file (WebM for VP8/VP9/Opus, Matroska for
H.264).

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
from typing import TYPE_CHECKING, Any, Final, Protocol, cast

from sfu.recording.depacketize import Depacketizer, Frame, FrameDrop
from sfu.recording.mux import FeedFile, FileStats

if TYPE_CHECKING:
    from sfu.media.forwarder import Forwarder
    from sfu.media.receiver import Receiver

log = logging.getLogger("sfu.recording")

MAX_QUEUED_PACKETS: Final = 4096  # ~10 s of 2 Mbit/s video: the worker is far behind if this fills
POLL_S: Final = 0.01


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

    def forward(self, data: bytes, seq: int, ts: int, key_frame: bool, now_ns: int, layer: int = 0) -> None:
        """Per packet, on the loop: one append to a bounded deque (the `bytes` object is shared).

        Simulcast: the layers' receivers share their head's forwarders and pass `layer`; a recorder is not
        layer-aware and keeps layer 0, one SSRC with one seq/ts space (what `update_wanted_layers` expects).
        """
        if layer or self.failed:
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
        writer = FeedFile(self.path, self.codec, self.kind, self.clock_rate, self.stats, self._on_file_opened)
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

    def _on_file_opened(self, frame: Frame) -> None:
        self.stats.started_at = self.wall_time_of(frame.ts)
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
