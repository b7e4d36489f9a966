"""Active speakers of a session, sampled from the audio receivers' rings ten times a second.

The packet path stays untouched: the ring keeps every audio packet with the server's own extension ids
(`ROUTER_EXTENSION_IDS`), so the level (RFC 6464) is read here, off the hot loop, from the packets that
arrived since the last sample. Ranking and rate limiting (at most 4 reports a second, only on change)
are `ActiveSpeakerDetector`'s.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from sfu.media.rtp import ROUTER_EXTENSION_IDS, SEQ_MASK, URI_AUDIO_LEVEL
from sfu.media.speakers import ActiveSpeakerDetector, AudioLevelMeter, Speaker, audio_level

if TYPE_CHECKING:
    from sfu.media.receiver import Receiver

SAMPLE_INTERVAL_S = 0.1
LEVEL_EXT_ID = ROUTER_EXTENSION_IDS[URI_AUDIO_LEVEL]


class _Source:
    __slots__ = ("meter", "next_seq", "receiver", "uid")

    def __init__(self, uid: str, receiver: Receiver) -> None:
        self.uid = uid
        self.receiver = receiver
        self.meter = AudioLevelMeter()
        self.next_seq = -1


class SpeakerWatch:
    """Owned by SessionMedia: runs while the session has audio feeds; `close()` stops it."""

    def __init__(self, on_change: Callable[[tuple[Speaker, ...]], None]) -> None:
        self._on_change = on_change
        self._sources_by_feed: dict[str, _Source] = {}
        self._detector = ActiveSpeakerDetector()
        self._task: asyncio.Task[None] | None = None

    def add(self, feed_id: str, uid: str, receiver: Receiver) -> None:
        self._sources_by_feed[feed_id] = _Source(uid, receiver)
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="active-speakers")

    def remove(self, feed_id: str) -> None:
        self._sources_by_feed.pop(feed_id, None)

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(SAMPLE_INTERVAL_S)
            self.sample(time.monotonic_ns() // 1_000_000)

    def sample(self, now_ms: int) -> None:
        """Feeds the new packets' levels to the meters and reports a changed speaker list."""
        meters_by_uid: dict[str, AudioLevelMeter] = {}
        for source in self._sources_by_feed.values():
            receiver = source.receiver
            if receiver.packets and not receiver.muted:
                _read_levels(source, receiver, now_ms)
            current = meters_by_uid.get(source.uid)
            if current is None or source.meter.level(now_ms) > current.level(now_ms):
                meters_by_uid[source.uid] = source.meter
        speakers = self._detector.update(meters_by_uid, now_ms)
        if speakers is not None:
            self._on_change(speakers)

    async def close(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._sources_by_feed.clear()


def _read_levels(source: _Source, receiver: Receiver, now_ms: int) -> None:
    highest = receiver.highest_seq
    ring = receiver.ring
    start = source.next_seq if source.next_seq >= 0 else highest
    count = min((highest - start) & SEQ_MASK, ring.size - 1) + 1
    if (highest - start) & SEQ_MASK >= 0x8000:  # nothing new (or the stream restarted behind us)
        count = 0
    seq = (highest - count + 1) & SEQ_MASK
    for _ in range(count):
        packet = ring.get(seq)
        if packet is not None:
            level = audio_level(packet, LEVEL_EXT_ID)
            if level is not None:
                source.meter.observe(level, now_ms)
        seq = (seq + 1) & SEQ_MASK
    source.next_seq = (highest + 1) & SEQ_MASK
