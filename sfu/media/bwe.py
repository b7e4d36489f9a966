"""Per-subscriber downlink estimate from the subscriber's REMB (draft-alvestrand-rmcat-remb-03).

The subscriber's browser runs the delay-based estimator on our abs-send-time extension and reports the
result as REMB; we only smooth it: a drop counts at once (congestion must be answered fast), a rise is
averaged in (one REMB spike must not switch every feed up). No REMB for `STALE_MS` means no estimate,
and then nothing is capped. Transport-wide CC (a send-side estimate from `twcc.py` feedback) is not
done: forwarded packets carry no transport-wide sequence numbers yet.
"""

from __future__ import annotations

from typing import Final

STALE_MS: Final = 5000
RISE_WEIGHT: Final = 0.3


class BandwidthEstimator:
    """`estimate_bps(now_ms)`: what one subscriber can receive, or 0 when unknown."""

    __slots__ = ("_estimate_bps", "_updated_ms", "remb_count")

    def __init__(self) -> None:
        self._estimate_bps = 0
        self._updated_ms = -STALE_MS
        self.remb_count = 0

    def on_remb(self, bitrate_bps: int, now_ms: int) -> None:
        self.remb_count += 1
        if bitrate_bps <= 0:
            return
        fresh = now_ms - self._updated_ms < STALE_MS and self._estimate_bps > 0
        if not fresh or bitrate_bps < self._estimate_bps:
            self._estimate_bps = bitrate_bps
        else:
            self._estimate_bps += int((bitrate_bps - self._estimate_bps) * RISE_WEIGHT)
        self._updated_ms = now_ms

    def estimate_bps(self, now_ms: int) -> int:
        return self._estimate_bps if now_ms - self._updated_ms < STALE_MS else 0
