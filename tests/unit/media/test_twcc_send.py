"""The send side of transport-wide CC: stamping packets, the send history, and what the SDP negotiates."""

from __future__ import annotations

import struct

import pytest
from aiortc.rtcrtpparameters import RTCRtpHeaderExtensionParameters, RTCRtpParameters
from aiortc.rtp import HeaderExtensionsMap, RtpPacket

from sfu.media.rtp import URI_ABS_SEND_TIME, URI_AUDIO_LEVEL, payload_bounds
from sfu.media.sdp import OfferedSlot, congestion_control_ids, munge_subscriber_offer, parse
from sfu.media.twcc import (
    HISTORY_SIZE,
    TRANSPORT_CC_ID,
    URI_TRANSPORT_CC,
    SendHistory,
    TransportCc,
    abs_send_time,
    stamp,
)

PAYLOAD = b"\x10payload!"


def packet(extension: bytes = b"", csrcs: int = 0, padding: int = 0) -> bytearray:
    b0 = 0x80 | (0x10 if extension else 0) | csrcs | (0x20 if padding else 0)
    head = struct.pack("!BBHII", b0, 96, 7, 1234, 0xABC) + bytes(4 * csrcs)
    tail = bytes(padding - 1) + bytes((padding,)) if padding else b""
    return bytearray(head + extension + PAYLOAD + tail)


def one_byte(*elements: tuple[int, bytes]) -> bytes:
    body = b"".join(bytes([(i << 4) | (len(v) - 1)]) + v for i, v in elements)
    body += bytes(-len(body) % 4)
    return struct.pack("!HH", 0xBEDE, len(body) // 4) + body


def parsed(buf: bytearray) -> RtpPacket:
    ext_map = HeaderExtensionsMap()
    params = RTCRtpParameters(
        headerExtensions=[
            RTCRtpHeaderExtensionParameters(id=2, uri=URI_AUDIO_LEVEL),
            RTCRtpHeaderExtensionParameters(id=3, uri=URI_ABS_SEND_TIME),
            RTCRtpHeaderExtensionParameters(id=TRANSPORT_CC_ID, uri=URI_TRANSPORT_CC),
        ]
    )
    ext_map.configure(params)
    return RtpPacket.parse(bytes(buf), ext_map)


@pytest.mark.parametrize(
    ("name", "buf"),
    [
        ("no extension block", packet()),
        ("CSRCs and padding", packet(csrcs=2, padding=7)),
        ("a block with other elements", packet(one_byte((2, b"\x85"), (4, b"\x00\x00\x01")))),
        (
            "the publisher's abs-send-time is overwritten",
            packet(one_byte((3, b"\x11\x22\x33"), (2, b"\x85"))),
        ),
        ("an old transport seq is overwritten", packet(one_byte((TRANSPORT_CC_ID, b"\xff\xff")))),
    ],
)
def test_stamp_writes_both_elements_and_keeps_the_rest(name: str, buf: bytearray) -> None:
    before = bytes(buf)
    b0 = before[0]
    start, end, _profile, _ext_end = payload_bounds(before, b0)
    stamp(buf, 3, 0x123456, TRANSPORT_CC_ID, 0xBEEF)
    p = parsed(buf)
    assert p.extensions.abs_send_time == 0x123456, name
    assert p.extensions.transport_sequence_number == 0xBEEF, name
    assert p.payload == before[start:end] and p.padding_size == (before[-1] if b0 & 0x20 else 0), name
    assert (p.sequence_number, p.timestamp, p.ssrc, p.csrc) == (7, 1234, 0xABC, [0] * (b0 & 0x0F)), name
    if b"\x85" in before[12:start]:
        assert p.extensions.audio_level == (True, 5), name  # id 2 untouched


def test_stamp_only_what_was_negotiated() -> None:
    buf = packet()
    stamp(buf, 3, 0x654321, 0, 0)
    assert len(buf) == len(packet()) + 8
    p = parsed(buf)
    assert p.extensions.abs_send_time == 0x654321 and p.extensions.transport_sequence_number is None
    buf = packet()
    stamp(buf, 0, 0, TRANSPORT_CC_ID, 5)
    assert parsed(buf).extensions.transport_sequence_number == 5 and len(buf) == len(packet()) + 8


def test_abs_send_time_is_6_18_fixed_point_seconds_wrapping_at_64() -> None:
    assert abs_send_time(1_000_000_000) == 1 << 18
    assert abs_send_time(64_500_000_000) == (1 << 17)


def test_send_history_wraps_16_bit_seqs_and_joins_feedback() -> None:
    history = SendHistory()
    history.next_seq = 0xFFFE  # about to wrap on the wire
    wire = [history.record(100 + k, 1000 * k) for k in range(4)]
    assert wire == [0xFFFE, 0xFFFF, 0, 1]
    fb = TransportCc(1, 2, 0xFFFF, 10, 0, (250, None, 500))
    assert history.packet_results(fb) == [
        (1000, 10 * 64_000 + 250, 101),
        (2000, -1, 102),
        (3000, 10 * 64_000 + 750, 103),
    ]
    # seqs the history no longer holds (or never sent) are skipped, not misread
    for k in range(HISTORY_SIZE):
        history.record(1, k)
    assert history.packet_results(fb) == []
    assert history.sent_bytes == 100 + 101 + 102 + 103 + HISTORY_SIZE


OFFER = """v=0\r
o=- 1 1 IN IP4 0.0.0.0\r
s=-\r
t=0 0\r
m=audio 9 UDP/TLS/RTP/SAVPF 111\r
a=mid:0\r
a=sendonly\r
a=msid:a b\r
a=rtpmap:111 opus/48000/2\r
m=video 9 UDP/TLS/RTP/SAVPF 97 98\r
a=mid:1\r
a=sendonly\r
a=msid:a c\r
a=rtpmap:97 VP8/90000\r
a=rtcp-fb:97 nack\r
a=rtcp-fb:97 goog-remb\r
a=rtpmap:98 rtx/90000\r
a=fmtp:98 apt=97\r
"""


def test_the_subscriber_offer_has_transport_cc_and_the_answer_says_what_was_accepted() -> None:
    slots = {"0": OfferedSlot("audio", "s", "t0"), "1": OfferedSlot("video", "s", "t1")}
    offer = munge_subscriber_offer(OFFER, slots)
    audio, video = parse(offer)
    for section in (audio, video):
        assert section.extmap[URI_TRANSPORT_CC] == TRANSPORT_CC_ID
    assert "a=rtcp-fb:111 transport-cc" in offer and "a=rtcp-fb:97 transport-cc" in offer
    assert "a=rtcp-fb:98 transport-cc" not in offer  # not on RTX
    assert offer.index("a=rtcp-fb:97 transport-cc") > offer.index("a=rtpmap:97 ")
    # Chrome's answer keeps both; aiortc's keeps abs-send-time only (it has no transport-cc)
    assert congestion_control_ids(offer) == (3, TRANSPORT_CC_ID)
    no_feedback = offer.replace(" transport-cc\r\n", " nack\r\n")
    assert congestion_control_ids(no_feedback) == (3, 0)
    aiortc_like = "\r\n".join(
        x for x in offer.split("\r\n") if "transport-cc" not in x and URI_TRANSPORT_CC not in x
    )
    assert congestion_control_ids(aiortc_like) == (3, 0)
