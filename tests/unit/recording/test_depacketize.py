"""Depacketizers: payload descriptors per RFC, frame assembly, reordering, loss -> wait for a key frame."""

from __future__ import annotations

import struct

import pytest

from sfu.recording.depacketize import (
    ANNEX_B_START,
    Depacketizer,
    FrameDrop,
    Part,
    h264_part,
    vp8_part,
    vp9_part,
)

KEY = b"\x10\x02\x00\x9d\x01\x2a"  # a VP8 frame tag with P=0 (key frame), then the start code
INTER = b"\x11\x02\x00"  # P=1


def rtp(seq: int, ts: int, payload: bytes, marker: bool = False, pt: int = 96) -> bytes:
    header = struct.pack("!BBHII", 0x80, (0x80 if marker else 0) | pt, seq & 0xFFFF, ts & 0xFFFFFFFF, 1)
    return header + payload


@pytest.mark.parametrize(
    ("descriptor", "starts"),
    [
        (b"\x10", True),  # S=1, PID=0, no extensions
        (b"\x90\x80\x05", True),  # X, I with a 7-bit PictureID
        (b"\x90\x80\x92\x34", True),  # X, I with a 15-bit PictureID (M bit)
        (b"\x90\xf0\x81\x22\x11\x40", True),  # X, I(15) + L (TL0PICIDX) + T/K byte
        (b"\x90\x20\x40", True),  # X, only K: one TID/Y/KEYIDX byte
        (b"\x00", False),  # continuation packet (S=0)
        (b"\x11", False),  # S=1 but PID=1: not the first partition
    ],
)
def test_vp8_descriptor_variants_leave_exactly_the_vp8_payload(descriptor: bytes, starts: bool) -> None:
    part = vp8_part(descriptor + KEY)
    assert part == Part(KEY, starts, starts)


def test_vp8_inter_frame_is_not_a_key_frame_and_truncated_descriptors_are_malformed() -> None:
    assert vp8_part(b"\x10" + INTER) == Part(INTER, True, False)
    assert vp8_part(b"\x90") is None
    assert vp8_part(b"\x90\x80") is None


@pytest.mark.parametrize(
    ("descriptor", "starts", "key"),
    [
        (b"\x08", True, True),  # B, not inter-predicted
        (b"\x48", True, False),  # P: inter-predicted
        (b"\x04", False, False),  # E only: last packet of a frame
        (b"\x88\x80\x01", True, True),  # I with a 15-bit picture id
        (b"\xa8\x01\x00\x07", True, True),  # I(7) + L non-flexible: layer byte + TL0PICIDX
        (b"\xa8\x01\x02\x07", True, False),  # spatial layer 1: not a key frame of the stream
        (b"\x5c\x03\x02", True, False),  # F + P: P_DIFF chained by the N bit
        (b"\x0a\x18\x01\x40\x00\xf0\x01\x04\x01", True, True),  # V: SS, Y (one layer), G (one group, R=1)
    ],
)
def test_vp9_descriptor_variants(descriptor: bytes, starts: bool, key: bool) -> None:
    assert vp9_part(descriptor + b"\xaa\xbb") == Part(b"\xaa\xbb", starts, key)


def test_h264_single_nal_stap_a_and_fu_a_become_annex_b() -> None:
    sps, pps, idr = b"\x67\x42\x00\x1f", b"\x68\xce\x3c\x80", b"\x65\x88\x84"
    assert h264_part(idr) == Part(ANNEX_B_START + idr, False, True)
    assert h264_part(b"\x41\x9a") == Part(ANNEX_B_START + b"\x41\x9a", False, False)
    stap = b"\x78" + b"".join(struct.pack("!H", len(n)) + n for n in (sps, pps, idr))
    annex_b = ANNEX_B_START + sps + ANNEX_B_START + pps + ANNEX_B_START + idr
    assert h264_part(stap) == Part(annex_b, False, True)
    assert h264_part(b"\x78\x00\x09\x67") is None  # a STAP-A size past the end
    # FU-A of an IDR (type 5), NRI 3: indicator 0x7c, headers S / middle / E
    start, middle, end = h264_part(b"\x7c\x85AB"), h264_part(b"\x7c\x05CD"), h264_part(b"\x7c\x45EF")
    assert start == Part(ANNEX_B_START + b"\x65AB", False, True)
    assert middle == Part(b"CD", False, False) and end == Part(b"EF", False, False)


def _frames(depacketizer: Depacketizer, packets: list[bytes]) -> list[tuple[int, bytes, bool]]:
    out = [f for p in packets for f in depacketizer.push(p)] + depacketizer.flush()
    return [(f.ts, f.data, f.key_frame) for f in out]


def test_a_vp8_frame_spanning_packets_is_joined_even_when_they_arrive_out_of_order() -> None:
    packets = [rtp(10, 3000, b"\x10" + KEY), rtp(11, 3000, b"\x00mid"), rtp(12, 3000, b"\x00end", True),
               rtp(13, 6000, b"\x10" + INTER, True)]
    in_order = _frames(Depacketizer("video/VP8"), packets)
    shuffled = _frames(Depacketizer("video/VP8"), [packets[0], packets[2], packets[1], packets[3]])
    assert in_order == shuffled == [(3000, KEY + b"midend", True), (6000, INTER, False)]


