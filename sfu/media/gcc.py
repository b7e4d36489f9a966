"""Send-side bandwidth estimate from transport-wide CC feedback, in the spirit of Google Congestion
Control (draft-ietf-rmcat-gcc-02): a delay-based controller and a loss-based one; the estimate is the
lower of the two.

Delay-based (sections 5.1-5.5): packets sent within `BURST_US` form a group; per pair of groups the
inter-group delay variation d = (arrival delta) - (send delta) is accumulated, smoothed and fitted over
the last `WINDOW` groups (a trendline, as libwebrtc does instead of the draft's Kalman filter); the
slope, scaled by the number of deltas and `TREND_GAIN`, is compared with an adaptive threshold (section
5.4) to say overuse, underuse or normal. The AIMD rate controller (section 5.5) holds on underuse,
multiplies the rate by 0.85 of what was acked on overuse, and otherwise grows: 8% a second far from the
last congestion point, about one packet per response time near it; never above 1.5x the acked rate.

Loss-based (section 6): per `LOSS_WINDOW_US` of feedback, more than 10% lost cuts the rate by half the
loss, under 2% lets it grow 5% (at most once a second); between, it holds.

Probing (`probe.py` sends padding): `probe_started`/`probe_sent`/`probe_finished` bracket a burst; if
the feedback over it shows neither overuse nor loss above 10%, both controllers jump to the rate it got
through (`probe_finished`).

Pure (no clock, no I/O): fed with `(send us, arrival us or -1, size)` per packet from
`twcc.SendHistory.packet_results`, so it can be tested on recorded or synthetic traces.
"""

from __future__ import annotations

import enum
from collections import deque
from collections.abc import Sequence
from typing import Final

BURST_US: Final = 5_000
WINDOW: Final = 20
SMOOTHING: Final = 0.9
TREND_GAIN: Final = 4.0
THRESHOLD_INIT: Final = 12.5
THRESHOLD_MIN: Final = 6.0
THRESHOLD_MAX: Final = 600.0
K_UP: Final = 0.0087
K_DOWN: Final = 0.039
OVERUSE_TIME_MS: Final = 10.0
START_BPS: Final = 1_000_000
MIN_BPS: Final = 30_000
MAX_BPS: Final = 50_000_000
BETA: Final = 0.85
ACKED_WINDOW_US: Final = 500_000
MAX_VALID_PROBE_RATIO: Final = 2.0  # a probe that "arrived" faster than this x its send rate is void
LOSS_WINDOW_US: Final = 1_000_000
LOSS_HIGH: Final = 0.10
LOSS_LOW: Final = 0.02
DECREASE_GAP_US: Final = 500_000  # at most one decrease per RTT or so, not one per feedback packet
PACKET_BITS: Final = 1200 * 8


class Usage(enum.IntEnum):
    NORMAL = 0
    UNDERUSE = 1
    OVERUSE = 2


class _Trendline:
    """Section 5.3 with libwebrtc's trendline: slope of the smoothed accumulated delay over arrival time."""

    __slots__ = ("_acc", "_first_ms", "_points", "_smoothed", "deltas")

    def __init__(self) -> None:
        self._acc = 0.0
        self._smoothed = 0.0
        self._first_ms = -1.0
        self._points: deque[tuple[float, float]] = deque(maxlen=WINDOW)
        self.deltas = 0

    def update(self, delay_variation_ms: float, arrival_ms: float) -> float | None:
        if self._first_ms < 0:
            self._first_ms = arrival_ms
        self.deltas += 1
        self._acc += delay_variation_ms
        self._smoothed = SMOOTHING * self._smoothed + (1 - SMOOTHING) * self._acc
        self._points.append((arrival_ms - self._first_ms, self._smoothed))
        if len(self._points) < WINDOW:
            return None
        n = len(self._points)
        mean_x = sum(p[0] for p in self._points) / n
        mean_y = sum(p[1] for p in self._points) / n
        num = sum((x - mean_x) * (y - mean_y) for x, y in self._points)
        den = sum((x - mean_x) ** 2 for x, _ in self._points)
        return num / den if den > 0 else None


