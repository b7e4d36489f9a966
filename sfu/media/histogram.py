"""Time from a packet's arrival to just after its forwarders' sends, sampled, in fixed microsecond buckets.

`Receiver.on_rtp` observes one packet in `SAMPLE_EVERY` of each receiver (its own packet counter, so the
per-packet cost of the other 63 is one `and` and one comparison). The arrival time is the one the
receiver already has (taken after SRTP unprotect, before the header parse); the end is after the last
forwarder's `sendto`. One histogram per process (one server per process), exported by `sfu/metrics.py`
as the Prometheus histogram `sfu_arrival_to_send_seconds`.
"""

from __future__ import annotations

from bisect import bisect_left
from typing import Final

SAMPLE_EVERY: Final = 64
SAMPLE_MASK: Final = SAMPLE_EVERY - 1
# Upper bounds (inclusive, Prometheus `le`) in microseconds; one more bucket for +Inf.
BOUNDS_US: Final = (
    10, 20, 50, 100, 200, 500, 1_000, 2_000, 5_000, 10_000, 20_000, 50_000, 100_000, 500_000
)  # fmt: skip
_BOUNDS_NS: Final = tuple(b * 1000 for b in BOUNDS_US)


class Histogram:
    """Bucket counts (not cumulative), their sum and count; `observe_ns` is the only per-sample call."""

    __slots__ = ("count", "counts", "sum_ns")

    def __init__(self) -> None:
        self.counts = [0] * (len(BOUNDS_US) + 1)
        self.sum_ns = 0
        self.count = 0

    def observe_ns(self, elapsed_ns: int) -> None:
        self.counts[bisect_left(_BOUNDS_NS, elapsed_ns)] += 1
        self.sum_ns += elapsed_ns
        self.count += 1

    def cumulative(self) -> list[tuple[float, int]]:
        """(upper bound in seconds, count of samples <= it) per bucket, the last bound being +Inf."""
        out: list[tuple[float, int]] = []
        total = 0
        for bound_us, count in zip((*BOUNDS_US, float("inf")), self.counts, strict=True):
            total += count
            out.append((bound_us / 1e6, total))
        return out


ARRIVAL_TO_SEND: Final = Histogram()
