"""What a counting subscriber learns from RTP headers alone: loss, reordering, duplicates, jitter, latency.

Loss follows RFC 3550 section 6.4.1 / A.3: expected = highest extended seq - first seq + 1, lost =
expected - received (duplicates not counted). Jitter is the interarrival jitter of RFC 3550 section 6.4.1
/ A.8. The SFU rewrites seq per subscriber but keeps it continuous, so a gap seen here is a packet lost
between the publisher and this subscriber (or dropped by the server without a seq rewrite).
"""

from __future__ import annotations

import math
from collections import deque
from typing import Final

SEQ_MOD: Final = 1 << 16
DUP_WINDOW: Final = 1024  # extended seqs remembered to tell a duplicate from a late packet
STAMP_TTL_NS: Final = 2_000_000_000  # a send stamp not matched within 2 s is forgotten


class StreamStats:
    """One RTP stream (one feed at one subscriber); `on_packet` is called per packet, so it stays small."""

    __slots__ = (
        "base",
        "clock_rate",
        "duplicates",
        "highest",
        "jitter",
        "last_transit",
        "received",
        "reordered",
        "seen",
    )

    def __init__(self, clock_rate: int) -> None:
        self.clock_rate = clock_rate
        self.base = -1
        self.highest = -1  # extended (cycles * 65536 + seq)
        self.received = 0
        self.reordered = 0
        self.duplicates = 0
        self.jitter = 0.0  # in RTP clock units
        self.last_transit: float | None = None
        self.seen = [-1] * DUP_WINDOW

    def on_packet(self, seq: int, timestamp: int, arrival_ns: int) -> None:
        if self.base < 0:
            self.base = self.highest = seq
            ext = seq
        else:
            delta = (seq - self.highest) % SEQ_MOD
            if delta < SEQ_MOD // 2:
                ext = self.highest + delta
                self.highest = ext
            else:
                ext = self.highest - (SEQ_MOD - delta)
                if ext < self.base:
                    return  # older than the first packet: from before we started counting
        slot = ext % DUP_WINDOW
        if self.seen[slot] == ext:
            self.duplicates += 1
            return
        self.seen[slot] = ext
        self.received += 1
        if ext < self.highest:
            self.reordered += 1
        transit = arrival_ns * self.clock_rate / 1e9 - timestamp
        if self.last_transit is not None:
            d = abs(transit - self.last_transit)
            self.jitter += (d - self.jitter) / 16
        self.last_transit = transit

    @property
    def expected(self) -> int:
        return self.highest - self.base + 1 if self.base >= 0 else 0

    @property
    def lost(self) -> int:
        return max(0, self.expected - self.received)

    @property
    def jitter_ms(self) -> float:
        return self.jitter * 1000 / self.clock_rate if self.clock_rate else 0.0


class SendStamps:
    """Send time by payload fingerprint, for packets whose subscriber runs in the same process (clock).

    The SFU rewrites SSRC, seq, timestamp and payload type but never the payload, so a hash of the payload
    bytes (tagged with the publisher, as clips repeat) identifies a packet on both sides.
    """

    def __init__(self, ttl_ns: int = STAMP_TTL_NS) -> None:
        self.ttl_ns = ttl_ns
        self.sent_ns_by_key: dict[tuple[int, int], int] = {}
        self._order: deque[tuple[int, tuple[int, int]]] = deque()

    def stamp(self, publisher: int, payload: bytes, now_ns: int) -> None:
        key = (publisher, hash(payload))
        self.sent_ns_by_key[key] = now_ns
        self._order.append((now_ns, key))
        order = self._order
        while order and now_ns - order[0][0] > self.ttl_ns:
            sent_ns, old = order.popleft()
            if self.sent_ns_by_key.get(old) == sent_ns:
                del self.sent_ns_by_key[old]

    def latency_ns(self, publisher: int, payload: bytes, now_ns: int) -> int | None:
        sent_ns = self.sent_ns_by_key.get((publisher, hash(payload)))
        return None if sent_ns is None else now_ns - sent_ns


def percentile(sorted_values: list[float], fraction: float) -> float:
    """Nearest-rank percentile of already sorted values; NaN when there are none."""
    if not sorted_values:
        return math.nan
    rank = max(1, math.ceil(fraction * len(sorted_values)))
    return sorted_values[min(rank, len(sorted_values)) - 1]


def rtp_payload(data: bytes) -> bytes:
    """The payload of a serialized RTP packet: after CSRCs and the header extension, before padding."""
    if len(data) < 12:
        return b""
    offset = 12 + 4 * (data[0] & 0x0F)
    if data[0] & 0x10 and len(data) >= offset + 4:
        offset += 4 + 4 * int.from_bytes(data[offset + 2 : offset + 4], "big")
    end = len(data)
    if data[0] & 0x20 and end > offset:
        end -= data[-1]
    return data[offset:end] if end > offset else b""
