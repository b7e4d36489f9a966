"""StreamAllocator's pure parts as tables: layer choice per budget, and the REMB smoothing."""

from __future__ import annotations

import asyncio
import itertools
import struct

import pytest

from sfu.media.allocator import StreamAllocator, _bandwidth_cap, choose_layers, choose_paused
from sfu.media.bwe import STALE_MS, BandwidthEstimator
from sfu.media.forwarder import Forwarder
from sfu.media.publisher import PublisherTransport
from sfu.media.receiver import Receiver
from sfu.media.selector import REASON_BANDWIDTH, SimulcastSelector
from tests.unit.media.test_simulcast import FakeListener, FakeSink, simulcast_feed

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
    ("name", "budget", "tiers", "expected"),
    [
        ("one tier: round robin", 1_400_000, [0, 0], [1, 1]),
        ("the first tier is raised to its top before the second moves", 2_000_000, [0, 1], [2, 0]),
        ("the tier, not the order, decides", 2_000_000, [1, 0], [0, 2]),
        ("what the first tier cannot use goes to the next", 2_500_000, [0, 1], [2, 1]),
        ("one upgrade only: the first tier's", 1_000_000, [1, 0], [0, 1]),
    ],
)
def test_choose_layers_by_priority(name: str, budget: int, tiers: list[int], expected: list[int]) -> None:
    qhf: list[int | None] = list(QHF)
    demands: list[Demand] = [(qhf, 2, 0), (qhf, 2, 0)]
    assert choose_layers(budget, demands, tiers) == expected, name


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


def _video_forwarder(
    head: Receiver, sink: FakeSink, events: list[tuple[str, str, str, bool]], name: str
) -> Forwarder:
    f = Forwarder(head, sink, mid=name, ssrc=9, payload_type=96, initial_seq=1, initial_ts=0)
    head.add_forwarder(f)
    f.on_layer_changed = lambda fw, rid, reason: events.append((fw.mid, rid, reason, fw.bandwidth_paused))
    return f


def _three_feeds(events: list[tuple[str, str, str, bool]]) -> tuple[Forwarder, Forwarder, Forwarder]:
    """A camera, an active speaker's camera and a screen share, subscribed in that order (q/h/f each)."""
    sink = FakeSink()
    feeds = []
    for name in ("other", "speaker", "screen"):
        head = simulcast_feed()
        for receiver, bps in zip(head.layers, QHF, strict=True):
            receiver.bitrate_bps = bps
        feeds.append(_video_forwarder(head, sink, events, name))
    other, speaker, screen = feeds
    speaker.speaking = True
    screen.screen = True
    return other, speaker, screen


def _allocate_for(
    allocator: StreamAllocator, fs: list[Forwarder], budget: int, t0_s: int, n: int = 4
) -> None:
    for t in range(t0_s, t0_s + n):
        allocator.bwe.on_remb(budget, t * 1000)
        allocator.allocate(fs, t * 1_000_000_000)


@pytest.mark.parametrize(
    ("budget", "expected"),
    [
        (10_000_000, {"screen": 2, "speaker": 2, "other": 2}),
        (2_500_000, {"screen": 2, "speaker": 1, "other": 0}),
        (2_200_000, {"screen": 2, "speaker": 0, "other": 0}),
        (2_000_000, {"screen": 1, "speaker": 1, "other": 1}),  # the top step does not fit: others move
        (1_000_000, {"screen": 1, "speaker": 0, "other": 0}),
        (350_000, {"screen": 0, "speaker": 0, "other": "paused"}),
        (200_000, {"screen": 0, "speaker": "paused", "other": "paused"}),
        (100_000, {"screen": "paused", "speaker": "paused", "other": "paused"}),
    ],
)
def test_allocator_serves_screen_share_then_speakers_then_others(
    budget: int, expected: dict[str, object]
) -> None:
    events: list[tuple[str, str, str, bool]] = []
    fs = list(_three_feeds(events))
    allocator = StreamAllocator()
    _allocate_for(allocator, fs, budget, 1)
    got = {f.mid: "paused" if f.paused else f.selector.target_layer for f in fs}
    assert got == expected
    paused = [mid for mid, v in expected.items() if v == "paused"]
    assert sorted(e[0] for e in events) == sorted(paused)  # one announcement per paused feed
    assert all(rid == "" and reason == REASON_BANDWIDTH and paused for _m, rid, reason, paused in events)


