"""StreamAllocator's pure parts as tables: layer choice per budget, and the REMB smoothing."""

from __future__ import annotations

import asyncio
import itertools
import struct

import pytest

from sfu.media.allocator import StreamAllocator, _bandwidth_cap, choose_layers, choose_paused
from sfu.media.bwe import STALE_MS, BandwidthEstimator
from sfu.media.forwarder import Forwarder
from sfu.media.selector import REASON_BANDWIDTH, SimulcastSelector
from tests.unit.media.test_simulcast import FakeSink, simulcast_feed

QHF = [150_000, 500_000, 1_500_000]

Demand = tuple[list[int | None], int, int]


@pytest.mark.parametrize(
    ("name", "budget", "demands", "expected"),
    [
        ("plenty: everyone gets the top", 10_000_000, [(QHF, 2, 2), (QHF, 2, 2)], [2, 2]),
        ("too little: the lowest anyway", 100_000, [(QHF, 2, 2), (QHF, 2, 0)], [0, 0]),
        ("round robin: one upgrade each before a second", 1_400_000, [(QHF, 2, 0), (QHF, 2, 0)], [1, 1]),
        ("the max layer (set_quality) is respected", 10_000_000, [(QHF, 1, 1)], [1]),
        ("layers that do not arrive are skipped", 10_000_000, [([150_000, None, 1_500_000], 2, 0)], [2]),
        ("nothing arrives: no cap", 1_000_000, [([None, None, None], 2, 2)], [-1]),
        ("keeping the current layer needs no headroom", 1_500_000, [(QHF, 2, 2)], [2]),
        ("going up needs 25% headroom", 1_500_000, [(QHF, 2, 1)], [1]),
    ],
)
def test_choose_layers(name: str, budget: int, demands: list[Demand], expected: list[int]) -> None:
    assert choose_layers(budget, demands) == expected, name


@pytest.mark.parametrize(
    ("name", "layer", "max_layer", "spare", "expected"),
    [
        ("the budget stopped it: that is the cap", 1, 2, 10_000_000, 1),
        ("the preference stopped it: the cap goes as far as the spare budget", 0, 0, 500_000, 1),
        ("plenty spare: no bandwidth cap below the top", 0, 0, 10_000_000, 2),
        ("nothing spare: the cap is the layer it has", 0, 0, 0, 0),
    ],
)
def test_bandwidth_cap_above_the_preference(
    name: str, layer: int, max_layer: int, spare: int, expected: int
) -> None:
    assert _bandwidth_cap(layer, max_layer, QHF, spare) == expected, name


def test_bandwidth_estimate_drops_at_once_rises_slowly_and_goes_stale() -> None:
    bwe = BandwidthEstimator()
    assert bwe.estimate_bps(0) == 0
    bwe.on_remb(1_000_000, 1000)
    assert bwe.estimate_bps(1000) == 1_000_000
    bwe.on_remb(2_000_000, 2000)
    assert bwe.estimate_bps(2000) == 1_300_000
    bwe.on_remb(400_000, 3000)
    assert bwe.estimate_bps(3000) == 400_000
    # no REMB for a while (paused video sends none): the last estimate holds, "unknown" is not "unlimited"
    assert bwe.estimate_bps(3000 + STALE_MS) == 400_000
    bwe.on_remb(2_000_000, 3000 + STALE_MS)  # a stale estimate is replaced, not averaged
    assert bwe.estimate_bps(3000 + STALE_MS) == 2_000_000


@pytest.mark.parametrize(
    ("name", "fraction", "expected"),
    [
        ("no loss: the REMB alone", 0, 1_000_000),
        ("5% loss: hold", 13, 1_000_000),
        ("25% loss: cut by half the loss", 64, 875_000),
    ],
)
def test_receiver_report_loss_caps_the_remb(name: str, fraction: int, expected: int) -> None:
    bwe = BandwidthEstimator()
    bwe.on_remb(1_000_000, 0)
    bwe.on_receiver_report(fraction, 10, 25.0, 1000)
    assert bwe.estimate_bps(1000) == expected, name
    assert bwe.rtt_ms == 25.0


def test_bandwidth_cap_and_preference_combine_in_the_selector() -> None:
    selector = SimulcastSelector(3)
    selector.set_available(0b111)
    assert selector.set_bandwidth_layer(0) and selector.target_layer == 0
    assert selector.reason == REASON_BANDWIDTH
    assert not selector.set_max_layer(1)  # the cap still holds
    assert selector.set_bandwidth_layer(2) and selector.target_layer == 1