def test_loss_drops_the_broken_frame_and_everything_until_the_next_key_frame() -> None:
    depacketizer = Depacketizer("video/VP8", window=2)
    packets = [
        rtp(1, 0, b"\x10" + KEY, True),
        rtp(2, 3000, b"\x10" + INTER),  # 3 (end of this frame) is lost
        rtp(4, 6000, b"\x10" + INTER, True),  # complete, but references a broken frame
        rtp(5, 9000, b"\x10" + INTER, True),
        rtp(6, 12000, b"\x10" + KEY, True),
        rtp(7, 15000, b"\x10" + INTER, True),
    ]
    assert [ts for ts, _, _ in _frames(depacketizer, packets)] == [0, 12000, 15000]
    assert depacketizer.drops[FrameDrop.LOST_PACKETS] == 1
    assert depacketizer.drops[FrameDrop.INCOMPLETE] == 1
    assert depacketizer.drops[FrameDrop.WAITING_FOR_KEY_FRAME] == 2


def test_video_waits_for_a_key_frame_at_the_start_and_drops_a_frame_joined_midway() -> None:
    depacketizer = Depacketizer("video/VP8")
    packets = [rtp(1, 0, b"\x00tail", True), rtp(2, 3000, b"\x10" + INTER, True),
               rtp(3, 6000, b"\x10" + KEY, True)]
    assert [ts for ts, _, _ in _frames(depacketizer, packets)] == [6000]
    assert depacketizer.drops[FrameDrop.INCOMPLETE] == 1
    assert depacketizer.drops[FrameDrop.WAITING_FOR_KEY_FRAME] == 1


def test_sequence_and_timestamp_wrap_around_keep_one_increasing_clock() -> None:
    packets = [rtp(65534, 0xFFFFF000, b"\x10" + KEY, True), rtp(65535, 0xFFFFFBB8, b"\x10" + INTER, True),
               rtp(0, 0x00000770, b"\x10" + INTER, True)]
    assert [ts for ts, _, _ in _frames(Depacketizer("video/VP8"), packets)] == [
        0xFFFFF000, 0xFFFFFBB8, 0x100000770]


def test_opus_needs_no_key_frame_after_loss_and_late_or_duplicate_packets_are_counted() -> None:
    depacketizer = Depacketizer("audio/opus", window=3)
    packets = [rtp(1, 0, b"a"), rtp(1, 0, b"a"), rtp(2, 960, b"b"), rtp(5, 3840, b"e"), rtp(5, 3840, b"e"),
               rtp(6, 4800, b"f"), rtp(7, 5760, b"g"), rtp(3, 1920, b"c")]
    assert _frames(depacketizer, packets) == [(0, b"a", True), (960, b"b", True), (3840, b"e", True),
                                              (4800, b"f", True), (5760, b"g", True)]
    assert depacketizer.drops[FrameDrop.DUPLICATE] == 1  # 5 again while it was held
    assert depacketizer.drops[FrameDrop.LOST_PACKETS] == 2  # 3 and 4, given up when 6 came
    assert depacketizer.drops[FrameDrop.LATE] == 2  # 1 again after its release, and 3 too late


def test_h264_access_unit_from_stap_a_and_fu_a_is_one_annex_b_frame() -> None:
    sps, pps = b"\x67\x42\x00\x1f", b"\x68\xce\x3c\x80"
    stap = b"\x78" + b"".join(struct.pack("!H", len(n)) + n for n in (sps, pps))
    packets = [rtp(1, 0, stap), rtp(2, 0, b"\x7c\x85AB"), rtp(3, 0, b"\x7c\x45CD", True),
               rtp(4, 3000, b"\x41\x9a", True)]
    assert _frames(Depacketizer("video/H264"), packets) == [
        (0, ANNEX_B_START + sps + ANNEX_B_START + pps + ANNEX_B_START + b"\x65ABCD", True),
        (3000, ANNEX_B_START + b"\x41\x9a", False),
    ]


def test_malformed_packets_are_counted_not_raised() -> None:
    depacketizer = Depacketizer("video/VP8")
    assert depacketizer.push(b"\x80\x60") == []
    assert depacketizer.push(b"\x00" * 12) == []
    assert depacketizer.drops[FrameDrop.MALFORMED] == 2
    with pytest.raises(ValueError, match="cannot depacketize"):
        Depacketizer("video/AV1")


def test_a_video_frame_the_stream_ended_inside_is_cut_at_end_not_incomplete() -> None:
    depacketizer = Depacketizer("video/VP8")
    packets = [rtp(1, 0, b"\x10" + KEY, True), rtp(2, 3000, b"\x10" + INTER)]  # the stop came before 3
    assert [ts for ts, _, _ in _frames(depacketizer, packets)] == [0]
    assert depacketizer.drops[FrameDrop.CUT_AT_END] == 1
    assert depacketizer.drops[FrameDrop.INCOMPLETE] == 0 and depacketizer.drops[FrameDrop.LOST_PACKETS] == 0
