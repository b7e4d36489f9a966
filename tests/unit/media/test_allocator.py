"""StreamAllocator's pure parts as tables: layer choice per budget, and the REMB smoothing."""

from __future__ import annotations

import pytest

from sfu.media.allocator import choose_layers
from sfu.media.bwe import STALE_MS, BandwidthEstimator
from sfu.media.selector import REASON_BANDWIDTH, SimulcastSelector

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


def test_bandwidth_estimate_drops_at_once_rises_slowly_and_goes_stale() -> None:
    bwe = BandwidthEstimator()
    assert bwe.estimate_bps(0) == 0
    bwe.on_remb(1_000_000, 1000)
    assert bwe.estimate_bps(1000) == 1_000_000
    bwe.on_remb(2_000_000, 2000)
    assert bwe.estimate_bps(2000) == 1_300_000
    bwe.on_remb(400_000, 3000)
    assert bwe.estimate_bps(3000) == 400_000
    assert bwe.estimate_bps(3000 + STALE_MS) == 0


def test_bandwidth_cap_and_preference_combine_in_the_selector() -> None:
    selector = SimulcastSelector(3)
    selector.set_available(0b111)
    assert selector.set_bandwidth_layer(0) and selector.target_layer == 0
    assert selector.reason == REASON_BANDWIDTH
    assert not selector.set_max_layer(1)  # the cap still holds
    assert selector.set_bandwidth_layer(2) and selector.target_layer == 1


def test_allocator_caps_by_remb_then_probes_one_layer_up_and_keeps_it_if_the_estimate_grows() -> None:
    from sfu.media.allocator import StreamAllocator
    from sfu.media.forwarder import Forwarder
    from tests.unit.media.test_simulcast import FakeSink, simulcast_feed

    s = 1_000_000_000
    head = simulcast_feed()
    for receiver, bps in zip(head.layers, QHF, strict=True):
        receiver.bitrate_bps = bps
    f = Forwarder(head, FakeSink(), mid="1", ssrc=9, payload_type=96, initial_seq=1, initial_ts=0)
    head.add_forwarder(f)
    allocator = StreamAllocator()

    def tick(t_s: int, remb: int) -> int:
        allocator.bwe.on_remb(remb, t_s * 1000)
        allocator.allocate([f], t_s * s)
        f.selector.switched(f.selector.target_layer)  # as if its key frame came at once
        return f.selector.target_layer

    assert tick(1, 300_000) == 0  # capped to q
    assert f.selector.reason == REASON_BANDWIDTH
    assert [tick(t, 300_000) for t in range(2, 9)] == [0] * 7
    assert tick(9, 300_000) == 1  # 8 s steady: probe h
    assert [tick(t, 300_000) for t in (10, 11)] == [1, 1]  # held while the estimate may grow
    assert tick(12, 300_000) == 0  # it did not: back to q
    for t in range(13, 21):
        tick(t, 300_000)
    assert f.selector.target_layer == 1  # the next probe
    assert tick(21, 800_000) == 1 and tick(24, 800_000) == 1  # this time the estimate grew: h stays
