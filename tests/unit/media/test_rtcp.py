"""RTCP parse/build: round trips per packet type, known byte vectors, and fuzzing that parse never raises."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sfu.media.rtcp import (
    Bye,
    Fir,
    Nack,
    Pli,
    ReceiverReport,
    Remb,
    ReportBlock,
    RtcpPacket,
    Sdes,
    SdesChunk,
    SenderReport,
    TransportCc,
    build_fir,
    build_nack,
    build_pli,
    build_remb,
    build_rr,
    build_sdes,
    build_sr,
    iter_rtcp,
    ntp_now,
    parse_compound,
)

BLOCK = ReportBlock(0x11223344, 25, -3, 70000, 120, 0xAABBCCDD, 65536)

ROUND_TRIPS: list[RtcpPacket] = [
    SenderReport(1, 0xE1234567_89ABCDEF, 90000, 10, 1200),
    SenderReport(1, 5, 6, 7, 8, (BLOCK, BLOCK._replace(ssrc=9, packets_lost=0x7FFFFF))),
    ReceiverReport(42),
    ReceiverReport(42, (BLOCK,)),
    Sdes((SdesChunk(7, "user@host"),)),
    Sdes((SdesChunk(7, "abc"), SdesChunk(8, ""), SdesChunk(9, "x" * 255))),
    Bye((1,)),
    Bye((1, 2, 3), "left the session"),
    Bye(()),
    Nack(1, 2, (100,)),
    Nack(1, 2, (100, 101, 116)),
    Nack(1, 2, (100, 117, 118, 200)),
    Nack(1, 2, (65534, 65535, 0, 1)),
    Pli(0xDEADBEEF, 0xCAFEBABE),
    Fir(5, ((6, 0),)),
    Fir(5, ((6, 255), (7, 1))),
    Remb(5, 1_000_000, (6,)),
    Remb(5, 0x3FFFF << 10, (6, 7, 8)),
    Remb(5, 0, ()),
    TransportCc(1, 2, 100, 0x123456, 7, (250, None, 1000)),
    TransportCc(1, 2, 65530, 1, 0, (0,) * 20 + (None,) * 9000 + (-250,)),
    TransportCc(1, 2, 0, 0, 255, (63750, 64000, -8192000, None, 250, 250, 250, None)),
    TransportCc(1, 2, 0, 0, 0, tuple(None if i % 3 else 500 for i in range(40))),
    TransportCc(1, 2, 0, 0, 0, ()),
]


@pytest.mark.parametrize("packet", ROUND_TRIPS, ids=lambda p: type(p).__name__)
def test_each_packet_parses_back_to_itself(packet: RtcpPacket) -> None:
    data = packet.to_bytes()
    assert len(data) % 4 == 0
    assert parse_compound(data) == [packet]


def test_a_compound_datagram_parses_to_every_packet_in_order() -> None:
    data = b"".join(p.to_bytes() for p in ROUND_TRIPS)
    assert parse_compound(data) == ROUND_TRIPS
    assert [pt for pt, _, _ in iter_rtcp(data)][:3] == [200, 200, 201]


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (build_pli(1, 2), bytes.fromhex("81ce00020000000100000002")),
        (build_fir(1, 2, 3), bytes.fromhex("84ce000400000001000000000000000203000000")),
        (build_nack(1, 2, [10, 11, 26]), bytes.fromhex("81cd00030000000100000002000a8001")),
        (build_rr(1), bytes.fromhex("80c9000100000001")),
        (build_sdes(1, "ab"), bytes.fromhex("81ca0003000000010102616200000000")),
        # 1 Mbit/s = mantissa 250000 (0x3D090) << exponent 2
        (
            build_remb(1, 1_000_000, [2]),
            bytes.fromhex("8fce0005000000010000000052454d42010bd09000000002"),
        ),
        (
            build_sr(1, 2, 3, 4, 5),
            bytes.fromhex("80c80006000000010000000000000002000000030000000400000005"),
        ),
    ],
)
def test_builders_produce_the_bytes_the_rfcs_specify(data: bytes, expected: bytes) -> None:
    assert data == expected


def test_a_hand_built_transport_cc_feedback_parses_with_either_padding() -> None:
    # base 1, 3 packets, ref time 1, fb count 0, run-length chunk "3 x small delta", deltas 1, 2, 3 ticks
    expected = [TransportCc(1, 2, 1, 1, 0, (250, 500, 750))]
    zero_padded = bytes.fromhex("8fcd0006000000010000000200010003000001002003010203000000")
    p_bit_padded = bytes.fromhex("afcd0006000000010000000200010003000001002003010203000003")
    assert parse_compound(zero_padded) == expected
    assert parse_compound(p_bit_padded) == expected


def test_nack_builder_orders_seqs_across_the_16_bit_wrap() -> None:
    assert parse_compound(build_nack(1, 2, [1, 65535, 0]))[0] == Nack(1, 2, (65535, 0, 1))
    assert parse_compound(build_nack(1, 2, [5, 3, 3]))[0] == Nack(1, 2, (3, 5))


def test_remb_rounds_a_bitrate_down_to_its_18_bit_mantissa() -> None:
    (remb,) = parse_compound(build_remb(1, 123_456_789, [2]))
    assert isinstance(remb, Remb)
    assert 123_456_789 - 1024 < remb.bitrate_bps <= 123_456_789


def test_an_ntp_timestamp_counts_from_1900() -> None:
    assert ntp_now(0.5) == (2208988800 << 32) + (1 << 31)


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b"", []),
        (b"\x81\xce", []),
        (bytes.fromhex("41ce00020000000100000002"), []),  # version 1
        (build_pli(1, 2)[:-1], []),  # length past the end
        (build_pli(1, 2) + b"\xff\xff", [Pli(1, 2)]),  # trailing garbage
        (build_pli(1, 2) + build_pli(3, 4)[:8], [Pli(1, 2)]),  # truncated second packet
        (bytes.fromhex("80c8000100000001") + build_pli(1, 2), [Pli(1, 2)]),  # SR too short: skipped
        (bytes.fromhex("81cb0000") + build_pli(1, 2), [Pli(1, 2)]),  # BYE counts 1 SSRC, has none
        (bytes.fromhex("80cf0000") + build_pli(1, 2), [Pli(1, 2)]),  # unknown type 207: skipped
        (bytes.fromhex("8fce0003000000010000000041424344") + build_pli(1, 2), [Pli(1, 2)]),  # not REMB
    ],
)
def test_malformed_input_yields_what_could_be_parsed(data: bytes, expected: list[RtcpPacket]) -> None:
    assert parse_compound(data) == expected


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=200))
def test_parse_never_raises_on_random_bytes(data: bytes) -> None:
    parse_compound(data)


@settings(max_examples=400, deadline=None)
@given(
    st.integers(0, 3),
    st.binary(max_size=120),
    st.integers(0, 31),
    st.sampled_from([200, 201, 202, 203, 205, 206]),
)
def test_parse_never_raises_on_well_framed_random_bodies(
    p_bit: int, body: bytes, count: int, pt: int
) -> None:
    body = body + bytes(-len(body) % 4)
    head = bytes((0x80 | (p_bit & 1) << 5 | count, pt)) + (len(body) // 4).to_bytes(2, "big")
    parse_compound(head + body + build_pli(1, 2))


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(0, 0xFFFF), min_size=1, max_size=60))
def test_nack_round_trips_any_set_of_seqs_within_half_the_space(seqs: list[int]) -> None:
    base = seqs[0]
    window = sorted({(s - base) % 0x8000 for s in seqs})
    wanted = [(base + d) & 0xFFFF for d in window]
    (nack,) = parse_compound(build_nack(1, 2, wanted))
    assert isinstance(nack, Nack)
    assert list(nack.seqs) == wanted


@settings(max_examples=200, deadline=None)
@given(st.lists(st.one_of(st.none(), st.integers(-32768, 32767).map(lambda t: t * 250)), max_size=300))
def test_transport_cc_round_trips_any_delta_sequence(deltas: list[int | None]) -> None:
    packet = TransportCc(3, 4, 65000, 0xABCDEF, 9, tuple(deltas))
    assert parse_compound(packet.to_bytes()) == [packet]
