from __future__ import annotations

import struct

import pytest

from sfu.media import rtp


def packet(payload: bytes, *, ext: bytes = b"", profile: int = rtp.ONE_BYTE_PROFILE, pt: int = 96) -> bytes:
    b0 = 0x80 | (0x10 if ext else 0)
    header = struct.pack("!BBHII", b0, pt, 1, 2, 3)
    if ext:
        ext += bytes(-len(ext) % 4)
        header += struct.pack("!HH", profile, len(ext) // 4) + ext
    return header + payload


@pytest.mark.parametrize(
    ("payload", "key"),
    [
        (bytes([0x10, 0x00]), True),  # S=1 PID=0, P=0
        (bytes([0x10, 0x01]), False),  # inter frame
        (bytes([0x00, 0x00]), False),  # not the start of a partition
        (bytes([0x90, 0x80, 0x81, 0x23, 0x00]), True),  # X, I with 15-bit picture id
        (bytes([0x90, 0xE0, 0x05, 0x01, 0x20, 0x00]), True),  # X, I (7-bit), L, T
        (bytes([0x90, 0x80]), False),  # truncated
    ],
)
def test_vp8_key_frame_detection(payload: bytes, key: bool) -> None:
    data = packet(payload)
    assert rtp.is_vp8_key_frame(data, 12, len(data)) is key


@pytest.mark.parametrize(
    ("payload", "key"),
    [
        (bytes([0x65, 0]), True),  # IDR
        (bytes([0x67, 0]), True),  # SPS
        (bytes([0x41, 0]), False),  # non-IDR slice
        (bytes([0x78, 0, 2, 0x67, 0, 0, 2, 0x68, 0]), True),  # STAP-A with SPS
        (bytes([0x7C, 0x85, 0]), True),  # FU-A start of IDR
        (bytes([0x7C, 0x05, 0]), False),  # FU-A continuation
    ],
)
def test_h264_key_frame_detection(payload: bytes, key: bool) -> None:
    data = packet(payload)
    assert rtp.is_h264_key_frame(data, 12, len(data)) is key


@pytest.mark.parametrize(
    ("payload", "key"),
    [
        (bytes([0x08, 0]), True),
        (bytes([0x48, 0]), False),
        (bytes([0x00, 0]), False),
        (bytes([0x28, 0x02]), False),
    ],
)
def test_vp9_key_frame_detection(payload: bytes, key: bool) -> None:
    data = packet(payload)
    assert rtp.is_vp9_key_frame(data, 12, len(data)) is key


def test_extension_ids_are_remapped_and_unknown_ones_blanked_in_place() -> None:
    # publisher: mid=4 ("0"), abs-send-time=9 (3 bytes), transport-cc=5 (2 bytes, not forwarded)
    ext = bytes([0x40, ord("0"), 0x92, 1, 2, 3, 0x51, 7, 7])
    data = bytearray(packet(b"payload", ext=ext))
    id_map, identity = rtp.build_extension_id_map({rtp.URI_MID: 4, rtp.URI_ABS_SEND_TIME: 9, "tcc": 5})
    assert not identity
    start, end, profile, ext_end = rtp.payload_bounds(data, data[0])
    rtp.rewrite_extension_ids(data, 16, ext_end, profile, id_map)
    assert bytes(data[16:25]) == bytes([0x10, ord("0"), 0x32, 1, 2, 3, 0, 0, 0])
    assert bytes(data[start:end]) == b"payload"
    assert rtp.find_extension(data, 16, ext_end, profile, 1) == b"0"
    assert rtp.find_extension(data, 16, ext_end, profile, 3) == b"\x01\x02\x03"


def test_identity_map_for_aiortc_ids() -> None:
    assert rtp.build_extension_id_map({rtp.URI_MID: 1, rtp.URI_ABS_SEND_TIME: 3})[1]


def test_payload_bounds_skip_csrcs_extension_and_padding() -> None:
    data = bytearray(packet(b"abc\x00\x00\x03", ext=b"\x10\x01"))
    data[0] |= 0x20  # padding: last byte says 3
    assert rtp.payload_bounds(data, data[0])[:2] == (20, 23)