class _OveruseDetector:
    """Section 5.4: the modified trend against an adaptive threshold."""

    __slots__ = ("_count", "_last_ms", "_prev_trend", "_time_over_ms", "state", "threshold")

    def __init__(self) -> None:
        self.threshold = THRESHOLD_INIT
        self.state = Usage.NORMAL
        self._time_over_ms = -1.0
        self._count = 0
        self._prev_trend = 0.0
        self._last_ms = -1.0

    def detect(self, trend: float, send_delta_ms: float, deltas: int, now_ms: float) -> Usage:
        modified = min(deltas, 60) * trend * TREND_GAIN
        if modified > self.threshold:
            self._time_over_ms = (
                send_delta_ms / 2 if self._time_over_ms < 0 else self._time_over_ms + send_delta_ms
            )
            self._count += 1
            if self._time_over_ms > OVERUSE_TIME_MS and self._count > 1 and trend >= self._prev_trend:
                self._time_over_ms = 0.0
                self._count = 0
                self.state = Usage.OVERUSE
        elif modified < -self.threshold:
            self._time_over_ms = -1.0
            self._count = 0
            self.state = Usage.UNDERUSE
        else:
            self._time_over_ms = -1.0
            self._count = 0
            self.state = Usage.NORMAL
        self._prev_trend = trend
        self._adapt(modified, now_ms)
        return self.state

    def _adapt(self, modified: float, now_ms: float) -> None:
        if self._last_ms < 0:
            self._last_ms = now_ms
        magnitude = abs(modified)
        if magnitude > self.threshold + 15.0:  # a spike (e.g. a route change) must not drag the threshold
            self._last_ms = now_ms
            return
        k = K_DOWN if magnitude < self.threshold else K_UP
        dt = min(now_ms - self._last_ms, 100.0)
        self.threshold = min(
            max(self.threshold + k * (magnitude - self.threshold) * dt, THRESHOLD_MIN), THRESHOLD_MAX
        )
        self._last_ms = now_ms


