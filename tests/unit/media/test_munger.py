from __future__ import annotations

import pytest

from sfu.media.munger import Munger

SECOND_NS = 1_000_000_000


@pytest.mark.parametrize(
    ("initial_seq", "in_seqs", "expected"),
    [
        (100, [5000, 5001, 5002], [100, 101, 102]),
        (65534, [10, 11, 12, 13], [65534, 65535, 0, 1]),  # 65535 -> 0 wrap on the way out
        (7, [65535, 0, 1], [7, 8, 9]),  # wrap on the way in
        (7, [10, 12, 11], [7, 9, 8]),  # reordering keeps relative order, no renumbering
    ],
)
def test_munger_maps_seqs_from_the_first_packet(
    initial_seq: int, in_seqs: list[int], expected: list[int]
) -> None:
    m = Munger(ssrc=1, clock_rate=90000, initial_seq=initial_seq, initial_ts=0)
    m.resync(in_seqs[0], 1000, 1)
    assert [m.munge(s, 1000, 1)[0] for s in in_seqs] == expected


def test_munger_resumes_seq_plus_one_and_ts_by_wall_time_after_a_pause() -> None:
    m = Munger(ssrc=1, clock_rate=90000, initial_seq=500, initial_ts=4_294_967_000)
    m.resync(100, 90_000, SECOND_NS)
    assert m.munge(100, 90_000, SECOND_NS) == (500, 4_294_967_000)
    assert m.munge(101, 93_000, SECOND_NS + 33_000_000) == (501, (4_294_967_000 + 3000) & 0xFFFFFFFF)
    m.stop()
    # the publisher jumped far (new source, or its own pause): we continue from our own last packet
    m.resync(40_000, 7_000_000, 3 * SECOND_NS + 33_000_000)
    out_seq, out_ts = m.munge(40_000, 7_000_000, 3 * SECOND_NS + 33_000_000)
    assert out_seq == 502
    assert out_ts == (4_294_967_000 + 3000 + 2 * 90_000) & 0xFFFFFFFF


def test_munger_maps_subscriber_nacks_back_only_inside_the_current_epoch() -> None:
    m = Munger(ssrc=1, clock_rate=90000, initial_seq=0, initial_ts=0)
    assert m.feed_seq(0) == -1
    m.resync(1000, 0, 1)
    m.munge(1000, 0, 1)
    m.munge(1001, 0, 1)
    assert m.feed_seq(1) == 1001
    assert m.feed_seq(65535) == -1  # before the epoch's first packet
