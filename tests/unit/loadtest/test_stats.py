"""Counting subscribers' arithmetic: loss, reordering, duplicates across the 65535 -> 0 wrap; stamps."""

from __future__ import annotations

import math

import pytest

from loadtest.stats import SendStamps, StreamStats, percentile, rtp_payload


@pytest.mark.parametrize(
    ("seqs", "received", "expected", "lost", "reordered", "duplicates"),
    [
        ([1, 2, 3, 4], 4, 4, 0, 0, 0),
        ([1, 2, 4, 5], 4, 5, 1, 0, 0),
        ([1, 3, 2, 4], 4, 4, 0, 1, 0),
        ([1, 2, 2, 3], 3, 3, 0, 0, 1),
        ([65534, 65535, 0, 1], 4, 4, 0, 0, 0),
        ([65534, 0, 65535, 1], 4, 4, 0, 1, 0),
        ([65535, 2], 2, 4, 2, 0, 0),
        ([10, 9, 11], 2, 2, 0, 0, 0),  # 9 is older than the first packet: not ours to count
    ],
)
def test_stream_stats_count_loss_reordering_and_duplicates_across_the_wrap(
    seqs: list[int], received: int, expected: int, lost: int, reordered: int, duplicates: int
) -> None:
    stats = StreamStats(90000)
    for i, seq in enumerate(seqs):
        stats.on_packet(seq, 3000 * i, 33_333_333 * i)
    assert (stats.received, stats.expected, stats.lost) == (received, expected, lost)
    assert (stats.reordered, stats.duplicates) == (reordered, duplicates)


def test_jitter_is_zero_when_packets_arrive_exactly_on_their_timestamps() -> None:
    stats = StreamStats(48000)
    for i in range(50):
        stats.on_packet(i, 960 * i, 20_000_000 * i)
    assert stats.jitter_ms == pytest.approx(0.0, abs=1e-6)


def test_jitter_grows_with_arrival_variation() -> None:
    stats = StreamStats(48000)
    for i in range(200):
        stats.on_packet(i, 960 * i, 20_000_000 * i + (5_000_000 if i % 2 else 0))
    assert 4.0 < stats.jitter_ms < 5.1  # converges towards the 5 ms alternation


def test_send_stamps_match_the_same_payload_of_the_same_publisher_only() -> None:
    stamps = SendStamps(ttl_ns=1_000)
    stamps.stamp(0, b"frame", 100)
    assert stamps.latency_ns(0, b"frame", 350) == 250
    assert stamps.latency_ns(1, b"frame", 350) is None
    assert stamps.latency_ns(0, b"other", 350) is None
    stamps.stamp(0, b"later", 2_000)  # expires the first stamp
    assert stamps.latency_ns(0, b"frame", 2_100) is None
    assert len(stamps.sent_ns_by_key) == 1


@pytest.mark.parametrize(
    ("packet", "payload"),
    [
        (bytes([0x80, 96]) + bytes(10) + b"abc", b"abc"),
        (bytes([0x81, 96]) + bytes(14) + b"abc", b"abc"),  # one CSRC
        (bytes([0x90, 96]) + bytes(10) + b"\xbe\xde\x00\x01" + bytes(4) + b"abc", b"abc"),  # extension
        (bytes([0xA0, 96]) + bytes(10) + b"abc\x00\x02", b"abc"),  # two bytes of padding
        (bytes(8), b""),
    ],
)
def test_rtp_payload_skips_csrcs_extension_and_padding(packet: bytes, payload: bytes) -> None:
    assert rtp_payload(packet) == payload


def test_percentile_is_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert (percentile(values, 0.5), percentile(values, 0.95), percentile(values, 0.99)) == (50, 95, 99)
    assert math.isnan(percentile([], 0.5))