def test_a_new_active_speaker_moves_ahead_of_the_others() -> None:
    events: list[tuple[str, str, str, bool]] = []
    other, speaker, screen = _three_feeds(events)
    allocator = StreamAllocator()
    _allocate_for(allocator, [other, speaker, screen], 2_500_000, 1)
    assert (speaker.selector.target_layer, other.selector.target_layer) == (1, 0)
    speaker.speaking, other.speaking = False, True  # the session's speaker callback marks forwarders
    _allocate_for(allocator, [other, speaker, screen], 2_500_000, 5)
    assert (speaker.selector.target_layer, other.selector.target_layer) == (0, 1)


def test_pause_and_resume_for_bandwidth_are_announced() -> None:
    events: list[tuple[str, str, str, bool]] = []
    other, speaker, screen = _three_feeds(events)
    fs = [other, speaker, screen]
    allocator = StreamAllocator()
    _allocate_for(allocator, fs, 350_000, 1)
    assert events == [("other", "", REASON_BANDWIDTH, True)]
    _allocate_for(allocator, fs, 2_000_000, 5, n=6)  # rises are averaged in: a few seconds
    assert not other.paused
    assert events[1:] == [("other", "q", REASON_BANDWIDTH, False)]  # resumes on its lowest layer


def test_a_paused_feed_whose_layers_all_stopped_still_resumes() -> None:
    """Dynacast: once every subscriber of a feed is paused, the publisher stops all its layers; the
    remembered bitrate must still let the allocator resume it (before: it stayed paused for good)."""
    events: list[tuple[str, str, str, bool]] = []
    other, speaker, screen = _three_feeds(events)
    fs = [other, speaker, screen]
    allocator = StreamAllocator()
    _allocate_for(allocator, fs, 350_000, 1)
    assert other.paused and other.receiver.wanted_mask == 0  # nobody wants any layer of it now
    for receiver in other.layers:
        receiver.bitrate_bps = 0
    other.receiver.set_active_layers(0, 5_000_000_000)  # the publisher stopped encoding them
    _allocate_for(allocator, fs, 2_000_000, 5, n=6)
    assert not other.paused and other.receiver.wanted_mask & 1


def _plain_video(bitrate_bps: int, events: list[tuple[str, str, str, bool]]) -> Forwarder:
    head = Receiver(FakeListener(), mid="0", kind="video", codec="video/VP8", clock_rate=90000,
                    payload_type=96, ssrc=4000)
    head.bitrate_bps = bitrate_bps
    return _video_forwarder(head, FakeSink(), events, "plain")


def test_video_without_simulcast_pauses_when_it_does_not_fit_and_resumes_with_headroom() -> None:
    events: list[tuple[str, str, str, bool]] = []
    f = _plain_video(300_000, events)
    allocator = StreamAllocator()
    _allocate_for(allocator, [f], 250_000, 1)  # just below its rate: no reason to pause the only layer
    assert not f.paused and events == []
    _allocate_for(allocator, [f], 140_000, 5)  # below half of it: paused
    assert f.paused and f.bandwidth_paused and events == [("plain", "", REASON_BANDWIDTH, True)]
    _allocate_for(allocator, [f], 350_000, 9)  # fits, not with 30% headroom
    assert f.paused
    _allocate_for(allocator, [f], 1_000_000, 13, n=4)
    assert not f.paused and events[1:] == [("plain", "", REASON_BANDWIDTH, False)]


async def test_publisher_measures_video_without_simulcast() -> None:
    publisher = PublisherTransport(["127.0.0.1"])
    try:
        head = Receiver(FakeListener(), mid="0", kind="video", codec="video/VP8", clock_rate=90000,
                        payload_type=96, ssrc=4000)
        publisher.receivers_by_mid["0"] = head
        publisher.check_layers(1_000_000_000, True)
        head.octets += 50_000
        publisher.check_layers(2_000_000_000, True)
        assert head.bitrate_bps == 400_000
        publisher.check_layers(2_050_000_000, False)  # between measurements: unchanged
        assert head.bitrate_bps == 400_000
    finally:
        await publisher.close()


def test_a_paused_feed_with_nothing_measured_is_not_left_paused() -> None:
    events: list[tuple[str, str, str, bool]] = []
    g = _plain_video(100_000, [])
    f = _plain_video(300_000, events)
    allocator = StreamAllocator()
    _allocate_for(allocator, [g, f], 120_000, 1)  # g's half (50k) fits, f's (150k) not in the rest
    assert f.bandwidth_paused and not g.paused
    f.set_paused(True)  # the subscriber's own pause: the allocator skips it and forgets its bitrate
    _allocate_for(allocator, [g, f], 120_000, 5, n=1)
    f.receiver.bitrate_bps = 0  # and nothing arrives any more
    f.set_paused(False)
    _allocate_for(allocator, [g, f], 120_000, 6, n=1)
    assert not f.paused and events[-1] == ("plain", "", REASON_BANDWIDTH, False)