class SendSideEstimator:
    """One per subscriber with transport-cc: `on_feedback` per TWCC packet, `estimate_bps` any time."""

    __slots__ = (
        "_acked",
        "_acked_bytes",
        "_capacity_bps",
        "_delay_bps",
        "_detector",
        "_group",
        "_last_decrease_us",
        "_last_increase_us",
        "_loss_bps",
        "_loss_increase_us",
        "_loss_lost",
        "_loss_since_us",
        "_loss_total",
        "_prev_group",
        "_probe",
        "_probe_bad",
        "_probe_from_us",
        "_probe_to_us",
        "_probing",
        "_trend",
        "feedbacks",
        "loss_fraction",
        "overuses",
        "packets_acked",
        "packets_lost",
        "state",
    )

    def __init__(self, start_bps: int = START_BPS) -> None:
        self._delay_bps = float(start_bps)
        self._loss_bps = float(start_bps)
        self._capacity_bps = 0.0  # the acked rate at the last overuse (the "link capacity"), 0 = unknown
        self._trend = _Trendline()
        self._detector = _OveruseDetector()
        # groups: [first send us, last send us, last arrival us, bytes]
        self._group: list[int] | None = None
        self._prev_group: list[int] | None = None
        self._acked: deque[tuple[int, int]] = deque()  # (arrival us, size) over ACKED_WINDOW_US
        self._acked_bytes = 0
        self._last_decrease_us = -DECREASE_GAP_US
        self._last_increase_us = -1
        self._loss_since_us = -1
        self._loss_lost = 0
        self._loss_total = 0
        self._loss_increase_us = -1
        self._probing = False
        self._probe_bad = False
        self._probe_from_us = -1  # send time of the probe's first packet; -1 = no probe to measure
        self._probe_to_us = 1 << 62  # and of its last
        self._probe: list[tuple[int, int, int]] = []  # (send, arrival, size) of packets sent since
        self.state = Usage.NORMAL
        self.feedbacks = 0
        self.overuses = 0
        self.packets_acked = 0
        self.packets_lost = 0
        self.loss_fraction = 0.0

    def estimate_bps(self) -> int:
        return int(min(self._delay_bps, self._loss_bps))

    @property
    def delay_based_bps(self) -> int:
        return int(self._delay_bps)

    @property
    def loss_based_bps(self) -> int:
        return int(self._loss_bps)

    def acked_bps(self) -> float:
        """What arrived over the last `ACKED_WINDOW_US` of receive time."""
        if len(self._acked) < 2:
            return 0.0
        span = self._acked[-1][0] - self._acked[0][0]
        return self._acked_bytes * 8_000_000 / max(span, 100_000)

    def on_feedback(self, results: Sequence[tuple[int, int, int]], now_us: int) -> None:
        """One feedback packet's (send us, arrival us or -1, size) in transport seq order; `now_us` is the
        local time it arrived (the controllers' clock)."""
        self.feedbacks += 1
        lost = total = 0
        received = sorted((r for r in results if r[1] >= 0), key=lambda r: r[1])
        for result in results:
            total += 1
            if result[1] < 0:
                lost += 1
        for send_us, arrival_us, size in received:
            self._on_packet(send_us, arrival_us, size)
        self.packets_acked += total - lost
        self.packets_lost += lost
        self._on_loss(lost, total, now_us)
        self._update_rate(now_us)

    def _on_packet(self, send_us: int, arrival_us: int, size: int) -> None:
        if 0 <= self._probe_from_us <= send_us <= self._probe_to_us:
            self._probe.append((send_us, arrival_us, size))
        acked = self._acked
        acked.append((arrival_us, size))
        self._acked_bytes += size
        while acked and arrival_us - acked[0][0] > ACKED_WINDOW_US:
            self._acked_bytes -= acked.popleft()[1]
        group = self._group
        if group is None:
            self._group = [send_us, send_us, arrival_us, size]
            return
        arrival_delta = arrival_us - group[2]
        in_send_burst = 0 <= send_us - group[0] <= BURST_US
        # libwebrtc InterArrival: packets that arrive back to back and faster than they were sent were
        # queued together somewhere (or read together by a busy receiver): one group, not a delay trend
        in_arrival_burst = 0 <= arrival_delta <= BURST_US and arrival_delta - (send_us - group[1]) < 0
        if in_send_burst or in_arrival_burst:
            group[1] = max(group[1], send_us)
            group[2] = max(group[2], arrival_us)
            group[3] += size
            return
        prev = self._prev_group
        if prev is not None:
            send_delta = group[1] - prev[1]
            arrival_delta = group[2] - prev[2]
            if send_delta > 0 and arrival_delta >= 0:
                trend = self._trend.update((arrival_delta - send_delta) / 1000, group[2] / 1000)
                if trend is not None:
                    state = self._detector.detect(
                        trend, send_delta / 1000, self._trend.deltas, group[2] / 1000
                    )
                    if state == Usage.OVERUSE and self.state != Usage.OVERUSE:
                        self.overuses += 1
                    self.state = state
                    if state == Usage.OVERUSE and self._probing:
                        self._probe_bad = True
        self._prev_group = group
        self._group = [send_us, send_us, arrival_us, size]

    def _on_loss(self, lost: int, total: int, now_us: int) -> None:
        """Section 6, on about a second of feedback at a time."""
        if self._loss_since_us < 0:
            self._loss_since_us = now_us
        self._loss_lost += lost
        self._loss_total += total
        if now_us - self._loss_since_us < LOSS_WINDOW_US or not self._loss_total:
            return
        fraction = self._loss_lost / self._loss_total
        self.loss_fraction = fraction
        self._loss_since_us = now_us
        self._loss_lost = self._loss_total = 0
        self.apply_loss(fraction, now_us)

    def apply_loss(self, fraction: float, now_us: int) -> None:
        """A loss fraction over about a second (from TWCC feedback or an RTCP receiver report)."""
        if fraction > LOSS_HIGH:
            if self._probing:
                self._probe_bad = True
            self._loss_bps = max(MIN_BPS, self._loss_bps * (1 - 0.5 * fraction))
        elif fraction < LOSS_LOW and now_us - self._loss_increase_us >= 1_000_000:
            self._loss_increase_us = now_us
            # grow from what goes through, so a long quiet period does not leave a stale high cap
            base = max(self._loss_bps, min(self._delay_bps, 1.5 * self.acked_bps()))
            self._loss_bps = min(MAX_BPS, base * 1.05 + 1000)

    def _update_rate(self, now_us: int) -> None:
        """Section 5.5 AIMD, once per feedback packet."""
        acked = self.acked_bps()
        if self.state == Usage.OVERUSE:
            if now_us - self._last_decrease_us >= DECREASE_GAP_US and acked > 0:
                self._last_decrease_us = now_us
                self._capacity_bps = (
                    acked if not self._capacity_bps else 0.95 * self._capacity_bps + 0.05 * acked
                )
                cut = max(BETA * acked, 0.5 * self._delay_bps)  # a thin acked window is no reason to halve
                self._delay_bps = max(MIN_BPS, min(self._delay_bps, cut))
            self._last_increase_us = now_us
            return
        if self.state == Usage.UNDERUSE:
            self._last_increase_us = now_us  # hold: queues drain
            return
        if self._last_increase_us < 0:
            self._last_increase_us = now_us
            return
        dt_s = min((now_us - self._last_increase_us) / 1_000_000, 1.0)
        self._last_increase_us = now_us
        if self._capacity_bps and self._delay_bps > 1.5 * self._capacity_bps:
            self._capacity_bps = 0.0  # far above the old congestion point: it moved
        if self._capacity_bps and self._delay_bps >= 0.9 * self._capacity_bps:
            response_s = 0.3  # about RTT + 100 ms
            raised = self._delay_bps + max(1000.0, PACKET_BITS / response_s) * dt_s
        else:
            raised = self._delay_bps * 1.08**dt_s
        if acked > 0:  # no growth far above what goes through (libwebrtc's clamp), but no cut either
            raised = min(raised, max(self._delay_bps, 1.5 * acked + 10_000))
        self._delay_bps = min(max(raised, MIN_BPS), MAX_BPS)

    # -- probing (probe.py) ---------------------------------------------------------------------------

    def probe_started(self, now_us: int) -> None:
        """A probe's first packet is sent at `now_us` (the send history's clock)."""
        self._probing = True
        self._probe_bad = False
        self._probe_from_us = now_us
        self._probe_to_us = 1 << 62
        self._probe = []

    def probe_sent(self, now_us: int) -> None:
        """The probe's last packet went out: what is sent later is not part of it."""
        self._probe_to_us = now_us

    @property
    def probe_failed(self) -> bool:
        """Overuse or heavy loss since the probe started: stop sending it."""
        return self._probe_bad

    def probe_finished(self) -> int:
        """Ends a probe once its feedback is in; returns the rate it proved (0 if it failed or too few
        packets were reported) and lifts the estimate to it. The rate is what arrived over the arrival
        span of the later half of the packets sent during the probe, but never more than they
        were sent at [libwebrtc ProbeBitrateEstimator]."""
        self._probing = False
        self._probe_from_us = -1
        packets = sorted(self._probe)
        self._probe = []
        # the first half only starts the clock: a token-bucket shaper lets a short burst through at any
        # rate, what it can carry shows once its bucket is empty [libwebrtc skips the first packet only]
        head = packets[len(packets) // 2] if packets else (0, 0, 0)
        tail = packets[len(packets) // 2 + 1 :]
        if self._probe_bad or len(tail) < 4:
            return 0
        size = sum(p[2] for p in tail)
        last_send = max(p[0] for p in tail)
        last_arrival = max(p[1] for p in tail)
        if last_send <= head[0] or last_arrival <= head[1]:
            return 0
        received_bps = size * 8_000_000 / (last_arrival - head[1])
        sent_bps = size * 8_000_000 / (last_send - head[0])
        if received_bps > MAX_VALID_PROBE_RATIO * sent_bps:
            return 0  # arrivals bunched (a receiver that read late stamps a batch at once): proves nothing
        proved = int(0.95 * min(received_bps, sent_bps))
        if proved > self.estimate_bps():
            self._delay_bps = max(self._delay_bps, float(proved))
            self._loss_bps = max(self._loss_bps, float(proved))
            self._capacity_bps = 0.0
        return proved
