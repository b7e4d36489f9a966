"""Active speakers from the audio level header extension, without decoding audio.

Publishers put the level of every audio packet in the RFC 6464 `ssrc-audio-level` extension. The
packet path reads it with `audio_level` (ext id resolved at bind time), each audio feed's
`AudioLevelMeter` smooths it over ~500 ms, and one `ActiveSpeakerDetector` per session ranks the
meters and reports the ordered speaker list when it changes, at most 4 times a second.
Time is a parameter everywhere (`now_ms`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final, NamedTuple

# RFC 8285 section 4.2 (one-byte) / 4.3 (two-byte) header extension profiles
ONE_BYTE_PROFILE: Final = 0xBEDE
TWO_BYTE_PROFILE_MASK: Final = 0xFFF0
TWO_BYTE_PROFILE: Final = 0x1000

SILENCE_DBOV: Final = 127
WINDOW_MS: Final = 500
BUCKET_MS: Final = 50
BUCKETS: Final = WINDOW_MS // BUCKET_MS
PACKET_MS: Final = 20  # Opus default ptime: a full window holds WINDOW_MS // PACKET_MS levels
NOISE_FLOOR_DBOV: Final = 70  # levels this quiet or quieter count as silence


def audio_level(packet: bytes, ext_id: int) -> int | None:
    """The -dBov level 0..127 (RFC 6464 section 3) in extension `ext_id`, or None if absent/malformed.

    Walks only the RTP header extension block (RFC 8285 section 4), stopping at the element wanted.
    """
    size = len(packet)
    if size < 12 or not packet[0] & 0x10:
        return None
    start = 16 + ((packet[0] & 0x0F) << 2)  # fixed header + CSRCs + the extension's 4-byte header
    if start > size:
        return None
    profile = packet[start - 4] << 8 | packet[start - 3]
    end = start + ((packet[start - 2] << 8 | packet[start - 1]) << 2)
    if end > size:
        return None
    if profile == ONE_BYTE_PROFILE:
        return _one_byte_value(packet, start, end, ext_id)
    if profile & TWO_BYTE_PROFILE_MASK == TWO_BYTE_PROFILE:
        return _two_byte_value(packet, start, end, ext_id)
    return None


def _one_byte_value(packet: bytes, i: int, end: int, ext_id: int) -> int | None:
    """RFC 8285 section 4.2: ID(4) L(4), L+1 bytes of data."""
    while i < end:
        b = packet[i]
        if b == 0:  # padding
            i += 1
            continue
        ext = b >> 4
        if ext == 15:  # reserved: stop processing
            return None
        if ext == ext_id:
            return packet[i + 1] & 0x7F if i + 1 < end else None
        i += 2 + (b & 0x0F)
    return None


def _two_byte_value(packet: bytes, i: int, end: int, ext_id: int) -> int | None:
    """RFC 8285 section 4.3: ID(8) length(8), length bytes of data."""
    while i < end:
        ext = packet[i]
        if ext == 0:  # padding
            i += 1
            continue
        if i + 1 >= end:
            return None
        length = packet[i + 1]
        if ext == ext_id:
            return packet[i + 2] & 0x7F if length and i + 2 < end else None
        i += 2 + length
    return None


def _loudness_table(noise_floor_dbov: int) -> tuple[float, ...]:
    """0..1 per -dBov level, linear in dB above the noise floor (dB is how loudness is perceived)."""
    return tuple(max(0.0, 1.0 - level / noise_floor_dbov) for level in range(SILENCE_DBOV + 1))


_LOUDNESS: Final = _loudness_table(NOISE_FLOOR_DBOV)


class AudioLevelMeter:
    """Smoothed loudness of one audio feed over the last ~500 ms, in ten 50 ms buckets (O(1) per packet).

    Missing packets (DTX, loss, a muted publisher) count as silence: the sum is divided by at least the
    number of packets a full window holds, so loudness ramps up over the window and decays after it.
    """

    __slots__ = ("_counts", "_epochs", "_sums", "min_samples", "table")

    def __init__(self, noise_floor_dbov: int = NOISE_FLOOR_DBOV) -> None:
        self.table = _LOUDNESS if noise_floor_dbov == NOISE_FLOOR_DBOV else _loudness_table(noise_floor_dbov)
        self.min_samples = WINDOW_MS // PACKET_MS
        self._epochs = [-1] * BUCKETS
        self._sums = [0.0] * BUCKETS
        self._counts = [0] * BUCKETS

    def observe(self, level: int, now_ms: int) -> None:
        """Adds one packet's -dBov level (0 loudest, 127 silence)."""
        epoch = now_ms // BUCKET_MS
        b = epoch % BUCKETS
        if self._epochs[b] != epoch:
            self._epochs[b] = epoch
            self._sums[b] = 0.0
            self._counts[b] = 0
        self._sums[b] += self.table[level & 0x7F]
        self._counts[b] += 1

    def level(self, now_ms: int) -> float:
        """Loudness 0..1 over the window ending at `now_ms`."""
        oldest = now_ms // BUCKET_MS - BUCKETS
        total = 0.0
        count = 0
        for b in range(BUCKETS):
            if self._epochs[b] > oldest:
                total += self._sums[b]
                count += self._counts[b]
        return total / max(count, self.min_samples)


class Speaker(NamedTuple):
    uid: str
    level: float


class ActiveSpeakerDetector:
    """Ranks meters by loudness; reports the ordered speakers when they change, at most every 250 ms.

    A change seen inside the interval is reported by the first `update` after it ends, if it still holds.
    """

    __slots__ = ("_last_report_ms", "_reported", "max_speakers", "min_interval_ms", "min_level", "speakers")

    def __init__(self, min_level: float = 0.25, min_interval_ms: int = 250, max_speakers: int = 0) -> None:
        self.min_level = min_level
        self.min_interval_ms = min_interval_ms
        self.max_speakers = max_speakers  # 0: no limit
        self.speakers: tuple[Speaker, ...] = ()
        self._reported: tuple[str, ...] = ()
        self._last_report_ms: int | None = None

    def rank(self, meters_by_uid: Mapping[str, AudioLevelMeter], now_ms: int) -> tuple[Speaker, ...]:
        """Speakers at or above `min_level`, loudest first (ties by uid, so the order is stable)."""
        levels = [(uid, meter.level(now_ms)) for uid, meter in meters_by_uid.items()]
        ranked = sorted(
            (Speaker(uid, level) for uid, level in levels if level >= self.min_level),
            key=lambda s: (-s.level, s.uid),
        )
        return tuple(ranked[: self.max_speakers] if self.max_speakers else ranked)

    def update(self, meters_by_uid: Mapping[str, AudioLevelMeter], now_ms: int) -> tuple[Speaker, ...] | None:
        """The new ordered speakers if the set or order changed and a report is allowed now, else None."""
        if self._last_report_ms is not None and now_ms - self._last_report_ms < self.min_interval_ms:
            return None
        speakers = self.rank(meters_by_uid, now_ms)
        uids = tuple(s.uid for s in speakers)
        self.speakers = speakers
        if uids == self._reported:
            return None
        self._reported = uids
        self._last_report_ms = now_ms
        return speakers