@pytest.mark.parametrize(
    ("name", "budget", "lowest", "paused", "expected"),
    [
        ("all fit", 1_000_000, [150_000, 150_000], [False, False], [False, False]),
        ("the last feed goes first", 200_000, [150_000, 150_000], [False, False], [False, True]),
        ("nothing fits: every video pauses", 100_000, [150_000, 150_000], [False, False], [True, True]),
        ("resuming needs 30% headroom", 180_000, [150_000], [True], [True]),
        ("with it the feed resumes", 200_000, [150_000], [True], [False]),
        ("a later feed never jumps the queue", 330_000, [300_000, 20_000], [True, False], [True, True]),
    ],
)
def test_choose_paused(
    name: str, budget: int, lowest: list[int], paused: list[bool], expected: list[bool]
) -> None:
    assert choose_paused(budget, lowest, paused) == expected, name


def _allocator_on_one_feed() -> tuple[StreamAllocator, Forwarder, FakeSink]:
    head = simulcast_feed()
    for receiver, bps in zip(head.layers, QHF, strict=True):
        receiver.bitrate_bps = bps
    sink = FakeSink()
    f = Forwarder(head, sink, mid="1", ssrc=9, payload_type=96, initial_seq=1, initial_ts=0)
    f.rtx_payload_type, f.rtx_ssrc = 97, 10
    head.add_forwarder(f)
    return StreamAllocator(), f, sink


async def test_allocator_caps_by_remb_probes_with_padding_and_upgrades_when_the_estimate_grows() -> None:
    allocator, f, sink = _allocator_on_one_feed()
    ms = 1_000_000

    def run(t0_ms: int, t1_ms: int, remb: int) -> None:
        for t in range(t0_ms, t1_ms, 50):
            if t % 1000 == 0:
                allocator.bwe.on_remb(remb, t)
                allocator.allocate([f], t * ms)
                f.selector.switched(f.selector.target_layer)  # as if its key frame came at once
            if allocator.probing:
                allocator.tick([f], sink, t * ms)

    run(1000, 2000, 300_000)
    assert f.selector.target_layer == 0 and f.selector.reason == REASON_BANDWIDTH
    assert allocator.probes == 0 and not sink.sent  # no probe right after a decrease...
    run(2000, 6000, 300_000)
    assert allocator.probes == 0 and not sink.sent  # ...for 5 s
    run(6000, 6150, 300_000)
    assert allocator.probes == 1 and allocator.prober.sending
    await asyncio.sleep(0.1)  # a tick's padding goes out in slices 10 ms apart
    padding = [p for p in sink.sent if p[1] & 0x7F == 97]
    assert padding and all(p[0] & 0x20 and len(p) == 12 + 255 and p[-1] == 255 for p in padding)
    assert {struct.unpack_from("!I", p, 8)[0] for p in padding} == {10}  # on the RTX SSRC only
    seqs = [struct.unpack_from("!H", p, 2)[0] for p in padding]
    assert all((b - a) & 0xFFFF == 1 for a, b in itertools.pairwise(seqs))
    run(6150, 9000, 300_000)  # the estimate did not grow: still q, and the next probe waits longer
    await asyncio.sleep(0.1)
    assert f.selector.target_layer == 0 and allocator.probe_successes == 0
    probes, sent = allocator.probes, len(sink.sent)
    run(9000, 11000, 300_000)
    assert allocator.probes == probes and len(sink.sent) == sent  # backed off: nothing on the wire
    run(11000, 22000, 800_000)  # now the REMB says 800 kbit/s: h fits
    assert f.selector.target_layer == 1
    assert allocator.prober.bytes_sent == allocator.prober.packets_sent * (12 + 255) > 0


def test_allocator_pauses_video_when_the_lowest_layer_does_not_fit_and_resumes_it() -> None:
    allocator, f, _sink = _allocator_on_one_feed()
    allocator.bwe.on_remb(140_000, 0)  # q (150 kbit/s) does not fit
    allocator.allocate([f], 0)
    assert not f.paused  # not on one allocation: a single overuse may have caused it
    allocator.allocate([f], 1_000_000_000)
    allocator.allocate([f], 2_000_000_000)
    assert f.paused and f.bandwidth_paused and not f.user_paused and allocator.pauses == 1
    allocator.bwe.on_remb(180_000, 5000)  # fits, but not with the 30% headroom to resume
    allocator.allocate([f], 5_000_000_000)
    assert f.paused
    allocator.bwe.on_remb(400_000, 6000)  # a rise is averaged in: 180k + 30% of the difference
    allocator.allocate([f], 6_000_000_000)
    assert not f.paused
    f.set_paused(True)  # the subscriber's own pause is left alone by the allocator
    allocator.allocate([f], 7_000_000_000)
    assert f.paused and f.user_paused
