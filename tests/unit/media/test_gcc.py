"""The send-side estimator on synthetic feedback traces, through the real wire path: packets get transport
seqs from `SendHistory`, a simulated bottleneck (FIFO queue at a capacity, tail drop past a delay, random
loss) decides arrivals, the receiver's feedback is built with `build_twcc`, parsed back with `parse_twcc`
and joined with the history, as `SubscriberTransport._on_rtcp_data` does. The sender follows the
estimate (closed loop), as the allocator does with layers.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import pytest

from sfu.media.gcc import SendSideEstimator
from sfu.media.twcc import SendHistory, TransportCc, build_twcc, parse_twcc

PACKET = 1200
STEP_US = 5_000
FEEDBACK_US = 100_000


@dataclass
class Link:
    capacity_bps: int
    loss: float = 0.0
    queue_limit_us: int = 300_000  # tail drop past this much queueing delay (tbf's latency)
    base_delay_us: int = 20_000


def simulate(
    phases: list[tuple[float, Link]], start_bps: int = 1_000_000, seed: int = 1
) -> list[tuple[float, int]]:
    """(time s, estimate) every 100 ms over consecutive (seconds, link) phases."""
    rng = random.Random(seed)
    history = SendHistory()
    gcc = SendSideEstimator(start_bps)
    pending: list[tuple[int, int]] = []  # (wire seq, arrival us or -1) not yet reported
    queue_free_us = 0
    credit = 0.0
    now = 0
    next_feedback = FEEDBACK_US
    fb_count = 0
    out: list[tuple[float, int]] = []
    for seconds, link in phases:
        end = now + int(seconds * 1_000_000)
        while now < end:
            credit += gcc.estimate_bps() * STEP_US / 8e6
            while credit >= PACKET:
                credit -= PACKET
                seq = history.record(PACKET, now)
                start = max(now, queue_free_us)
                if start - now > link.queue_limit_us or rng.random() < link.loss:
                    pending.append((seq, -1))
                    continue
                queue_free_us = start + PACKET * 8_000_000 // link.capacity_bps
                pending.append((seq, queue_free_us + link.base_delay_us))
            now += STEP_US
            if now >= next_feedback and pending:
                # the receiver reports what has arrived by now (losses once a later packet arrived)
                arrived = [p for p in pending if 0 <= p[1] <= now]
                if arrived:
                    last = max(i for i, p in enumerate(pending) if 0 <= p[1] <= now)
                    report, pending = pending[: last + 1], pending[last + 1 :]
                    ref = min(p[1] for p in report if p[1] >= 0) // 64_000
                    deltas: list[int | None] = []
                    prev = ref * 64_000
                    for _seq, arrival in report:
                        if arrival < 0:
                            deltas.append(None)
                            continue
                        delta = (arrival - prev) // 250 * 250
                        deltas.append(delta)
                        prev += delta
                    fb = TransportCc(1, 2, report[0][0], ref, fb_count & 0xFF, tuple(deltas))
                    fb_count += 1
                    raw = build_twcc(fb)
                    parsed = parse_twcc(raw, 0, len(raw))
                    assert parsed is not None and parsed.recv_deltas_us == fb.recv_deltas_us
                    gcc.on_feedback(history.packet_results(parsed), now + link.base_delay_us)
                next_feedback += FEEDBACK_US
                out.append((now / 1e6, gcc.estimate_bps()))
    return out


def at(trace: list[tuple[float, int]], t: float) -> int:
    return next(bps for ts, bps in trace if ts >= t)


@pytest.mark.parametrize(
    ("name", "phases", "checks"),
    [
        (
            "steady: plenty of capacity, the estimate grows and nothing overuses",
            [(15.0, Link(20_000_000))],
            [(15.0, 2_500_000, 20_000_000)],
        ),
        (
            "congestion ramp: 1 Mbit/s start on a 600 kbit/s link comes down fast and tracks it",
            [(20.0, Link(600_000))],
            [(4.0, 0, 700_000), (20.0, 300_000, 800_000)],
        ),
        (
            "a cap drops from 3 Mbit/s to 400 kbit/s: a third of the rate within 1.5 s, at the cap within"
            " 10 s, then lifted: up again (no probes here, so only at the AIMD's pace)",
            [(10.0, Link(3_000_000)), (10.0, Link(400_000)), (15.0, Link(10_000_000))],
            [
                (9.9, 1_500_000, 10_000_000),
                (11.5, 0, 700_000),
                (19.9, 150_000, 500_000),
                (35.0, 900_000, 10**8),
            ],
        ),
        (
            "20% random loss: the loss-based controller cuts the rate",
            [(10.0, Link(20_000_000, loss=0.2))],
            [(10.0, 0, 600_000)],
        ),
        (
            "1% random loss is no congestion: the estimate still grows",
            [(10.0, Link(20_000_000, loss=0.01))],
            [(10.0, 1_500_000, 20_000_000)],
        ),
    ],
)
def test_estimator_on_traces(
    name: str, phases: list[tuple[float, Link]], checks: list[tuple[float, int, int]]
) -> None:
    trace = simulate(phases)
    for t, low, high in checks:
        assert low <= at(trace, t) <= high, (name, t, at(trace, t))


def test_steady_link_sees_no_overuse_and_a_full_queue_does() -> None:
    gcc_trace = simulate([(10.0, Link(20_000_000))])
    assert gcc_trace[-1][1] > gcc_trace[0][1]
    history = SendHistory()
    gcc = SendSideEstimator(2_000_000)
    # open loop: 2 Mbit/s into a 1 Mbit/s queue, delay grows 10 ms per 20 ms of sending
    results = []
    queue_free = 0
    for k in range(400):
        send = k * 4800
        history.record(PACKET, send)
        queue_free = max(send, queue_free) + PACKET * 8_000_000 // 1_000_000
        results.append((send, queue_free, PACKET))
        if len(results) == 20:
            gcc.on_feedback(results, queue_free)
            results = []
    assert gcc.overuses >= 1
    assert gcc.estimate_bps() < 1_000_000


def test_a_probe_that_gets_through_lifts_the_estimate_and_one_that_congests_does_not() -> None:
    for capacity, lifted in ((5_000_000, True), (600_000, False)):
        gcc = SendSideEstimator(500_000)
        queue_free = 0
        send = 0
        for phase_bps, probing in ((450_000, False), (1_500_000, True), (450_000, False)):
            if probing:
                gcc.probe_started(send + 1)
            batch = []
            for _ in range(int(phase_bps / 8 / PACKET)):  # one second of packets at phase_bps
                send += int(PACKET * 8e6 / phase_bps)
                queue_free = max(send, queue_free) + int(PACKET * 8e6 / capacity)
                batch.append((send, queue_free + 20_000, PACKET))
                if len(batch) == 10:
                    gcc.on_feedback(batch, batch[-1][1])
                    batch = []
            if probing:
                proved = gcc.probe_finished()
                assert (proved > 1_000_000) is lifted, (capacity, proved)
        assert (gcc.estimate_bps() > 1_000_000) is lifted, (capacity, gcc.estimate_bps())


def test_a_probe_whose_arrivals_came_in_one_batch_proves_nothing() -> None:
    """A receiver that was starved and read a probe's packets at once stamps them microseconds apart: the
    "received rate" is then far above the send rate and says nothing about the link."""
    gcc = SendSideEstimator(300_000)
    send = 0
    gcc.probe_started(send + 1)
    batch = []
    for i in range(60):  # 60 packets at 1.5 Mbit/s, all stamped within 60 us on arrival
        send += int(PACKET * 8e6 / 1_500_000)
        batch.append((send, 500_000 + i, PACKET))
    gcc.probe_sent(send)
    gcc.on_feedback(batch, batch[-1][1])
    assert gcc.probe_finished() == 0
    assert gcc.estimate_bps() < 1_000_000
