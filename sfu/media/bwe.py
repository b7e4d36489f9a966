"""Per-subscriber downlink estimate: send-side from transport-wide CC feedback (`gcc.py`) when the
subscriber negotiated transport-cc (Chrome, Firefox), else the subscriber's REMB
(draft-alvestrand-rmcat-remb-03; aiortc peers, which run the delay-based estimator on our abs-send-time
and support nothing else), capped in both cases by a loss-based controller fed by receiver reports.

REMB smoothing: a drop counts at once (congestion must be answered fast), a rise is averaged in (one
REMB spike must not switch every feed up). Staleness: no feedback for `STALE_MS` keeps the last
estimate (a subscriber whose video is paused may send no REMB; "unknown" must not mean "unlimited"
then); only a subscriber that never sent any has no estimate (0), and then nothing is capped.
"""

from __future__ import annotations

from typing import Final

from sfu.media.gcc import LOSS_HIGH, LOSS_LOW, MIN_BPS, SendSideEstimator

STALE_MS: Final = 5000
RISE_WEIGHT: Final = 0.3
REPORT_LOSS_GAP_MS: Final = 900  # receiver reports come about once a second per SSRC: one per second counts


class BandwidthEstimator:
    """`estimate_bps(now_ms)`: what one subscriber can receive, or 0 when unknown."""

    __slots__ = (
        "_estimate_bps",
        "_loss_bps",
        "_loss_ms",
        "_updated_ms",
        "gcc",
        "jitter",
        "loss_fraction",
        "remb_count",
        "rtt_ms",
        "twcc_count",
    )

    def __init__(self) -> None:
        self._estimate_bps = 0
        self._updated_ms = -STALE_MS
        self._loss_bps = 0.0  # REMB mode's loss-based cap, 0 = none yet
        self._loss_ms = -REPORT_LOSS_GAP_MS
        self.remb_count = 0
        self.twcc_count = 0
        self.gcc: SendSideEstimator | None = None  # set once transport-cc feedback arrives
        self.loss_fraction = 0.0
        self.jitter = 0
        self.rtt_ms = 0.0

    @property
    def mode(self) -> str:
        return "twcc" if self.gcc is not None else "remb" if self.remb_count else "none"

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

    def on_transport_feedback(self, results: list[tuple[int, int, int]], now_ms: int) -> None:
        """A TWCC feedback packet joined with the send history (`SendHistory.packet_results`)."""
        self.twcc_count += 1
        if self.gcc is None:
            self.gcc = SendSideEstimator()
        self.gcc.on_feedback(results, now_ms * 1000)
        self.loss_fraction = self.gcc.loss_fraction

    def on_receiver_report(self, fraction_lost: int, jitter: int, rtt_ms: float, now_ms: int) -> None:
        """One RR block (RFC 3550 6.4.1): fraction lost /256, jitter (timestamp units), RTT (or < 0)."""
        self.jitter = jitter
        if rtt_ms >= 0:
            self.rtt_ms = rtt_ms if not self.rtt_ms else 0.875 * self.rtt_ms + 0.125 * rtt_ms
        if now_ms - self._loss_ms < REPORT_LOSS_GAP_MS:
            return
        self._loss_ms = now_ms
        fraction = fraction_lost / 256
        if self.gcc is not None:
            return  # TWCC feedback carries the loss itself, per packet
        self.loss_fraction = fraction
        if not self._estimate_bps:
            return
        base = self._loss_bps or float(self._estimate_bps)
        if fraction > LOSS_HIGH:  # draft-ietf-rmcat-gcc-02 section 6
            self._loss_bps = max(float(MIN_BPS), base * (1 - 0.5 * fraction))
        elif fraction < LOSS_LOW and self._loss_bps:
            self._loss_bps = base * 1.05 + 1000
            if self._loss_bps >= self._estimate_bps:
                self._loss_bps = 0.0  # loss no longer limits: the REMB alone decides

    def estimate_bps(self, now_ms: int) -> int:
        if self.gcc is not None:
            return self.gcc.estimate_bps()
        if not self._estimate_bps:
            return 0
        return int(min(self._estimate_bps, self._loss_bps)) if self._loss_bps else self._estimate_bps

    def stats(self, now_ms: int) -> dict[str, object]:
        out: dict[str, object] = {
            "mode": self.mode,
            "estimate_bps": self.estimate_bps(now_ms),
            "remb_count": self.remb_count,
            "twcc_feedbacks": self.twcc_count,
            "loss_fraction": round(self.loss_fraction, 4),
            "rtt_ms": round(self.rtt_ms, 1),
        }
        if self.gcc is not None:
            out.update(
                delay_based_bps=self.gcc.delay_based_bps,
                loss_based_bps=self.gcc.loss_based_bps,
                overuses=self.gcc.overuses,
            )
        return out
